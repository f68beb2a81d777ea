"""Reference app ``kitchen_sink`` for probatorium: sixteen stateless middlewares.

Maintained packages where they exist:

* request id: ``asgi_correlation_id.CorrelationIdMiddleware`` (``X-Request-Id``,
  with a sanitising validator: ``[A-Za-z0-9._-]{1,64}`` is kept, anything else
  replaced by a fresh uuid4);
* CORS: ``starlette.middleware.cors.CORSMiddleware``;
* rate limit: ``slowapi`` + ``limits`` (moving window, in memory);
* circuit breaker: ``circuitbreaker`` around the simulated upstream call of
  ``/upstream``.

Written here (pure ASGI, small) because no maintained ASGI package does it:
recovery, secure headers, body limit, method override, rewrite, redirect,
health check, timeout, idempotency keys, single-flight, basic auth,
ETag/If-None-Match.

Self-check: the rate limiter's admissions on ``GET /api/limited`` are counted
independently of the limiter; if more than the limit got through in any
window, the answer is 500 ``{"x-invariant": "I-MW-RATELIMIT"}``.

5xx by design (never in markov.yaml): ``GET /panic`` (500 from the recovery
middleware), ``GET /slow`` beyond the timeout (503), ``GET /upstream?fail=1``
(502, then 503 while the circuit is open).

Run on its own::

    python app.py [--port N] [--engine uvicorn|uvicorn-h11|hypercorn|granian|daphne]
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import logging
import os
import re
import secrets
import sys
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from circuitbreaker import CircuitBreaker, CircuitBreakerError
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from slowapi.middleware import SlowAPIASGIMiddleware
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # refapps/: refapp_common
from refapp_common.contract import check_text, EchoEndpoint, read_json_object, route_path, SelfChecks  # noqa: E402
from refapp_common.runner import main  # noqa: E402

logging.getLogger("asgi_correlation_id").setLevel(logging.ERROR)

# --------------------------------------------------------------------------
# configuration (environment)
# --------------------------------------------------------------------------

SECRET_KEY = (os.environ.get("REFAPP_SECRET_KEY") or secrets.token_urlsafe(32)).encode()
MAX_BODY = int(os.environ.get("REFAPP_MAX_BODY", str(64 * 1024)))
#: Planted defect for testing the checkers: "hierarchy_lax" (a task is found under any project).
FAULT = os.environ.get("REFAPP_FAULT", "").strip()
TIMEOUT_S = float(os.environ.get("REFAPP_TIMEOUT_S", "2"))
RATE_LIMIT = os.environ.get("REFAPP_RATE_LIMIT", "2000/second").strip()
LIMITED_RATE = os.environ.get("REFAPP_LIMITED_RATE", "5/second").strip()
BREAKER_THRESHOLD = int(os.environ.get("REFAPP_BREAKER_THRESHOLD", "3"))
BREAKER_RESET_S = float(os.environ.get("REFAPP_BREAKER_RESET_S", "2"))
ADMIN_USER = os.environ.get("REFAPP_ADMIN_USER", "admin")
ADMIN_PASSWORD = os.environ.get("REFAPP_ADMIN_PASSWORD", "admin-secret")
CORS_ORIGINS = [o.strip() for o in os.environ.get("REFAPP_CORS_ORIGINS", "https://app.example").split(",") if o.strip()]
IDEMPOTENCY_TTL_S = 600.0
IDEMPOTENCY_MAX = 10_000
SINGLEFLIGHT_WORK_S = 0.2
MAX_ORDERS = 10_000
MAX_CREDENTIAL = 256

# --------------------------------------------------------------------------
# observable state (/debug/vars)
# --------------------------------------------------------------------------


class _Stats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests = 0
        self.events: Counter[str] = Counter()


STATS = _Stats()


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _set_path(scope: Scope, new_path: str) -> None:
    scope["path"] = scope.get("root_path", "") + new_path
    scope["raw_path"] = scope["path"].encode("utf-8")


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


# --------------------------------------------------------------------------
# 1. health check (outermost: never limited, timed out or authenticated)
# --------------------------------------------------------------------------


class HealthCheckMiddleware:
    PATHS = {"/healthz": "ok", "/readyz": "ready"}

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            text = self.PATHS.get(route_path(scope))
            if text is not None:
                await PlainTextResponse(text, headers={"Cache-Control": "no-store"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------
# 2. request id: asgi-correlation-id with a sanitising validator
# --------------------------------------------------------------------------

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_ok(value: str) -> bool:
    return REQUEST_ID_RE.fullmatch(value) is not None


# --------------------------------------------------------------------------
# 3. secure headers
# --------------------------------------------------------------------------

SECURE_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"geolocation=(), camera=(), microphone=()"),
]


class SecureHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURE_HEADERS if k not in present]
            await send(message)

        await self.app(scope, receive, send_wrapper)


# --------------------------------------------------------------------------
# 4. recovery: any exception -> 500 JSON, no traceback in the body or on stderr
# --------------------------------------------------------------------------


class RecoveryMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:  # noqa: BLE001 - that is the point of recovery
            STATS.events["recovered"] += 1
            STATS.events["recovered_" + type(exc).__name__] += 1
            if started:
                return  # too late for a status: the engine ends the response
            await _json(500, {"error": "internal server error",
                              "request_id": _header(scope, b"x-request-id") or ""})(scope, receive, send)


# --------------------------------------------------------------------------
# 6. redirect (fixed table; the Location never comes from the request)
# 7. rewrite (internal, before routing)
# 8. method override (POST + X-HTTP-Method-Override only)
# --------------------------------------------------------------------------

REDIRECTS = {"/old-catalog": "/api/catalog", "/home": "/api/catalog"}
REWRITES = [(re.compile(r"^/v1/(items|catalog|report)(/.*)?$"), r"/api/\1\2")]
OVERRIDABLE = frozenset({"PUT", "PATCH", "DELETE"})


class RedirectMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            dest = REDIRECTS.get(route_path(scope))
            if dest is not None:
                STATS.events["redirected"] += 1
                await Response(status_code=301, headers={"Location": dest})(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RewriteMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = route_path(scope)
            for rx, repl in REWRITES:
                if rx.match(path):
                    scope = dict(scope)
                    _set_path(scope, rx.sub(repl, path))
                    scope["rewritten_from"] = path
                    STATS.events["rewritten"] += 1
                    break
        await self.app(scope, receive, send)


class MethodOverrideMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            value = _header(scope, b"x-http-method-override")
            if value is not None and scope["method"] == "POST":
                method = value.strip().upper()
                if method not in OVERRIDABLE:
                    await _json(400, {"error": "X-HTTP-Method-Override must be PUT, PATCH or DELETE"})(
                        scope, receive, send)
                    return
                scope = dict(scope)
                scope["method"] = method
                scope["method_overridden_from"] = "POST"
                STATS.events["method_overridden"] += 1
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------
# 9. body limit (413 from Content-Length or while streaming)
# --------------------------------------------------------------------------


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared.strip()[:20]) > self.max_body:
            STATS.events["body_too_large"] += 1
            await _json(413, {"error": f"body larger than {self.max_body} bytes"},
                        {"Connection": "close"})(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge()
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, send_wrapper)
        except BodyTooLarge:
            STATS.events["body_too_large"] += 1
            if not started:
                await _json(413, {"error": f"body larger than {self.max_body} bytes"},
                            {"Connection": "close"})(scope, receive, send)


# --------------------------------------------------------------------------
# 10. timeout (503 when no response started within TIMEOUT_S)
# --------------------------------------------------------------------------


class TimeoutMiddleware:
    def __init__(self, app: ASGIApp, timeout: float = TIMEOUT_S) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, send_wrapper))
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait({task, waiter}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not task.done() and not started.is_set():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if not started.is_set():
                STATS.events["timed_out"] += 1
                await _json(503, {"error": f"no response within {self.timeout:g} s"},
                            {"Retry-After": "1"})(scope, receive, send)
            return
        await task  # propagates the app's exception to the recovery middleware


# --------------------------------------------------------------------------
# 11. rate limit (slowapi + limits) and the I-MW-RATELIMIT self-check
# --------------------------------------------------------------------------


def client_key(request: Request) -> str:
    client = request.client
    return "addr:" + (client.host if client and client.host else "unknown")


LIMITER = Limiter(
    key_func=client_key,
    application_limits=[RATE_LIMIT] if RATE_LIMIT.lower() != "off" else [],
    storage_uri="memory://",
    strategy="moving-window",
    headers_enabled=False,
)


def _parse_rate(text: str) -> tuple[int, float]:
    from limits import parse

    item = parse(text)
    return item.amount, float(item.get_expiry())


LIMITED_AMOUNT, LIMITED_PERIOD = _parse_rate(LIMITED_RATE)
#: admissions may be recorded this long after the limiter's own clock read
ADMISSION_SLACK_S = 0.005


class RateLimitAudit:
    """Counts admissions on GET /api/limited independently of the limiter.

    slowapi checks a route limit in the endpoint decorator; ``record`` is the
    first statement of the endpoint body, which runs in the same event-loop
    step as the limiter's hit (no await in between), so its clock read is
    within microseconds of the limiter's. A moving window of LIMITED_AMOUNT per
    LIMITED_PERIOD means no trailing window (shortened by ADMISSION_SLACK_S)
    may hold more admissions than that.
    """

    def __init__(self) -> None:
        self.admitted: dict[str, deque[float]] = {}

    def record(self, key: str) -> int:
        """Admissions of `key` in the trailing window, this one included."""
        now = time.time()
        window = self.admitted.setdefault(key, deque())
        horizon = now - LIMITED_PERIOD + ADMISSION_SLACK_S
        while window and window[0] <= horizon:
            window.popleft()
        window.append(now)
        if len(self.admitted) > 10_000:
            self.admitted.pop(next(iter(self.admitted)))
        return len(window)


AUDIT = RateLimitAudit()
#: How many times each self-check compared (debug endpoint ``self_checks``).
SELF_CHECKS = SelfChecks("I-MW-RATELIMIT")


def rate_limited(request: Request, exc: Exception) -> Response:
    STATS.events["rate_limited"] += 1
    return _json(429, {"error": f"rate limit exceeded: {getattr(exc, 'detail', '')}"}, {"Retry-After": "1"})


# --------------------------------------------------------------------------
# 12. basic auth on /admin
# --------------------------------------------------------------------------


class BasicAuthMiddleware:
    def __init__(self, app: ASGIApp, prefix: str = "/admin") -> None:
        self.app = app
        self.prefix = prefix

    def _ok(self, value: str | None) -> bool:
        if not value:
            return False
        scheme, _, cred = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, pw = base64.b64decode(cred.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        good_user = hmac.compare_digest(user.encode(), ADMIN_USER.encode())
        good_pw = hmac.compare_digest(pw.encode(), ADMIN_PASSWORD.encode())
        return bool(sep) and good_user and good_pw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        if scope["type"] == "http" and (path == self.prefix or path.startswith(self.prefix + "/")):
            if not self._ok(_header(scope, b"authorization")):
                STATS.events["basic_auth_rejected"] += 1
                await _json(401, {"error": "admin credentials required"},
                            {"WWW-Authenticate": 'Basic realm="admin", charset="UTF-8"'})(scope, receive, send)
                return
            scope = dict(scope)
            scope["admin_user"] = ADMIN_USER
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------
# 13. circuit breaker around the simulated upstream of /upstream (circuitbreaker)
# --------------------------------------------------------------------------


class UpstreamError(Exception):
    pass


#: closed -> open after BREAKER_THRESHOLD consecutive failures; open refuses at
#: once (CircuitBreakerError) for BREAKER_RESET_S; then half-open: a success
#: closes it, a failure opens it again.
UPSTREAM_BREAKER = CircuitBreaker(failure_threshold=BREAKER_THRESHOLD, recovery_timeout=BREAKER_RESET_S,
                                  expected_exception=UpstreamError, name="upstream")


@UPSTREAM_BREAKER
async def call_upstream(fail: bool) -> dict[str, Any]:
    await asyncio.sleep(0)
    if fail:
        raise UpstreamError("upstream failed")
    return {"upstream": "ok"}


def breaker_snapshot() -> dict[str, Any]:
    return {"state": UPSTREAM_BREAKER.state, "failures": UPSTREAM_BREAKER.failure_count}


# --------------------------------------------------------------------------
# 14. idempotency keys (POST + Idempotency-Key)
# --------------------------------------------------------------------------


class _Buffered:
    """Captures a whole response (status, headers, body)."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    async def replay(self, send: Send, extra: list[tuple[bytes, bytes]] = (), *, body: bool = True) -> None:
        """Send the captured response again; body=False (HEAD) keeps the GET's Content-Length."""
        headers = [(k, v) for k, v in self.headers if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers + list(extra)})
        await send({"type": "http.response.body", "body": bytes(self.body) if body else b""})


#: (method, path, key) -> (first seen, sha256 of the body, stored response or None while in flight)
IDEMPOTENCY_STORE: OrderedDict[tuple[str, str, str], tuple[float, str, _Buffered | None]] = OrderedDict()


class IdempotencyMiddleware:
    """Same key + same body → the stored response again (Idempotent-Replayed: true);
    same key + another body → 422; same key still in flight → 409. Keys are
    scoped by method and path; 5xx answers are not stored (the client may retry)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.store = IDEMPOTENCY_STORE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if key is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key = key.strip()
        if not (1 <= len(key) <= 255) or not key.isprintable():
            await _json(400, {"error": "Idempotency-Key must be 1..255 printable characters"})(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        digest = hashlib.sha256(bytes(body)).hexdigest()
        now = time.monotonic()
        while self.store and next(iter(self.store.values()))[0] < now - IDEMPOTENCY_TTL_S:
            self.store.popitem(last=False)
        slot = (scope["method"], route_path(scope), key)
        entry = self.store.get(slot)
        if entry is not None:
            _, stored_digest, stored = entry
            if stored_digest != digest:
                STATS.events["idempotency_mismatch"] += 1
                await _json(422, {"error": "Idempotency-Key reused with a different request body"})(
                    scope, receive, send)
            elif stored is None:
                STATS.events["idempotency_in_flight"] += 1
                await _json(409, {"error": "a request with this Idempotency-Key is still in progress"},
                            {"Retry-After": "1"})(scope, receive, send)
            else:
                STATS.events["idempotency_replayed"] += 1
                await stored.replay(send, [(b"idempotent-replayed", b"true")])
            return
        self.store[slot] = (now, digest, None)
        while len(self.store) > IDEMPOTENCY_MAX:
            self.store.popitem(last=False)
        sent = False

        async def replay_receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        buffered = _Buffered()
        try:
            await self.app(scope, replay_receive, buffered.send)
        finally:
            if buffered.status < 500 and buffered.headers:
                self.store[slot] = (now, digest, buffered)
            else:
                self.store.pop(slot, None)
        await buffered.replay(send)


# --------------------------------------------------------------------------
# 15. single-flight: concurrent identical GETs share one computation
# --------------------------------------------------------------------------


class SingleFlightMiddleware:
    def __init__(self, app: ASGIApp, prefix: str = "/api/report") -> None:
        self.app = app
        self.prefix = prefix
        self.flights: dict[tuple[str, bytes], asyncio.Future[_Buffered]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        if scope["type"] != "http" or scope["method"] != "GET" or not (
                path == self.prefix or path.startswith(self.prefix + "/")):
            await self.app(scope, receive, send)
            return
        flight_key = (path, scope.get("query_string", b""))
        fut = self.flights.get(flight_key)
        role = b"shared"
        if fut is None:
            role = b"leader"
            STATS.events["singleflight_computations"] += 1

            async def empty_receive() -> Message:
                await asyncio.Event().wait()  # never: the leader's GET has no body to read
                return {"type": "http.disconnect"}

            async def compute() -> _Buffered:
                buffered = _Buffered()
                try:
                    await self.app(dict(scope), empty_receive, buffered.send)
                finally:
                    self.flights.pop(flight_key, None)
                return buffered

            # its own task: a client that goes away does not cancel the others' result
            fut = asyncio.ensure_future(compute())
            self.flights[flight_key] = fut
        else:
            STATS.events["singleflight_shared"] += 1
        buffered = await asyncio.shield(fut)
        await buffered.replay(send, [(b"x-singleflight", role)])


# --------------------------------------------------------------------------
# 16. ETag / If-None-Match on cached GET routes
# --------------------------------------------------------------------------


def _etag_matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        if candidate.strip().removeprefix("W/") == opaque:  # weak comparison (RFC 9110 §13.1.2)
            return True
    return False


class ETagMiddleware:
    def __init__(self, app: ASGIApp, paths: tuple[str, ...] = ("/api/catalog",)) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or route_path(scope) not in self.paths:
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        buffered = _Buffered()
        # HEAD is answered from the GET representation: same ETag, same Content-Length
        await self.app({**scope, "method": "GET"} if head else scope, receive, buffered.send)
        if buffered.status != 200:
            await buffered.replay(send, body=not head)
            return
        etag = '"' + hashlib.sha256(bytes(buffered.body)).hexdigest()[:32] + '"'
        buffered.headers += [(b"etag", etag.encode()), (b"cache-control", b"public, max-age=60")]
        inm = _header(scope, b"if-none-match")
        if inm is not None and _etag_matches(inm, etag):
            STATS.events["etag_not_modified"] += 1
            keep = {b"etag", b"cache-control", b"vary", b"date", b"expires", b"content-location"}
            headers = [(k, v) for k, v in buffered.headers if k.lower() in keep]
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await buffered.replay(send, body=not head)


# --------------------------------------------------------------------------
# endpoints
# --------------------------------------------------------------------------


def _sign(user: str) -> str:
    mac = hmac.new(SECRET_KEY, user.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
    return base64.urlsafe_b64encode(user.encode("utf-8")).decode().rstrip("=") + "." + mac


def _token_user(request: Request) -> str:
    scheme, _, cred = (request.headers.get("authorization") or "").partition(" ")
    head, dot, mac = cred.strip().rpartition(".")
    if scheme.lower() == "bearer" and dot:
        try:
            user = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            user = ""
        if user and hmac.compare_digest(_sign(user), cred.strip()):
            return user
    raise HTTPException(401, "bearer token required", {"WWW-Authenticate": 'Bearer realm="refapp"'})


def _text(data: dict[str, Any], key: str, lo: int, hi: int) -> str:
    return check_text(key, data.get(key), lo, hi)


async def login(request: Request) -> Response:
    data = await read_json_object(request, MAX_BODY)
    user = _text(data, "username", 1, MAX_CREDENTIAL)
    _text(data, "password", 1, MAX_CREDENTIAL)
    return JSONResponse({"user": user, "token": _sign(user)})


async def logout(request: Request) -> Response:
    """Stateless tokens: nothing to revoke server-side; the client drops its token."""
    _token_user(request)
    return Response(status_code=204)


async def me(request: Request) -> Response:
    return JSONResponse({"user": _token_user(request)})


CATALOG = [{"sku": f"sku-{i:03d}", "name": f"item {i}", "price_cents": 100 + 7 * i} for i in range(1, 41)]


async def catalog(request: Request) -> Response:
    return JSONResponse({"items": CATALOG, "count": len(CATALOG), "version": 1})


ORDERS: OrderedDict[int, dict[str, Any]] = OrderedDict()
_ORDER_IDS = itertools.count(1)


async def orders_collection(request: Request) -> Response:
    data = await read_json_object(request, MAX_BODY)
    sku = _text(data, "sku", 1, 64)
    qty = data.get("quantity")
    if not isinstance(qty, int) or isinstance(qty, bool) or not 1 <= qty <= 1000:
        raise HTTPException(400, "'quantity' must be an integer 1..1000")
    oid = next(_ORDER_IDS)
    order = {"id": oid, "sku": sku, "quantity": qty, "created": round(time.time(), 3)}
    ORDERS[oid] = order
    while len(ORDERS) > MAX_ORDERS:
        ORDERS.popitem(last=False)
    return JSONResponse(order, status_code=201, headers={"Location": f"/api/orders/{oid}"})


async def order_item(request: Request) -> Response:
    oid: int = request.path_params["id"]
    order = ORDERS.get(oid)
    if order is None:
        raise HTTPException(404, "no such order")
    if request.method == "DELETE":
        del ORDERS[oid]
        return Response(status_code=204)
    if request.method in ("PUT", "PATCH"):
        data = await read_json_object(request, MAX_BODY)
        qty = data.get("quantity")
        if not isinstance(qty, int) or isinstance(qty, bool) or not 1 <= qty <= 1000:
            raise HTTPException(400, "'quantity' must be an integer 1..1000")
        order["quantity"] = qty
    return JSONResponse(order)


# projects and their tasks: a parent/child pair. A task is reachable only under the project it
# was created in (404 under any other: the child-under-another-parent case, I-API-HIERARCHY).
MAX_PROJECTS = 10_000
MAX_TASKS_PER_PROJECT = 200
PROJECTS: OrderedDict[int, dict[str, Any]] = OrderedDict()
PROJECT_TASKS: dict[int, dict[int, dict[str, Any]]] = {}  # project id -> task id -> task
_PROJECT_IDS = itertools.count(1)
_TASK_IDS = itertools.count(1)  # one sequence for every project: task ids never repeat


def _project(request: Request) -> tuple[int, dict[str, Any]]:
    pid: int = request.path_params["projectId"]
    project = PROJECTS.get(pid)
    if project is None:
        raise HTTPException(404, "no such project")
    return pid, project


async def projects_collection(request: Request) -> Response:
    data = await read_json_object(request, MAX_BODY)
    name = _text(data, "name", 1, 100)
    pid = next(_PROJECT_IDS)
    project = {"id": pid, "name": name}
    PROJECTS[pid] = project
    PROJECT_TASKS[pid] = {}
    while len(PROJECTS) > MAX_PROJECTS:
        old, _ = PROJECTS.popitem(last=False)
        PROJECT_TASKS.pop(old, None)
    return JSONResponse(project, status_code=201, headers={"Location": f"/api/projects/{pid}"})


async def project_item(request: Request) -> Response:
    pid, project = _project(request)
    if request.method == "DELETE":
        del PROJECTS[pid]
        PROJECT_TASKS.pop(pid, None)
        return Response(status_code=204)
    return JSONResponse(project)


async def tasks_collection(request: Request) -> Response:
    pid, _ = _project(request)
    tasks = PROJECT_TASKS[pid]
    if request.method == "GET":
        return JSONResponse(list(tasks.values()))
    data = await read_json_object(request, MAX_BODY)
    title = _text(data, "title", 1, 200)
    if len(tasks) >= MAX_TASKS_PER_PROJECT:
        raise HTTPException(403, "task quota exceeded")
    tid = next(_TASK_IDS)
    task = {"id": tid, "project_id": pid, "title": title}
    tasks[tid] = task
    return JSONResponse(task, status_code=201, headers={"Location": f"/api/projects/{pid}/tasks/{tid}"})


async def task_item(request: Request) -> Response:
    pid, _ = _project(request)
    tid: int = request.path_params["taskId"]
    tasks = PROJECT_TASKS[pid]
    task = tasks.get(tid)  # only this project's tasks: another project's task id is a 404
    if task is None and FAULT == "hierarchy_lax":  # planted: looked up in every project
        task = next((t[tid] for t in PROJECT_TASKS.values() if tid in t), None)
        tasks = PROJECT_TASKS.get(task["project_id"], tasks) if task else tasks
    if task is None:
        raise HTTPException(404, "no such task in this project")
    if request.method == "DELETE":
        del tasks[tid]
        return Response(status_code=204)
    return JSONResponse(task)


async def report(request: Request) -> Response:
    """An 'expensive' computation (SINGLEFLIGHT_WORK_S); single-flight shares it."""
    await asyncio.sleep(SINGLEFLIGHT_WORK_S)
    n = STATS.events["singleflight_computations"]
    topic = request.query_params.get("topic", "sales")[:64]
    return JSONResponse({"topic": topic, "computation": n, "total_cents": sum(i["price_cents"] for i in CATALOG)})


@LIMITER.limit(LIMITED_RATE)
async def limited(request: Request) -> Response:
    admitted = AUDIT.record(client_key(request))  # first: same loop step as the limiter's hit
    STATS.events["limited_admitted"] += 1
    SELF_CHECKS.ran("I-MW-RATELIMIT")
    if admitted > LIMITED_AMOUNT:
        STATS.events["ratelimit_over_admission"] += 1
        return _json(500, {"x-invariant": "I-MW-RATELIMIT",
                           "error": f"{admitted} requests admitted within {LIMITED_PERIOD:g} s, "
                                    f"limit {LIMITED_AMOUNT}"})
    return JSONResponse({"ok": True, "limit": LIMITED_RATE})


async def slow(request: Request) -> Response:
    raw = request.query_params.get("ms", "0")
    if not raw.isascii() or not raw.isdigit() or int(raw[:7]) > 10_000:
        raise HTTPException(400, "'ms' must be an integer 0..10000")
    await asyncio.sleep(int(raw) / 1000)
    return JSONResponse({"slept_ms": int(raw)})


async def upstream(request: Request) -> Response:
    fail = request.query_params.get("fail") in ("1", "true")
    try:
        data = await call_upstream(fail)
    except CircuitBreakerError:
        STATS.events["breaker_short_circuit"] += 1
        retry = max(1, int(UPSTREAM_BREAKER.open_remaining))
        return _json(503, {"error": "circuit open", "breaker": breaker_snapshot()},
                     {"Retry-After": str(retry), "X-Circuit-State": UPSTREAM_BREAKER.state})
    except UpstreamError:
        STATS.events["upstream_failed"] += 1
        return _json(502, {"error": "upstream failed", "breaker": breaker_snapshot()},
                     {"X-Circuit-State": UPSTREAM_BREAKER.state})
    return JSONResponse({**data, "breaker": breaker_snapshot()}, headers={"X-Circuit-State": UPSTREAM_BREAKER.state})


async def panic(request: Request) -> Response:
    raise RuntimeError("deliberate failure for the recovery middleware (secret=do-not-leak)")


async def admin(request: Request) -> Response:
    return JSONResponse({"admin": request.scope.get("admin_user"), "events": dict(STATS.events)})


async def items_echo(request: Request) -> Response:
    """Tells which method and path the app saw (method override / rewrite)."""
    return JSONResponse({"method": request.method, "path": request.url.path,
                         "rewritten_from": request.scope.get("rewritten_from"),
                         "overridden_from": request.scope.get("method_overridden_from")})


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _json(exc.status_code, {"error": exc.detail}, dict(exc.headers or {}))


# --------------------------------------------------------------------------
# ops routes (outside every middleware but the request counter)
# --------------------------------------------------------------------------


async def debug_vars(request: Request) -> Response:
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:
        tasks = 0
    return JSONResponse({
        "sse_open": 0, "ws_open": 0, "tasks": tasks, "requests": STATS.requests,
        "pid": os.getpid(), "uptime_s": round(time.monotonic() - STATS.started, 3),
        "threads": threading.active_count(), "orders": len(ORDERS),
        "idempotency_keys": len(IDEMPOTENCY_STORE), "projects": len(PROJECTS),
        "singleflight_computations": STATS.events["singleflight_computations"],
        "breaker": breaker_snapshot(), "events": dict(STATS.events),
        "self_checks": SELF_CHECKS.snapshot(),
    })


ops_app = Starlette(routes=[
    Route("/debug/vars", debug_vars, methods=["GET"]),
    Route("/echo", EchoEndpoint()),
    Route("/echo/{rest:path}", EchoEndpoint()),
])
ops_app.router.redirect_slashes = False

# --------------------------------------------------------------------------
# composition
# --------------------------------------------------------------------------

main_app = Starlette(
    routes=[
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/me", me, methods=["GET"]),
        Route("/api/catalog", catalog, methods=["GET"]),
        Route("/api/orders", orders_collection, methods=["POST"]),
        Route("/api/orders/{id:int}", order_item, methods=["GET", "PUT", "PATCH", "DELETE"]),
        Route("/api/projects", projects_collection, methods=["POST"]),
        Route("/api/projects/{projectId:int}", project_item, methods=["GET", "DELETE"]),
        Route("/api/projects/{projectId:int}/tasks", tasks_collection, methods=["GET", "POST"]),
        Route("/api/projects/{projectId:int}/tasks/{taskId:int}", task_item, methods=["GET", "DELETE"]),
        Route("/api/items/{name}", items_echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/api/report", report, methods=["GET"]),
        Route("/api/limited", limited, methods=["GET"]),
        Route("/slow", slow, methods=["GET"]),
        Route("/upstream", upstream, methods=["GET"]),
        Route("/panic", panic, methods=["GET"]),
        Route("/admin", admin, methods=["GET"]),
    ],
    middleware=[
        # outermost first
        Middleware(CorrelationIdMiddleware, header_name="X-Request-Id", validator=request_id_ok,
                   generator=lambda: uuid.uuid4().hex),
        Middleware(SecureHeadersMiddleware),
        Middleware(RecoveryMiddleware),
        Middleware(CORSMiddleware, allow_origins=CORS_ORIGINS, allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                   allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id",
                                  "X-HTTP-Method-Override"],
                   expose_headers=["X-Request-Id", "ETag", "Idempotent-Replayed"], max_age=600),
        Middleware(RedirectMiddleware),
        Middleware(RewriteMiddleware),
        Middleware(MethodOverrideMiddleware),
        Middleware(BodyLimitMiddleware),
        Middleware(TimeoutMiddleware),
        Middleware(SlowAPIASGIMiddleware),
        Middleware(BasicAuthMiddleware),
        Middleware(IdempotencyMiddleware),
        Middleware(SingleFlightMiddleware),
        Middleware(ETagMiddleware),
    ],
    exception_handlers={HTTPException: http_error, RateLimitExceeded: rate_limited},
)
main_app.state.limiter = LIMITER
main_app.router.redirect_slashes = False


class Dispatcher:
    """Request counter; /debug/vars and /echo around the middleware stack; health check first."""

    def __init__(self) -> None:
        self.main = HealthCheckMiddleware(main_app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            STATS.requests += 1
            path = route_path(scope)
            if path == "/debug/vars" or path == "/echo" or path.startswith("/echo/"):
                await ops_app(scope, receive, send)
                return
        await self.main(scope, receive, send)


app = Dispatcher()

if __name__ == "__main__":
    sys.exit(main("kitchen_sink", __file__))
