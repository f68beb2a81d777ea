"""The SPEC.md §3 contract pieces every refapp serves the same way.

``/healthz``, the ``/echo`` route (any method; method, target, version,
headers as received, body length and SHA-256), path helpers, the JSON error
handler and bounded request-body readers. Starlette only: the refapps are
Starlette apps.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import threading
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from . import probes

#: A JSON request body larger than this is refused with 413.
MAX_JSON_BODY = 64 * 1024


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def request_target(scope: Scope) -> str:
    """The request-target as received (raw path, then ``?query``)."""
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes | bytearray) else scope.get("path", "")
    query = scope.get("query_string", b"") or b""
    return path + ("?" + query.decode("latin-1") if query else "")


def describe_request(scope: Scope) -> dict[str, Any]:
    """The echo contract's fields that come from the head (body fields added by the caller)."""
    return {
        "method": scope.get("method"),
        "target": request_target(scope),
        "http_version": scope.get("http_version"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope.get("headers", [])],
    }


async def echo(request: Request) -> Response | None:
    """The echo contract: the body is hashed as it streams (no size limit needed).

    None when the engine reported a disconnect before the body ended: the handler then sends
    nothing, so whatever the client sees is the ENGINE's answer (a refapp 400 here would mask an
    engine that turns a malformed body into a 500, or that signals a disconnect to a client still
    connected; issue 12 item 8)."""
    digest = hashlib.sha256()
    length = 0
    try:
        async for chunk in request.stream():
            digest.update(chunk)
            length += len(chunk)
    except ClientDisconnect:
        return None
    return JSONResponse({**describe_request(request.scope), "body_length": length,
                         "body_sha256": digest.hexdigest()})


class EchoEndpoint:
    """Plain ASGI endpoint, so that Starlette's Route accepts ANY method
    (function endpoints default to GET/HEAD only)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await echo(Request(scope, receive, send))
        if response is not None:
            await response(scope, receive, send)


def route_path(scope: Scope) -> str:
    """The path the router matches on: ``path`` without ``root_path``."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):]
    return path


def is_echo_path(path: str) -> bool:
    return path == "/echo" or path.startswith("/echo/")


async def http_error(request: Request, exc: Exception) -> Response:
    """HTTPException -> ``{"error": detail}`` (401 gains a Bearer challenge)."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="refapp"')
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it (or its Content-Length) passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() \
            and (len(declared) > 12 or int(declared) > limit):
        raise HTTPException(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"body larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPException(400, "client disconnected") from None
    return b"".join(chunks)


async def read_json_object(request: Request, limit: int = MAX_JSON_BODY) -> dict[str, Any]:
    """A JSON object body: 415 for another media type, 413 past `limit`, 400 when not an object."""
    ctype = request.headers.get("content-type")
    if ctype is not None:
        media = ctype.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise HTTPException(415, "Content-Type must be application/json")
    raw = await read_body(request, limit)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise HTTPException(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "body must be a JSON object")
    return data


def check_text(key: str, value: Any, min_len: int, max_len: int) -> str:
    """`value` must be a str of min_len..max_len characters that encodes as UTF-8; else 400."""
    if not isinstance(value, str):
        raise HTTPException(400, f"'{key}' must be a string")
    if not (min_len <= len(value) <= max_len):
        raise HTTPException(400, f"'{key}' must have {min_len}..{max_len} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPException(400, f"'{key}' is not valid Unicode text") from None
    return value


class Shutdown:
    """Tells long-lived work (SSE streams, WebSockets, log writers) that the server is stopping.

    Engines differ in how they signal a shutdown to in-flight requests:
    uvicorn waits for open responses to finish before it runs lifespan
    shutdown, so an endless SSE stream would keep it alive forever. So the
    engine's own SIGTERM/SIGINT handler is chained (when it is a Python
    callable) besides reacting to lifespan shutdown; ``on_begin`` runs once.
    """

    def __init__(self, on_begin: Callable[[], None] | None = None) -> None:
        self.stopping = False
        self.hooked = False
        self.on_begin = on_begin

    def begin(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        if self.on_begin is not None:
            self.on_begin()

    def hook_signals(self) -> None:
        """Chain the engine's signal handlers (call from the serving loop's thread)."""
        if self.hooked:
            return
        self.hooked = True
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                prev = signal.getsignal(sig)
            except (ValueError, OSError):
                continue
            if not callable(prev):
                # SIG_DFL / SIG_IGN / not set from Python: leave the engine's
                # (or the OS default) behaviour exactly as it is.
                continue

            def handler(signum: int, frame: Any, _prev: Any = prev) -> None:
                with contextlib.suppress(RuntimeError):  # loop already closed
                    loop.call_soon_threadsafe(self.begin)
                _prev(signum, frame)

            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, handler)


class RequestCounter:
    """Outermost pure-ASGI layer (never buffers a streaming response): counts HTTP requests
    into ``stats.requests`` for /debug/vars and, given a `shutdown`, hooks its signal chain on
    the first non-lifespan scope (engines without lifespan support, e.g. daphne)."""

    def __init__(self, app: ASGIApp, stats: Any, shutdown: Shutdown | None = None) -> None:
        self.app = app
        self.stats = stats
        self.shutdown = shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.stats.requests += 1
        if self.shutdown is not None and not self.shutdown.hooked and scope["type"] != "lifespan":
            self.shutdown.hook_signals()
        # wt-wsasgi (issue 12 items 10, 11): the raw-ASGI probe routes see the engine's own scope,
        # send and receive, before any framework layer.
        if scope["type"] == "http" and probes.is_probe_path(route_path(scope)):
            await probes.probe_app(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ExemptPathDispatcher:
    """Sends lifespan, `open_paths` and ``/echo/...`` to `open_app`, everything else to
    `guarded_app` (the auth / rate-limit stack)."""

    def __init__(self, open_app: ASGIApp, guarded_app: ASGIApp, open_paths: frozenset[str]) -> None:
        self.open_app = open_app
        self.guarded_app = guarded_app
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.open_app(scope, receive, send)
            return
        path = route_path(scope)
        if path in self.open_paths or is_echo_path(path):
            await self.open_app(scope, receive, send)
        else:
            await self.guarded_app(scope, receive, send)


# --- self-check count contract (docs/contracts.md, debug endpoint ``self_checks``) ---


class SelfChecks:
    """How many times each of the app's self-checks compared, since the process started.

    The refapp lists every predicate it checks from the start (0 until a request reaches the
    check) and calls :meth:`ran` where the check actually compares; the debug endpoint serves
    :meth:`snapshot` as ``self_checks``. Single event loop: no locking needed."""

    def __init__(self, *predicates: str) -> None:
        self.counts: dict[str, int] = dict.fromkeys(predicates, 0)

    def ran(self, predicate: str, n: int = 1) -> None:
        self.counts[predicate] += n

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)
