"""What the three driver refapps (driver_postgres, driver_redis,
driver_memcached) share; each keeps only its backend and its own routes.

A driver refapp's ``app.py``::

    from refapp_common import driver
    driver.configure(slug="driver_redis", service="redis")
    ...                                   # its backend class, its own routes
    app = driver.build_app(backend, DRIVER_ERRORS, EXTRA_ROUTES)

One refapp per process: the configuration, the tallies and the backend live
in this module (``CONFIG``, ``STATS``, ``CHECKS``), set once at import.

The backend object provides ``ready()``, ``close()``, ``debug() -> dict``,
``kv_put(key, value) -> created``, ``kv_get(key)``, ``kv_delete(key) ->
existed``, ``session_create(sid, data)``, ``session_get(sid)``,
``session_delete(sid)`` and ``rate_take(key) -> (allowed, retry_after_s,
remaining)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import math
import os
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn
from urllib.parse import quote

from itsdangerous import BadData, TimestampSigner
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .contract import (
    EchoEndpoint,
    check_text,
    healthz,
    http_error,
    is_echo_path,
    read_body,
    read_json_object,
    route_path,
)
from . import probes

__all__ = ["CHECKS", "CONFIG", "MAX_VALUE", "RATE", "RATE_LIMIT", "STATS", "InvariantViolation", "build_app",
           "check_absent", "check_equal", "check_text", "configure", "decode_session", "die", "encode_session",
           "endpoint", "kv_key", "maybe_corrupt", "read_body", "read_json_object", "require_env",
           "self_check_enabled", "session_user"]

#: Token bucket per client key: "N/unit" (unit second|minute|hour|day, or
#: s|m|h|d) means a bucket of N tokens refilled at N per unit. "off" disables.
#: The default is generous: every Markov walker logs in as its own user, so
#: validator traffic never trips it; set it tiny to exercise 429.
RATE_LIMIT = os.environ.get("REFAPP_RATE_LIMIT", "1000/second").strip()

#: Signs the session id carried by the cookie / bearer token. Random per
#: process unless set (sessions then do not survive a restart of the app,
#: although they live in the backend).
SECRET_KEY = os.environ.get("REFAPP_SECRET_KEY") or secrets.token_urlsafe(32)

#: Test-only fault injection for the key/value writes: "corrupt" writes a
#: different value than asked (the I-DRV-1 self-check must answer 500);
#: "corrupt-unchecked" does the same and skips the self-check (only a client
#: reading the key back can notice). Empty (default) = correct behaviour.
FAULT = os.environ.get("REFAPP_FAULT", "").strip().lower()

SESSION_COOKIE = "session"
SESSION_TTL_S = 24 * 3600
#: Largest /kv value (413 beyond): memcached's default item limit is 1 MiB.
MAX_VALUE = 256 * 1024
MAX_KEY = 200
MAX_CREDENTIAL = 256

_UNITS = {"s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60,
          "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}


class _Config:
    """Set by configure() and build_app(); read at request time."""

    def __init__(self) -> None:
        self.slug = "driver_refapp"
        self.service = "backend"
        self.signer: TimestampSigner | None = None
        self.backend: Any = None
        self.errors: tuple[type[BaseException], ...] = ()


CONFIG = _Config()


def die(message: str) -> NoReturn:
    """Fail fast at startup: ONE clear line on stderr, exit status 2."""
    sys.stderr.write(f"{CONFIG.slug}: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def require_env(var: str) -> str:
    """The environment variable naming the backend; dies with one line when unset."""
    value = os.environ.get(var, "").strip()
    if not value:
        die(f"{var} is not set; this refapp needs a running {CONFIG.service} "
            f"(probatorium starts it for --refapp {CONFIG.slug}; by hand: probatorium services up {CONFIG.service})")
    return value


def parse_rate(text: str) -> tuple[float, float] | None:
    """``"N/unit"`` -> (capacity N, refill tokens per second); None when off."""
    if text.lower() in ("", "0", "off", "none", "disabled"):
        return None
    amount, _, unit = text.partition("/")
    try:
        capacity = float(amount.strip())
        per = _UNITS[unit.strip().lower()]
    except (ValueError, KeyError):
        die(f"REFAPP_RATE_LIMIT={text!r} is not 'N/second|minute|hour|day' or 'off'")
    if capacity < 1:
        die(f"REFAPP_RATE_LIMIT={text!r}: the bucket needs at least 1 token")
    return capacity, capacity / per


RATE: tuple[float, float] | None = None


def configure(slug: str, service: str) -> None:
    """Name the refapp and its service; validate the environment (dies with one line when wrong)."""
    global RATE
    CONFIG.slug, CONFIG.service = slug, service
    RATE = parse_rate(RATE_LIMIT)
    if FAULT not in ("", "corrupt", "corrupt-unchecked"):
        die(f"REFAPP_FAULT={FAULT!r} is not one of '', 'corrupt', 'corrupt-unchecked'")
    CONFIG.signer = TimestampSigner(SECRET_KEY, salt=f"refapp-{slug}-session")


def _signer() -> TimestampSigner:
    assert CONFIG.signer is not None, "driver.configure() was not called"
    return CONFIG.signer


class _Stats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests = 0
        self.rate_limited = 0
        self.backend_errors = 0
        self.stopping = False


STATS = _Stats()


class InvariantViolation(Exception):
    def __init__(self, kind: str, what: str, detail: dict[str, Any]) -> None:
        super().__init__(what)
        self.kind = kind
        self.what = what
        self.detail = detail


class DrvChecks:
    """I-DRV-1 self-check tally: every read-back after a write is one check."""

    def __init__(self) -> None:
        self.checks = 0
        self.mismatches = 0
        #: read-backs that could not be compared exactly because another
        #: request legitimately changed the value in between (counted as
        #: checks too: the weaker comparison still held)
        self.superseded = 0
        self.by_kind: Counter[str] = Counter()

    def ok(self, kind: str) -> None:
        self.checks += 1
        self.by_kind[kind] += 1

    def fail(self, kind: str, what: str, **detail: Any) -> NoReturn:
        self.checks += 1
        self.mismatches += 1
        self.by_kind[kind] += 1
        raise InvariantViolation(kind, what, detail)


CHECKS = DrvChecks()


def _digest(value: bytes | None) -> str | None:
    return None if value is None else hashlib.sha256(value).hexdigest()


def check_equal(kind: str, key: str, written: bytes, read: bytes | None) -> None:
    """Exact read-after-write comparison (used where no one else can have written in between)."""
    if read == written:
        CHECKS.ok(kind)
        return
    CHECKS.fail(kind, f"{kind}: value read back differs from the value written", key=key,
                written_len=len(written), written_sha256=_digest(written),
                read_len=None if read is None else len(read), read_sha256=_digest(read))


def check_absent(kind: str, key: str, read: bytes | None) -> None:
    if read is None:
        CHECKS.ok(kind)
        return
    CHECKS.fail(kind, f"{kind}: value still readable after delete", key=key, read_len=len(read),
                read_sha256=_digest(read))


def maybe_corrupt(value: bytes) -> bytes:
    return value + b"\x00lost" if FAULT else value


def self_check_enabled() -> bool:
    return FAULT != "corrupt-unchecked"


def invariant_response(exc: InvariantViolation) -> Response:
    body = {"x-invariant": "I-DRV-1", "error": exc.what, "check": exc.kind, **exc.detail}
    return JSONResponse(body, status_code=500)


def backend_unavailable(exc: BaseException) -> Response:
    STATS.backend_errors += 1
    return JSONResponse({"error": f"{CONFIG.service} unavailable: {type(exc).__name__}: {exc}"[:300]},
                        status_code=503, headers={"Retry-After": "1"})


def endpoint(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Wraps a route: backend errors -> 503, I-DRV-1 violations -> 500 tagged JSON.

    Backend errors are answered here instead of propagating, so the engines
    never print a traceback for them (a traceback on stderr is a crash marker).
    """

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            await CONFIG.backend.ready()
            return await fn(request)
        except InvariantViolation as exc:
            return invariant_response(exc)
        except CONFIG.errors as exc:
            return backend_unavailable(exc)

    return wrapper


def kv_key(request: Request) -> str:
    key = request.path_params["key"]
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise HTTPException(400, "key is not valid Unicode text") from None
    if not 1 <= size <= MAX_KEY:
        raise HTTPException(400, f"key must have 1..{MAX_KEY} bytes")
    if "\x00" in key:
        raise HTTPException(400, "key must not contain NUL")
    return key


# -- sessions: the cookie carries only a signed session id ------------------


def signed_session_id(conn: HTTPConnection) -> str | None:
    """The session id from the cookie (else a bearer token), if our signature holds."""
    candidates = []
    cookie = conn.cookies.get(SESSION_COOKIE)
    if cookie:
        candidates.append(cookie)
    auth = conn.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        candidates.append(token.strip())
    for raw in candidates:
        try:
            return _signer().unsign(raw, max_age=SESSION_TTL_S).decode("ascii")
        except (BadData, UnicodeDecodeError):
            continue
    return None


async def session_user(request: Request) -> str:
    """The logged-in user (session looked up in the backend); 401 otherwise."""
    sid = signed_session_id(request)
    if sid is not None:
        data = await CONFIG.backend.session_get(sid)
        if data is not None:
            user = data.get("user")
            if isinstance(user, str) and user:
                request.state.sid = sid
                return user
    raise HTTPException(401, "login required")


def encode_session(user: str) -> bytes:
    return json.dumps({"user": user, "created": round(time.time(), 3)}, separators=(",", ":")).encode()


def decode_session(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# -- shared routes: login/session, key/value contract ----------------------


@endpoint
async def login(request: Request) -> Response:
    data = await read_json_object(request)
    username = check_text("username", data.get("username"), 1, MAX_CREDENTIAL)
    check_text("password", data.get("password"), 1, MAX_CREDENTIAL)
    # any non-empty pair is accepted (contract): the account is created on first login
    old = signed_session_id(request)
    if old is not None:
        await CONFIG.backend.session_delete(old)
    sid = secrets.token_urlsafe(24)
    await CONFIG.backend.session_create(sid, encode_session(username))
    token = _signer().sign(sid).decode("ascii")
    response = JSONResponse({"user": username, "token": token})
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_TTL_S, httponly=True, samesite="lax", path="/")
    return response


@endpoint
async def logout(request: Request) -> Response:
    await session_user(request)
    await CONFIG.backend.session_delete(request.state.sid)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@endpoint
async def me(request: Request) -> Response:
    return JSONResponse({"user": await session_user(request)})


def _kv_location(request: Request, key: str) -> str:
    return request.scope.get("root_path", "") + "/kv/" + quote(key, safe="")


@endpoint
async def kv_create(request: Request) -> Response:
    """POST /kv: store the body under a new server-chosen key (201 + Location)."""
    value = await read_body(request, MAX_VALUE)
    key = "k-" + secrets.token_hex(8)
    await CONFIG.backend.kv_put(key, value)
    return JSONResponse({"key": key, "size": len(value), "created": True}, status_code=201,
                        headers={"Location": _kv_location(request, key)})


@endpoint
async def kv_item(request: Request) -> Response:
    key = kv_key(request)
    if request.method == "PUT":
        value = await read_body(request, MAX_VALUE)
        created = await CONFIG.backend.kv_put(key, value)
        return JSONResponse({"key": key, "size": len(value), "created": created},
                            status_code=201 if created else 200,
                            headers={"Location": _kv_location(request, key)} if created else None)
    if request.method == "DELETE":
        if not await CONFIG.backend.kv_delete(key):
            raise HTTPException(404, "no such key")
        return Response(status_code=204)
    value = await CONFIG.backend.kv_get(key)
    if value is None:
        raise HTTPException(404, "no such key")
    return Response(value, media_type="application/octet-stream")


class RateLimitMiddleware:
    """Pure ASGI: one token bucket per client key, kept in the backend.

    The key is the signed session id when the request carries a valid one
    (no backend lookup needed: the signature proves we issued it), else the
    peer address.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or RATE is None:
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        sid = signed_session_id(conn)
        if sid is not None:
            key = "s:" + sid
        else:
            client = scope.get("client")
            key = "a:" + (str(client[0]) if client else "unknown")
        try:
            await CONFIG.backend.ready()
            allowed, retry_after, remaining = await CONFIG.backend.rate_take(key)
        except CONFIG.errors as exc:
            await backend_unavailable(exc)(scope, receive, send)
            return
        if not allowed:
            STATS.rate_limited += 1
            headers = {"Retry-After": str(max(1, math.ceil(retry_after))), "X-RateLimit-Limit": str(int(RATE[0])),
                       "X-RateLimit-Remaining": "0"}
            await JSONResponse({"error": f"rate limit exceeded ({RATE_LIMIT})"}, status_code=429,
                               headers=headers)(scope, receive, send)
            return
        await self.app(scope, receive, send)


# -- open endpoints (outside the rate limiter) -------------------------------


async def debug_vars(request: Request) -> Response:
    try:
        all_tasks = asyncio.all_tasks()
    except RuntimeError:
        all_tasks = set()
    body: dict[str, Any] = {
        "sse_open": 0,  # no streaming routes in the driver refapps
        "ws_open": 0,
        "tasks": len(all_tasks),
        "requests": STATS.requests,
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - STATS.started, 3),
        "threads": threading.active_count(),
        "service": CONFIG.service,
        "drv_checks": CHECKS.checks,
        "drv_mismatches": CHECKS.mismatches,
        "drv_superseded": CHECKS.superseded,
        "drv_checks_by_kind": dict(CHECKS.by_kind),
        "rate_limit": RATE_LIMIT if RATE is not None else "off",
        "rate_limited": STATS.rate_limited,
        "backend_errors": STATS.backend_errors,
        "fault": FAULT or None,
        "stopping": STATS.stopping,
        **probes.debug_fields(),  # wt-wsasgi: the orphan-stream route's counters
    }
    body.update(CONFIG.backend.debug())
    return JSONResponse(body)


async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI lifespan, by hand: a backend that cannot be reached at startup
    fails the startup with ONE line (Starlette's own lifespan handler would
    hand the engine a whole traceback). Engines without lifespan (daphne)
    connect on the first request instead."""
    message = await receive()
    if message["type"] != "lifespan.startup":
        return
    try:
        await CONFIG.backend.ready()
    except CONFIG.errors as exc:
        line = f"{CONFIG.slug}: cannot reach {CONFIG.service} at startup: {type(exc).__name__}: {exc}"
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        await send({"type": "lifespan.startup.failed", "message": line})
        return
    await send({"type": "lifespan.startup.complete"})
    message = await receive()  # lifespan.shutdown
    STATS.stopping = True
    with contextlib.suppress(Exception):
        await CONFIG.backend.close()
    await send({"type": "lifespan.shutdown.complete"})


OPEN_PATHS = frozenset({"/healthz", "/debug/vars", "/echo"})


def build_app(backend: Any, driver_errors: tuple[type[BaseException], ...],
              extra_routes: Sequence[BaseRoute] = ()) -> ASGIApp:
    """The refapp's ASGI app: the shared routes plus `extra_routes`, over `backend`."""
    CONFIG.backend, CONFIG.errors = backend, driver_errors
    guarded_app = Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/me", me, methods=["GET"]),
            Route("/kv", kv_create, methods=["POST"]),
            Route("/kv/{key}", kv_item, methods=["GET", "PUT", "DELETE"]),
            *extra_routes,
        ],
        middleware=[Middleware(RateLimitMiddleware)],
        exception_handlers={HTTPException: http_error},
    )
    guarded_app.router.redirect_slashes = False
    open_app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/debug/vars", debug_vars, methods=["GET"]),
            Route("/echo", EchoEndpoint()),
            Route("/echo/{rest:path}", EchoEndpoint()),
        ],
        exception_handlers={HTTPException: http_error},
    )
    open_app.router.redirect_slashes = False

    async def dispatcher(scope: Scope, receive: Receive, send: Send) -> None:
        """Counts requests; sends the open paths around the rate limiter."""
        if scope["type"] == "lifespan":
            await lifespan(scope, receive, send)
            return
        if scope["type"] == "http":
            STATS.requests += 1
        path = route_path(scope)
        if scope["type"] == "http" and probes.is_probe_path(path):  # wt-wsasgi: raw-ASGI probe routes
            await probes.probe_app(scope, receive, send)
            return
        if path in OPEN_PATHS or is_echo_path(path):
            await open_app(scope, receive, send)
        else:
            await guarded_app(scope, receive, send)

    return dispatcher
