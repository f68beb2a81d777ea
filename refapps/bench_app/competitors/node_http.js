// The bench routes on Node's http module (no dependencies). Usage: node node_http.js PORT [HOST]
const http = require('http');
const port = parseInt(process.argv[2], 10);
const host = process.argv[3] || '127.0.0.1';
const PLAIN = Buffer.from('Hello, World!');
const JSONB = Buffer.from('{"message":"Hello, World!"}');
http.createServer((req, res) => {
  const url = req.url;
  if (req.method === 'GET' && url === '/plaintext') {
    res.writeHead(200, {'Content-Type': 'text/plain', 'Content-Length': PLAIN.length}); res.end(PLAIN);
  } else if (req.method === 'GET' && url === '/json') {
    res.writeHead(200, {'Content-Type': 'application/json', 'Content-Length': JSONB.length}); res.end(JSONB);
  } else if (req.method === 'GET' && /^\/users\/\d+$/.test(url)) {
    const id = parseInt(url.slice(7), 10);
    const b = Buffer.from(JSON.stringify({id: id, name: 'user-' + url.slice(7)}));
    res.writeHead(200, {'Content-Type': 'application/json', 'Content-Length': b.length}); res.end(b);
  } else if (req.method === 'POST' && url === '/echo-body') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => { const b = Buffer.concat(chunks);
      res.writeHead(200, {'Content-Type': 'application/octet-stream', 'Content-Length': b.length}); res.end(b); });
  } else if (req.method === 'GET' && url === '/events') {
    res.writeHead(200, {'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache'});
    const t = setInterval(() => res.write('data: {"ts": ' + (Date.now() / 1000).toFixed(6) + '}\n\n'), 10);
    req.on('close', () => clearInterval(t));
  } else if (url === '/healthz') {
    res.writeHead(200, {'Content-Type': 'text/plain', 'Content-Length': 2}); res.end('ok');
  } else {
    res.writeHead(404, {'Content-Length': 0}); res.end();
  }
}).listen(port, host);
