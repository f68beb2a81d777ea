"""The app `probatorium bisect` serves when no --refapp/--app is given: raw ASGI, standard library
only, so that any release of any engine can serve it. It offers the echo and health contracts
(docs/contracts.md): GET/POST /echo... answers a JSON record of what the application received
(method, target, headers, body length and SHA-256), /healthz answers "ok", anything else 404.
"""

import hashlib
import json


async def _lifespan(receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    """Echo what reached the application; the adversarial verdicts read this record."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    path = scope["path"]
    status, ctype = 200, b"application/json"
    if path == "/echo" or path.startswith("/echo/"):
        target = (scope.get("raw_path") or path.encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        out = json.dumps({
            "method": scope["method"], "target": target, "http_version": scope.get("http_version", ""),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
        }).encode()
    elif path == "/healthz":
        out, ctype = b"ok", b"text/plain"
    else:
        status, out, ctype = 404, b"not found", b"text/plain"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
