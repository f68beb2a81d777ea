"""A minimal raw ASGI app offering the echo, health and debug contracts (SPEC.md §3), for tests.

ECHO_APP_BUG=first-message-only plants an application bug (not the engine's): the echo reads
only the first http.request message of a body, the classic `(await receive())["body"]`, so a
body the engine delivers in several messages (sent slowly) is reported truncated.
"""

import asyncio
import hashlib
import json
import os

REQUESTS = 0
FIRST_MESSAGE_ONLY = os.environ.get("ECHO_APP_BUG", "") == "first-message-only"


async def app(scope, receive, send):
    global REQUESTS
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    REQUESTS += 1
    body = b""
    while True:
        msg = await receive()
        if msg["type"] == "http.request":
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
            if FIRST_MESSAGE_ONLY:  # the planted bug: the rest of the body is never read
                break
        elif msg["type"] == "http.disconnect":
            return
    path = scope["path"]
    if path == "/healthz":
        out, ctype = b"ok", b"text/plain"
    elif path == "/debug/vars":
        out = json.dumps({"sse_open": 0, "ws_open": 0, "tasks": len(asyncio.all_tasks()),
                          "requests": REQUESTS}).encode()
        ctype = b"application/json"
    elif path == "/echo" or path.startswith("/echo/"):
        raw = scope.get("raw_path") or path.encode()
        target = raw.decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        out = json.dumps({
            "method": scope["method"], "target": target, "http_version": scope.get("http_version", ""),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
        }).encode()
        ctype = b"application/json"
    else:
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"9")]})
        await send({"type": "http.response.body", "body": b"not found"})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
