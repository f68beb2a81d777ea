#!/usr/bin/env python3
"""A strict asyncio HTTP/1.1 + WebSocket + SSE test server, with optional PLANTED bugs.

Usage::

    python tests/servers/t1server.py --port 0 [--bug NAME ...] [--list-bugs]

Prints ``ready addr=127.0.0.1:PORT`` on stdout once it listens. Standard
library only and independent of probatorium (it must not share the
validator's reading of the RFCs): written from RFC 9112 / 9110 (HTTP/1.1),
RFC 6455 (WebSocket), the WHATWG SSE format and RFC 7540 §3.2 (h2c).

Routes (see t1server.openapi.yaml)
----------------------------------
* ``GET /healthz`` → ``ok``.
* ``GET /debug/vars`` → JSON ``sse_open``, ``ws_open``, ``tasks`` (asyncio
  tasks), ``requests`` (final responses sent): the SPEC §3 debug contract.
* ``/echo`` (any method) → JSON ``method``, ``target``, ``http_version``,
  ``headers``, ``body_length``, ``body_sha256`` of what was received.
* ``GET /items/{id}`` → a small JSON document; ``GET /report`` → a text report.
* ``GET /ws`` → RFC 6455 echo server: strict opening handshake (§4.2.1:
  GET, HTTP/1.1, Upgrade websocket, Connection upgrade, a key that is the
  base64 of 16 bytes, version 13 else 426 + ``Sec-WebSocket-Version: 13``);
  strict frames (§5.1 masking, §5.2 RSV and opcodes, §5.4 fragmentation,
  §5.5 control frames, §8.1 UTF-8 incl. close reasons, §7.4 close codes,
  messages above 1 MiB → 1009); ping → pong; the close handshake is
  answered and the TCP connection closed by the server (§7.1.1).
* ``GET /events`` → an SSE stream, one event every 100 ms; the slot
  (``sse_open``) is released as soon as the client is gone.
* ``Upgrade: h2c`` is ignored (RFC 7540 §3.2 lets a server decline): the
  request is answered over HTTP/1.1 and its body read by its framing.

Strict HTTP/1.1 parsing: request-line and field-line grammar with CRLF only
(RFC 9112 §2.2, §3, §5), exactly one valid Host on 1.1 (§3.2), Content-Length
1*DIGIT and consistent (RFC 9110 §8.6), Transfer-Encoding ``chunked`` last
and never with Content-Length (RFC 9112 §6.1, §6.3), strict chunked bodies
(§7.1), Expect 100-continue (RFC 9110 §10.1.1); every error response closes
the connection. Limits: head 16 KiB, body 1 MiB.

Planted bugs (``--bug NAME``): see BUGS below.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import codecs
import hashlib
import json
import os
import re
import signal
import struct
import sys
from email.utils import formatdate

BUGS = {
    "ws-accept-bad-frame": "WebSocket: RSV bits, unknown opcodes and UTF-8 are not checked; bad frames are "
                           "echoed (I-WS-ACCEPTED)",
    "ws-accept-unmasked": "WebSocket: unmasked client frames are accepted and echoed (I-WS-ACCEPTED)",
    "ws-ignore-bad-frame": "WebSocket: frames with RSV bits or reserved opcodes are silently skipped and the "
                           "connection goes on (I-WS-ACCEPTED)",
    "ws-hang-close": "WebSocket: on a protocol error or the client's close frame the server never sends a close "
                     "frame and never closes TCP (I-WS-HANG)",
    "ws-hang-on-close": "WebSocket: the close handshake is answered but the TCP connection is never closed "
                        "(RFC 6455 §5.5.1 MUST; I-WS-HANG)",
    "sse-leak": "SSE: when the client resets the stream, the slot (sse_open) is never released (I-CONN-2)",
    "sse-leak-fin": "SSE: a client that closes cleanly (FIN) leaves its slot taken (I-CONN-2)",
    "h2c-crash": "the process exits on any request carrying Upgrade: h2c (I-H2C-CRASHED / I-LIVENESS)",
    "h2c-crash-settings": "the process exits when HTTP2-Settings is not valid base64url SETTINGS (I-H2C-CRASHED)",
    "h2c-crash-body": "the process exits on an h2c upgrade request with a body (I-H2C-CRASHED)",
    "h2c-crash-late": "the process exits 50 ms AFTER answering an h2c upgrade request (I-LIVENESS)",
    "leak-mem": "keeps 128 KiB per request forever (RSS leak: I-MEM-1)",
    "leak-fd": "opens a file per request and never closes it (fd leak: I-FD-1)",
    "crash-path": "the process exits on GET /report, a path its OpenAPI lists (I-LIVENESS)",
}

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TARGET = re.compile(rb"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*(\?[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*)?")
PCT_BAD = re.compile(rb"%(?![0-9A-Fa-f]{2})")
HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(:[0-9]{0,5})?")
CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
HEXDIG = re.compile(rb"[0-9A-Fa-f]{1,16}")
CHUNK_EXT = re.compile(rb'(?:[ \t]*;[ \t]*[!#$%&\'*+\-.^_`|~0-9A-Za-z]+'
                       rb'(?:[ \t]*=[ \t]*(?:[!#$%&\'*+\-.^_`|~0-9A-Za-z]+|"(?:[^"\\\r\n]|\\.)*"))?)*')
REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 204: "No Content", 400: "Bad Request",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
           414: "URI Too Long", 417: "Expectation Failed", 426: "Upgrade Required",
           431: "Request Header Fields Too Large", 501: "Not Implemented", 505: "HTTP Version Not Supported"}
MAX_LINE = 8 << 10
MAX_HEAD = 16 << 10
MAX_FIELDS = 100
MAX_BODY = 1 << 20
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_MAX_MESSAGE = 1 << 20
WS_CLOSE_OK = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))  # RFC 6455 §7.4
HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 15.0

_LEAKED: list = []  # what the leak-* bugs never give back


class HttpError(Exception):
    """A request that must be refused with `status` (the connection is then closed)."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(detail)
        self.status = status


class Request:
    def __init__(self, method: bytes, target: bytes, version: tuple[int, int]) -> None:
        self.method, self.target, self.version = method, target, version
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.path = target.split(b"?", 1)[0]
        self.keep_alive = version == (1, 1)
        self.chunked = False
        self.length = 0
        self.continue_wanted = False

    def values(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name]

    def tokens(self, name: bytes) -> list[bytes]:
        return [t.strip().lower() for v in self.values(name) for t in v.split(b",") if t.strip()]


class Server:
    def __init__(self, bugs: frozenset[str]) -> None:
        self.bugs = bugs
        self.sse_open = 0
        self.ws_open = 0
        self.requests = 0
        self.conns: set[asyncio.Task] = set()
        self.stopping = False

    # ------------------------------------------------------------------ connection
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.conns.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self.conns.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not self.stopping:
            try:
                req = await self._read_request(reader, writer)
            except HttpError as e:
                await self._send_error(writer, e.status)
                return
            if req is None:
                return
            if self.stopping:
                req.keep_alive = False
            if not await self._route(req, reader, writer):
                return
            if "h2c-crash-late" in self.bugs and b"h2c" in req.tokens(b"upgrade"):
                # planted: a background "HTTP/2 session" started for the upgrade blows up later
                asyncio.get_running_loop().call_later(0.05, os._exit, 74)
            if not req.keep_alive:
                return

    # ------------------------------------------------------------------ parsing
    async def _read_line(self, reader: asyncio.StreamReader, limit: int, status: int, prefix: bytes = b"") -> bytes:
        try:
            line = prefix if prefix.endswith(b"\n") else prefix + await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise HttpError(status, "line too long")
        except asyncio.IncompleteReadError as e:
            if e.partial or prefix:
                raise HttpError(400, "incomplete line")
            raise
        if len(line) > limit:
            raise HttpError(status, "line too long")
        if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
            raise HttpError(400, "line not ended by CRLF, or a bare CR")  # RFC 9112 §2.2 (strict)
        return line[:-2]

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
        try:
            first = await asyncio.wait_for(reader.read(1), IDLE_TIMEOUT)
        except asyncio.TimeoutError:
            return None
        if not first:
            return None
        # The head (request-line + fields) must arrive within HEADER_TIMEOUT of its first byte.
        try:
            return await asyncio.wait_for(self._read_head(reader, writer, first), HEADER_TIMEOUT)
        except asyncio.TimeoutError:
            raise HttpError(408, "head timeout")
        except asyncio.IncompleteReadError:
            return None

    async def _read_head(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes) -> Request:
        line = await self._read_line(reader, MAX_LINE, 414, first)
        for _ in range(4):  # RFC 9112 §2.2: empty lines before the request-line are ignored
            if line:
                break
            line = await self._read_line(reader, MAX_LINE, 414)
        req = self._request_line(line)
        total = len(line)
        while True:
            fl = await self._read_line(reader, MAX_HEAD, 431)
            if not fl:
                break
            total += len(fl) + 2
            if total > MAX_HEAD or len(req.headers) >= MAX_FIELDS:
                raise HttpError(431, "head too large")
            if fl[:1] in (b" ", b"\t"):
                raise HttpError(400, "obs-fold")  # RFC 9112 §5.2
            name, colon, value = fl.partition(b":")
            if not colon or not TOKEN.fullmatch(name):
                raise HttpError(400, "bad field name")  # includes whitespace before the colon (§5.1)
            value = value.strip(b" \t")
            if CTL.search(value):
                raise HttpError(400, "CTL in field value")  # RFC 9110 §5.5
            req.headers.append((name, value))
        self._prepare(req)
        await self._read_body(req, reader, writer)
        return req

    def _request_line(self, line: bytes) -> Request:
        parts = line.split(b" ")
        if len(parts) != 3:
            raise HttpError(400, "request-line")
        method, target, version = parts
        if not TOKEN.fullmatch(method):
            raise HttpError(400, "method")
        m = re.fullmatch(rb"HTTP/([0-9])\.([0-9])", version)
        if m is None:
            raise HttpError(400, "version")
        ver = (int(m.group(1)), int(m.group(2)))
        if ver not in ((1, 0), (1, 1)):
            raise HttpError(505, "version")
        origin = target
        m = re.fullmatch(rb"(?i:https?)://([^/?#]*)(.*)", target)
        if m is not None:  # absolute-form (RFC 9112 §3.2.2): a server MUST accept it; routed by its path
            authority, origin = m.group(1), m.group(2) or b"/"
            if origin.startswith(b"?"):
                origin = b"/" + origin
            if not authority or b"@" in authority or HOST.fullmatch(authority) is None:
                raise HttpError(400, "absolute-form authority")
        if target == b"*":
            if method != b"OPTIONS":
                raise HttpError(400, "asterisk-form")
        elif not TARGET.fullmatch(origin) or PCT_BAD.search(origin):
            raise HttpError(400, "request-target")
        req = Request(method, target, ver)
        req.path = origin.split(b"?", 1)[0]
        return req

    def _prepare(self, req: Request) -> None:
        hosts = req.values(b"host")
        if len(hosts) > 1 or (req.version == (1, 1) and not hosts):
            raise HttpError(400, "Host")
        if hosts:
            hm = HOST.fullmatch(hosts[0])
            port = hm.group(2) if hm is not None else None
            if hm is None or (port and (len(port) < 2 or int(port[1:]) > 65535)):
                raise HttpError(400, "Host value")  # RFC 9112 §3.2: uri-host [ ":" port ], no userinfo
        conn = req.tokens(b"connection")
        if b"close" in conn:
            req.keep_alive = False
        elif req.version == (1, 0):
            req.keep_alive = b"keep-alive" in conn
        te = req.values(b"transfer-encoding")
        cl = req.values(b"content-length")
        if te:
            if cl or req.version == (1, 0):
                raise HttpError(400, "Transfer-Encoding with Content-Length, or on HTTP/1.0")
            codings = req.tokens(b"transfer-encoding")
            if not codings or any(not c for c in codings):
                raise HttpError(400, "Transfer-Encoding")
            if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
                if all(TOKEN.fullmatch(c) for c in codings) and b"chunked" not in codings:
                    raise HttpError(501, "unknown coding")
                raise HttpError(400, "chunked not last")
            if len(codings) > 1:
                raise HttpError(501, "coding before chunked")
            req.chunked = True
        elif cl:
            members = [m.strip(b" \t") for v in cl for m in v.split(b",")]
            if any(not m.isdigit() or not m.isascii() for m in members) or len(set(members)) != 1:
                raise HttpError(400, "Content-Length")
            n = int(members[0])
            if n > MAX_BODY:
                raise HttpError(413, "body too large")
            req.length = n
        expect = req.values(b"expect")
        if expect and req.version == (1, 1):
            if [e.lower() for e in expect] != [b"100-continue"]:
                raise HttpError(417, "Expect")
            req.continue_wanted = True
        if "h2c-crash" in self.bugs and b"h2c" in req.tokens(b"upgrade"):
            os._exit(71)  # planted: "HTTP/2 upgrade path not finished", the worker dies
        if "h2c-crash-settings" in self.bugs and b"h2c" in req.tokens(b"upgrade"):
            for v in req.values(b"http2-settings"):
                try:
                    raw = base64.b64decode(v + b"=" * (-len(v) % 4), altchars=b"-_", validate=True)
                except binascii.Error:
                    os._exit(72)  # planted: an unhandled decode error in the upgrade path kills the process
                if len(raw) % 6:
                    os._exit(72)

    async def _read_body(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not req.chunked and not req.length:
            return
        if "h2c-crash-body" in self.bugs and b"h2c" in req.tokens(b"upgrade"):
            os._exit(73)  # planted: the upgrade code path cannot cope with a request body
        if req.continue_wanted:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        try:
            if req.chunked:
                req.body = await asyncio.wait_for(self._read_chunked(reader), IDLE_TIMEOUT)
            else:
                req.body = await asyncio.wait_for(reader.readexactly(req.length), IDLE_TIMEOUT)
        except asyncio.TimeoutError:
            raise HttpError(408, "body timeout")
        except asyncio.IncompleteReadError:
            raise HttpError(400, "body cut short")

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            line = await self._read_line(reader, 4096, 400)
            m = HEXDIG.match(line)
            if m is None or not CHUNK_EXT.fullmatch(line[m.end():]):
                raise HttpError(400, "chunk-size line")  # RFC 9112 §7.1, §7.1.1
            size = int(m.group(0), 16)
            if len(body) + size > MAX_BODY:
                raise HttpError(413, "body too large")
            if size == 0:
                break
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise HttpError(400, "chunk-data not followed by CRLF")
        while True:  # trailer section (§7.1.2), parsed and discarded
            fl = await self._read_line(reader, MAX_HEAD, 400)
            if not fl:
                return bytes(body)
            name, colon, value = fl.partition(b":")
            if not colon or not TOKEN.fullmatch(name) or CTL.search(value.strip(b" \t")):
                raise HttpError(400, "trailer field")

    # ------------------------------------------------------------------ responses
    def _head(self, status: int, headers: list[tuple[str, str]], keep_alive: bool, version=(1, 1)) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"Date: {formatdate(usegmt=True)}",
                 "Server: t1server"]
        lines += [f"{k}: {v}" for k, v in headers]
        if not keep_alive:
            lines.append("Connection: close")
        elif version == (1, 0):
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send(self, writer: asyncio.StreamWriter, req: Request, status: int, body: bytes = b"",
                    ctype: str = "text/plain", extra: list[tuple[str, str]] | None = None) -> None:
        headers = [*(extra or [])]
        if status not in (204, 304):
            headers += [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        else:
            body = b""
        if req.method == b"HEAD":
            body = b""
        writer.write(self._head(status, headers, req.keep_alive, req.version) + body)
        await writer.drain()
        self.requests += 1

    async def _send_error(self, writer: asyncio.StreamWriter, status: int) -> None:
        body = f"{status} {REASONS.get(status, 'Error')}\n".encode()
        head = self._head(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))], False)
        try:
            writer.write(head + body)
            await writer.drain()
            self.requests += 1
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass

    # ------------------------------------------------------------------ routes
    async def _route(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must end."""
        if "leak-mem" in self.bugs:
            _LEAKED.append(bytearray(os.urandom(64)) * 2048)  # 128 KiB of touched pages per request
        if "leak-fd" in self.bugs:
            _LEAKED.append(open(os.devnull, "rb"))
        path, method = req.path, req.method
        if path == b"/report" and method == b"GET" and "crash-path" in self.bugs:
            os._exit(70)  # planted: a report generator that takes the process down
        if req.target == b"*":
            await self._send(writer, req, 200, extra=[("Allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS")])
            return True
        if path == b"/echo":
            doc = {"method": method.decode(), "target": req.target.decode("latin-1"),
                   "http_version": f"HTTP/{req.version[0]}.{req.version[1]}",
                   "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in req.headers],
                   "body_length": len(req.body), "body_sha256": hashlib.sha256(req.body).hexdigest()}
            await self._send(writer, req, 200, json.dumps(doc).encode(), "application/json")
            return True
        get_only = {b"/healthz", b"/debug/vars", b"/ws", b"/events", b"/report"}
        is_item = re.fullmatch(rb"/items/[0-9]{1,9}", path) is not None
        if path in get_only or is_item:
            if method not in (b"GET", b"HEAD"):
                await self._send(writer, req, 405, b"method not allowed\n", extra=[("Allow", "GET, HEAD")])
                return True
        else:
            await self._send(writer, req, 404, b"not found\n")
            return True
        if path == b"/healthz":
            await self._send(writer, req, 200, b"ok")
        elif path == b"/debug/vars":
            doc = {"sse_open": self.sse_open, "ws_open": self.ws_open, "tasks": len(asyncio.all_tasks()),
                   "requests": self.requests}
            await self._send(writer, req, 200, json.dumps(doc).encode(), "application/json")
        elif is_item:
            n = int(path.rsplit(b"/", 1)[1])
            await self._send(writer, req, 200, json.dumps({"id": n, "name": f"item {n}"}).encode(),
                             "application/json")
        elif path == b"/report":
            await self._send(writer, req, 200, b"report: all systems nominal\n")
        elif path == b"/ws":
            return await self._websocket(req, reader, writer)
        elif path == b"/events":
            return await self._events(req, reader, writer)
        return True

    # ------------------------------------------------------------------ SSE
    async def _events(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        chunked = req.version == (1, 1)
        headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        writer.write(self._head(200, headers, False))  # the stream ends the connection
        self.requests += 1
        if req.method == b"HEAD":
            await writer.drain()
            return False
        self.sse_open += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.sse_open -= 1

        gone = asyncio.ensure_future(reader.read(1))  # any input or EOF: the client went away
        n = 0
        try:
            while not self.stopping:
                n += 1
                event = f"id: {n}\ndata: tick {n}\n\n".encode()
                writer.write(b"%x\r\n%s\r\n" % (len(event), event) if chunked else event)
                await writer.drain()
                done, _ = await asyncio.wait({gone}, timeout=0.1)
                if done:
                    if gone.exception() is not None:
                        raise gone.exception()  # type: ignore[misc]
                    if "sse-leak-fin" in self.bugs:
                        return False  # planted: the clean-EOF path forgets the slot
                    break
            if chunked and self.stopping:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            release()
        except (ConnectionError, OSError):
            if "sse-leak" not in self.bugs:
                release()  # planted sse-leak: the reset path forgets the slot
            raise
        finally:
            gone.cancel()
            if "sse-leak" not in self.bugs and "sse-leak-fin" not in self.bugs:
                release()
        return False

    # ------------------------------------------------------------------ WebSocket
    async def _websocket(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        upgrade = req.tokens(b"upgrade")
        if b"websocket" not in upgrade or b"upgrade" not in req.tokens(b"connection"):
            await self._send(writer, req, 426, b"WebSocket upgrade required\n",
                             extra=[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")])
            return True
        if req.method != b"GET" or req.version != (1, 1):  # RFC 6455 §4.2.1 items 1-2
            req.keep_alive = False
            await self._send(writer, req, 400, b"bad WebSocket handshake\n")
            return False
        versions = req.values(b"sec-websocket-version")
        if versions != [b"13"]:
            req.keep_alive = False
            await self._send(writer, req, 426, b"unsupported WebSocket version\n",
                             extra=[("Sec-WebSocket-Version", "13")])  # RFC 6455 §4.4
            return False
        keys = req.values(b"sec-websocket-key")
        try:
            ok = len(keys) == 1 and len(base64.b64decode(keys[0], validate=True)) == 16
        except binascii.Error:
            ok = False
        if not ok:
            req.keep_alive = False
            await self._send(writer, req, 400, b"bad Sec-WebSocket-Key\n")  # RFC 6455 §4.2.1 item 5
            return False
        accept = base64.b64encode(hashlib.sha1(keys[0] + WS_GUID).digest()).decode()
        writer.write(self._head(101, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                      ("Sec-WebSocket-Accept", accept)], True))
        await writer.drain()
        self.requests += 1
        self.ws_open += 1
        try:
            await WsSession(self, reader, writer).run()
        finally:
            self.ws_open -= 1
        return False


class WsProtocolError(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class WsSession:
    """One RFC 6455 server session after the 101: echo, pings, close handshake."""

    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server, self.reader, self.writer = server, reader, writer
        self.bugs = server.bugs
        self.msg_op: int | None = None
        self.msg = bytearray()
        self.utf8 = codecs.getincrementaldecoder("utf-8")()

    def frame(self, opcode: int, payload: bytes = b"") -> bytes:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        return head + payload

    async def send(self, opcode: int, payload: bytes = b"") -> None:
        self.writer.write(self.frame(opcode, payload))
        await self.writer.drain()

    async def read_frame(self) -> tuple[bool, int, int, bool, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        fin, rsv, opcode, masked, n = bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F
        lax = "ws-accept-bad-frame" in self.bugs
        if rsv and not lax and "ws-ignore-bad-frame" not in self.bugs:
            raise WsProtocolError(1002, "RSV bit set without an extension")  # §5.2
        if opcode not in (0, 1, 2, 8, 9, 10) and not lax and "ws-ignore-bad-frame" not in self.bugs:
            raise WsProtocolError(1002, "reserved opcode")  # §5.2
        if not masked and "ws-accept-unmasked" not in self.bugs and not lax:
            raise WsProtocolError(1002, "unmasked client frame")  # §5.1
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            if n >> 63:
                raise WsProtocolError(1002, "64-bit length with the top bit set")  # §5.2
        if opcode >= 8 and (not fin or n > 125):
            raise WsProtocolError(1002, "fragmented or oversized control frame")  # §5.5
        if n + (len(self.msg) if opcode == 0 else 0) > WS_MAX_MESSAGE:
            raise WsProtocolError(1009, "message too big")  # §7.4.1
        key = await self.reader.readexactly(4) if masked else b""
        data = await self.reader.readexactly(n)
        if masked and n:
            k = (key * (n // 4 + 1))[:n]
            data = (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")
        if rsv or opcode not in (0, 1, 2, 8, 9, 10):
            if "ws-ignore-bad-frame" in self.bugs:
                return fin, -1, 0, masked, data  # planted: skipped as if nothing happened
            opcode = 1 if opcode not in (0, 1, 2, 8, 9, 10) else opcode  # planted lax: treated as text
        return fin, opcode, rsv, masked, data

    async def run(self) -> None:
        try:
            await self._loop()
        except WsProtocolError as e:
            await self.fail(e.code)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return

    async def hang(self) -> None:
        """Planted ws-hang-close: neither a close frame nor the end of TCP; the input is ignored."""
        while await self.reader.read(65536):
            pass
        await asyncio.sleep(3600)

    async def fail(self, code: int) -> None:
        """Fail the WebSocket connection (§7.1.7): a close frame with the code, end our side of
        TCP, and discard what the client still sends (bounded) so the close is not lost to a reset."""
        if "ws-hang-close" in self.bugs:
            await self.hang()
            return
        try:
            await self.send(8, struct.pack("!H", code))
            if "ws-hang-on-close" in self.bugs:
                await self.hang()
            if self.writer.can_write_eof():
                self.writer.write_eof()
            loop = asyncio.get_running_loop()
            end = loop.time() + 1.0
            while loop.time() < end:
                try:
                    if not await asyncio.wait_for(self.reader.read(1 << 16), end - loop.time()):
                        return
                except asyncio.TimeoutError:
                    return
        except (ConnectionError, OSError):
            pass

    async def _loop(self) -> None:
        while True:
            fin, opcode, rsv, masked, data = await self.read_frame()
            if opcode == -1:
                continue
            if opcode == 8:
                await self.on_close(data)
                return
            if opcode == 9:
                await self.send(10, data)
                continue
            if opcode == 10:
                continue
            if opcode == 0:
                if self.msg_op is None:
                    raise WsProtocolError(1002, "continuation without a message")  # §5.4
            else:
                if self.msg_op is not None:
                    raise WsProtocolError(1002, "new data frame inside a fragmented message")  # §5.4
                self.msg_op = opcode
                self.utf8.reset()
                self.msg = bytearray()
            self.msg += data
            if self.msg_op == 1 and "ws-accept-bad-frame" not in self.bugs:
                try:
                    self.utf8.decode(data, final=fin)
                except UnicodeDecodeError:
                    raise WsProtocolError(1007, "invalid UTF-8")  # §8.1, failing fast
            if fin:
                await self.send(self.msg_op, bytes(self.msg))
                self.msg_op, self.msg = None, bytearray()

    async def on_close(self, payload: bytes) -> None:
        if "ws-hang-close" in self.bugs:
            await self.hang()
            return
        if len(payload) == 1:
            raise WsProtocolError(1002, "close payload of 1 byte")  # §5.5.1
        if len(payload) >= 2:
            code = struct.unpack("!H", payload[:2])[0]
            if code not in WS_CLOSE_OK:
                raise WsProtocolError(1002, f"invalid close code {code}")  # §7.4.1, §7.4.2
            try:
                payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise WsProtocolError(1007, "close reason not UTF-8")  # §5.5.1, §8.1
            reply = struct.pack("!H", code)
        else:
            reply = b""
        await self.send(8, reply)
        if "ws-hang-on-close" in self.bugs:
            await self.hang()
        # Both close frames exchanged: the server closes TCP (the caller's finally).


async def serve(host: str, port: int, bugs: frozenset[str]) -> None:
    srv = Server(bugs)
    server = await asyncio.start_server(srv.handle, host, port, limit=MAX_LINE * 2, backlog=512)
    bound = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def stop() -> None:
        srv.stopping = True
        done.set()

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    print(f"ready addr={host}:{bound}", flush=True)
    print(f"t1server listening on {host}:{bound} bugs={','.join(sorted(bugs)) or 'none'}", file=sys.stderr,
          flush=True)
    await done.wait()
    server.close()  # graceful: no new connections; in-flight requests finish, SSE/WS end
    for t in list(srv.conns):
        t.cancel()
    if srv.conns:
        await asyncio.wait(list(srv.conns), timeout=5.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Strict asyncio HTTP/1.1 + WebSocket + SSE test server.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--bug", action="append", default=[], metavar="NAME", help="plant a bug (repeatable)")
    p.add_argument("--list-bugs", action="store_true")
    args = p.parse_args(argv)
    if args.list_bugs:
        for name, text in BUGS.items():
            print(f"{name}: {text}")
        return 0
    names = frozenset(n.strip() for b in args.bug for n in b.split(",") if n.strip())
    unknown = sorted(names - set(BUGS))
    if unknown:
        p.error(f"unknown bug(s): {', '.join(unknown)}")
    asyncio.run(serve(args.host, args.port, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
