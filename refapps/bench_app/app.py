"""bench_app: the fixed workloads of the bench tier as one pure ASGI app.

Routes (the same bodies every competitor serves, see probatorium.bench.cells):

* ``GET /plaintext``   -> 200 text/plain ``Hello, World!`` (13 bytes)
* ``GET /json``        -> 200 application/json ``{"message":"Hello, World!"}``
* ``GET /users/{id}``  -> 200 application/json ``{"id":<id>,"name":"user-<id>"}``
* ``POST /echo-body``  -> 200 application/octet-stream, the request body back
* ``GET /healthz``     -> 200 ``ok``
* ``WS /ws``           -> echoes every message
* ``GET /events``      -> SSE, one ``data: {"ts": <epoch s>}`` event every
  ``BENCH_SSE_INTERVAL_MS`` (default 10) ms, broadcast to every subscriber

No framework: the app measures the engine, not a router.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

PLAINTEXT = b"Hello, World!"
JSON_BODY = b'{"message":"Hello, World!"}'
SSE_INTERVAL = float(os.environ.get("BENCH_SSE_INTERVAL_MS", "10")) / 1000.0

_TEXT = [(b"content-type", b"text/plain")]
_JSON = [(b"content-type", b"application/json")]
_OCTET = [(b"content-type", b"application/octet-stream")]


async def _send(send, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _Ticker:
    """One publisher for every SSE subscriber: a future replaced at each tick (fan-out)."""

    def __init__(self) -> None:
        self.future: asyncio.Future | None = None
        self.task: asyncio.Task | None = None

    async def next(self) -> bytes:
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done():
            self.future = loop.create_future()
            self.task = loop.create_task(self._run())
        assert self.future is not None
        return await asyncio.shield(self.future)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SSE_INTERVAL)
            old, self.future = self.future, loop.create_future()
            if old is not None and not old.done():
                old.set_result(b'data: {"ts": %.6f}\n\n' % time.time())


TICKER = _Ticker()


async def _events(send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
    try:
        while True:
            chunk = await TICKER.next()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (OSError, asyncio.CancelledError):
        raise
    except Exception:  # noqa: BLE001 - the client went away (engine-specific error types)
        return


async def _ws(receive, send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def app(scope, receive, send) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if kind == "websocket":
        if path == "/ws":
            await _ws(receive, send)
        else:
            await send({"type": "websocket.close", "code": 1008})
        return
    method = scope["method"]
    if path == "/plaintext" and method == "GET":
        await _send(send, 200, _TEXT, PLAINTEXT)
    elif path == "/json" and method == "GET":
        await _send(send, 200, _JSON, JSON_BODY)
    elif path.startswith("/users/") and method == "GET":
        uid = path[len("/users/"):]
        if not uid.isdigit():
            await _send(send, 404, _TEXT, b"not found")
        else:
            await _send(send, 200, _JSON, json.dumps({"id": int(uid), "name": f"user-{uid}"},
                                                     separators=(",", ":")).encode())
    elif path == "/echo-body" and method == "POST":
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await _send(send, 200, _OCTET, b"".join(chunks))
    elif path == "/events" and method == "GET":
        await _events(send)
    elif path == "/healthz":
        await _send(send, 200, _TEXT, b"ok")
    else:
        await _send(send, 404, _TEXT, b"not found")
