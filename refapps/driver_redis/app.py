"""Reference app ``driver_redis`` for probatorium.

A Starlette app whose state lives in a real Redis server, reached with
redis-py's asyncio client (``redis.asyncio``, a blocking connection pool):

* key/value contract ``PUT/GET/DELETE /kv/{key}`` (plus ``POST /kv``),
* counters (``INCR``), a ``MULTI``/``EXEC`` pipeline route,
* a Redis-backed session store (the cookie holds only a signed session id),
* a Redis rate limiter: an atomic token bucket in Lua, run with ``EVALSHA``
  (``SCRIPT LOAD`` once, loaded again when Redis answers ``NOSCRIPT``).

I-DRV-1: after every write the app reads the value back through the driver
and answers 500 ``{"x-invariant": "I-DRV-1", ...}`` when it differs.

Needs ``REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/0``); without it the app
stops at import with one line on stderr. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import math
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn
from urllib.parse import quote

import redis.asyncio as aioredis
from itsdangerous import BadData, TimestampSigner
from redis.exceptions import NoScriptError, RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

SLUG = "driver_redis"
SERVICE = "redis"

# ==========================================================================
# shared driver-refapp plumbing (the same text in driver_postgres,
# driver_redis and driver_memcached: each refapp folder stays self-contained)
# ==========================================================================

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
MAX_JSON_BODY = 64 * 1024
#: Largest /kv value (413 beyond): memcached's default item limit is 1 MiB.
MAX_VALUE = 256 * 1024
MAX_KEY = 200
MAX_CREDENTIAL = 256

_UNITS = {"s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60,
          "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}


def _die(message: str) -> NoReturn:
    """Fail fast at startup: ONE clear line on stderr, exit status 2."""
    sys.stderr.write(f"{SLUG}: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def _require_env(var: str, service: str) -> str:
    value = os.environ.get(var, "").strip()
    if not value:
        _die(f"{var} is not set; this refapp needs a running {service} "
             f"(probatorium starts it for --refapp {SLUG}; by hand: probatorium services up {service})")
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
        _die(f"REFAPP_RATE_LIMIT={text!r} is not 'N/second|minute|hour|day' or 'off'")
    if capacity < 1:
        _die(f"REFAPP_RATE_LIMIT={text!r}: the bucket needs at least 1 token")
    return capacity, capacity / per


RATE = parse_rate(RATE_LIMIT)
if FAULT not in ("", "corrupt", "corrupt-unchecked"):
    _die(f"REFAPP_FAULT={FAULT!r} is not one of '', 'corrupt', 'corrupt-unchecked'")

SIGNER = TimestampSigner(SECRET_KEY, salt=f"refapp-{SLUG}-session")


class _Stats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests = 0
        self.rate_limited = 0
        self.backend_errors = 0
        self.stopping = False


STATS = _Stats()


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


class InvariantViolation(Exception):
    def __init__(self, kind: str, what: str, detail: dict[str, Any]) -> None:
        super().__init__(what)
        self.kind = kind
        self.what = what
        self.detail = detail


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
    return JSONResponse({"error": f"{SERVICE} unavailable: {type(exc).__name__}: {exc}"[:300]},
                        status_code=503, headers={"Retry-After": "1"})


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="refapp"')
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=headers)


def endpoint(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Wraps a route: backend errors -> 503, I-DRV-1 violations -> 500 tagged JSON.

    Backend errors are answered here instead of propagating, so the engines
    never print a traceback for them (a traceback on stderr is a crash marker).
    """

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            await BACKEND.ready()
            return await fn(request)
        except InvariantViolation as exc:
            return invariant_response(exc)
        except DRIVER_ERRORS as exc:
            return backend_unavailable(exc)

    return wrapper


async def read_body(request: Request, limit: int) -> bytes:
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


async def read_json_object(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type")
    if ctype is not None:
        media = ctype.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise HTTPException(415, "Content-Type must be application/json")
    raw = await read_body(request, MAX_JSON_BODY)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise HTTPException(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "body must be a JSON object")
    return data


def check_text(key: str, value: Any, min_len: int, max_len: int) -> str:
    if not isinstance(value, str):
        raise HTTPException(400, f"'{key}' must be a string")
    if not (min_len <= len(value) <= max_len):
        raise HTTPException(400, f"'{key}' must have {min_len}..{max_len} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPException(400, f"'{key}' is not valid Unicode text") from None
    return value


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
            return SIGNER.unsign(raw, max_age=SESSION_TTL_S).decode("ascii")
        except (BadData, UnicodeDecodeError):
            continue
    return None


async def session_user(request: Request) -> str:
    """The logged-in user (session looked up in the backend); 401 otherwise."""
    sid = signed_session_id(request)
    if sid is not None:
        data = await BACKEND.session_get(sid)
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


# ==========================================================================
# Redis backend (redis-py asyncio)
# ==========================================================================

REDIS_URL = _require_env("REDIS_URL", "redis")
POOL_SIZE = 64
COUNTER_TTL_S = 3600
PIPELINE_TTL_S = 60
MAX_PIPELINE = 100

DRIVER_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)

#: Atomic token bucket. KEYS[1] = bucket hash; ARGV[1] = capacity,
#: ARGV[2] = refill in tokens per second. Uses the server clock (TIME) so
#: every app process shares one notion of time. Returns
#: {allowed 0|1, milliseconds until a token is available, tokens left}.
TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate / 1000)
end
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {allowed, wait_ms, math.floor(tokens)}
"""


def _k(prefix: str, name: str) -> bytes:
    return prefix.encode() + name.encode("utf-8")


class RedisBackend:
    def __init__(self) -> None:
        self.client: aioredis.Redis | None = None
        self._lock: asyncio.Lock | None = None
        self.script_sha: str | None = None
        self.script_loads = 0
        self.noscript_reloads = 0

    async def ready(self) -> None:
        if self.client is not None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.client is not None:
                return
            pool = aioredis.BlockingConnectionPool.from_url(
                REDIS_URL, max_connections=POOL_SIZE, timeout=5, socket_connect_timeout=3, socket_timeout=10)
            client = aioredis.Redis(connection_pool=pool)
            try:
                await client.ping()
                await self._load_script(client)
            except BaseException:
                await client.aclose()
                await pool.disconnect()
                raise
            self.client = client

    @property
    def r(self) -> aioredis.Redis:
        assert self.client is not None
        return self.client

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()
            await client.connection_pool.disconnect()

    async def _load_script(self, client: aioredis.Redis) -> None:
        self.script_sha = await client.script_load(TOKEN_BUCKET_LUA)
        self.script_loads += 1

    # -- rate limiter: EVALSHA, reload on NOSCRIPT ---------------------------
    async def rate_take(self, key: str) -> tuple[bool, float, int]:
        assert RATE is not None
        capacity, per_second = RATE
        bucket = _k("rl:", key)
        args = (repr(capacity), repr(per_second))
        if self.script_sha is None:
            await self._load_script(self.r)
        try:
            result = await self.r.evalsha(self.script_sha, 1, bucket, *args)
        except NoScriptError:
            # the server lost its script cache (restart, SCRIPT FLUSH): load once more
            self.noscript_reloads += 1
            await self._load_script(self.r)
            result = await self.r.evalsha(self.script_sha, 1, bucket, *args)
        allowed, wait_ms, left = (int(x) for x in result)
        return allowed == 1, wait_ms / 1000.0, left

    # -- key/value -------------------------------------------------------------
    async def kv_put(self, key: str, value: bytes) -> bool:
        k = _k("kv:", key)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(k, maybe_corrupt(value), get=True)
            pipe.get(k)
            old, back = await pipe.execute()
        # MULTI/EXEC: nobody else's command runs between our SET and GET, so
        # the comparison is exact even when other clients write the same key.
        if self_check_enabled():
            check_equal("kv_put", key, value, back)
        return old is None

    async def kv_get(self, key: str) -> bytes | None:
        return await self.r.get(_k("kv:", key))

    async def kv_delete(self, key: str) -> bool:
        k = _k("kv:", key)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(k)
            pipe.get(k)
            removed, back = await pipe.execute()
        check_absent("kv_delete", key, back)
        return int(removed) > 0

    # -- sessions -----------------------------------------------------------------
    async def session_create(self, sid: str, data: bytes) -> None:
        k = _k("sess:", sid)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(k, data, ex=SESSION_TTL_S)
            pipe.get(k)
            _, back = await pipe.execute()
        check_equal("session", "sess:" + sid[:6] + "…", data, back)

    async def session_get(self, sid: str) -> dict[str, Any] | None:
        return decode_session(await self.r.get(_k("sess:", sid)))

    async def session_delete(self, sid: str) -> None:
        k = _k("sess:", sid)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(k)
            pipe.get(k)
            _, back = await pipe.execute()
        check_absent("session_delete", "sess:" + sid[:6] + "…", back)

    def debug(self) -> dict[str, Any]:
        return {"script_sha": self.script_sha, "script_loads": self.script_loads,
                "noscript_reloads": self.noscript_reloads, "pool_max": POOL_SIZE}


BACKEND = RedisBackend()

# ==========================================================================
# Redis-only routes: counters (INCR) and a MULTI/EXEC pipeline
# ==========================================================================


def _counter_name(request: Request) -> str:
    name = request.path_params["counter"]
    if not 1 <= len(name.encode("utf-8", "surrogatepass")) <= 100:
        raise HTTPException(400, "counter name must have 1..100 bytes")
    return check_text("counter", name, 1, 100)


@endpoint
async def counter_create(request: Request) -> Response:
    """POST /counters: a new counter at 0 (201 + Location)."""
    name = "c-" + secrets.token_hex(8)
    k = _k("ctr:", name)
    async with BACKEND.r.pipeline(transaction=True) as pipe:
        pipe.set(k, b"0", ex=COUNTER_TTL_S)
        pipe.get(k)
        _, back = await pipe.execute()
    check_equal("counter_create", name, b"0", back)
    location = request.scope.get("root_path", "") + f"/counter/{name}"
    return JSONResponse({"counter": name, "value": 0}, status_code=201, headers={"Location": location})


@endpoint
async def counter_incr(request: Request) -> Response:
    name = _counter_name(request)
    k = _k("ctr:", name)
    async with BACKEND.r.pipeline(transaction=True) as pipe:
        pipe.incr(k)
        pipe.expire(k, COUNTER_TTL_S)
        written, _ = await pipe.execute()
    written = int(written)
    # A separate read: other requests may increment the same counter in
    # between, so the right comparison is "read >= written" (counters only
    # grow: there is no decrement or delete route, and the TTL was just reset).
    raw = await BACKEND.r.get(k)
    read = int(raw) if raw is not None and raw.lstrip(b"-").isdigit() else None
    if read is None or read < written:
        CHECKS.fail("counter_incr", "counter read back lower than the value INCR returned", counter=name,
                    written=written, read=None if raw is None else raw.decode("latin-1")[:40])
    if read > written:
        CHECKS.superseded += 1
    CHECKS.ok("counter_incr")
    return JSONResponse({"counter": name, "value": written})


@endpoint
async def counter_get(request: Request) -> Response:
    name = _counter_name(request)
    raw = await BACKEND.r.get(_k("ctr:", name))
    if raw is None:
        raise HTTPException(404, "no such counter")
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(409, "not a counter") from None
    return JSONResponse({"counter": name, "value": value})


@endpoint
async def pipeline(request: Request) -> Response:
    """POST /pipeline?n=N: one MULTI/EXEC of N SETs, then N GETs, then a DEL, verified."""
    raw_n = request.query_params.get("n", "5")
    if not (raw_n.isascii() and raw_n.isdigit() and 1 <= int(raw_n) <= MAX_PIPELINE):
        raise HTTPException(400, f"n must be an integer 1..{MAX_PIPELINE}")
    n = int(raw_n)
    nonce = secrets.token_hex(8)
    keys = [f"pipe:{nonce}:{i}".encode() for i in range(n)]
    values = [secrets.token_bytes(16 + i % 48) for i in range(n)]
    async with BACKEND.r.pipeline(transaction=True) as pipe:
        for key, value in zip(keys, values, strict=True):
            pipe.set(key, value, ex=PIPELINE_TTL_S)
        for key in keys:
            pipe.get(key)
        pipe.delete(*keys)
        results = await pipe.execute()
    reads = results[n:2 * n]
    for key, value, read in zip(keys, values, reads, strict=True):
        check_equal("pipeline", key.decode(), value, read)
    return JSONResponse({"n": n, "verified": n, "commands": 2 * n + 1, "deleted": int(results[-1])})


EXTRA_ROUTES = [
    Route("/counters", counter_create, methods=["POST"]),
    Route("/counter/{counter}", counter_get, methods=["GET"]),
    Route("/counter/{counter}/incr", counter_incr, methods=["POST"]),
    Route("/pipeline", pipeline, methods=["POST"]),
]


# ==========================================================================
# shared routes: login/session, key/value contract, open endpoints
# ==========================================================================


@endpoint
async def login(request: Request) -> Response:
    data = await read_json_object(request)
    username = check_text("username", data.get("username"), 1, MAX_CREDENTIAL)
    check_text("password", data.get("password"), 1, MAX_CREDENTIAL)
    # any non-empty pair is accepted (contract): the account is created on first login
    old = signed_session_id(request)
    if old is not None:
        await BACKEND.session_delete(old)
    sid = secrets.token_urlsafe(24)
    await BACKEND.session_create(sid, encode_session(username))
    token = SIGNER.sign(sid).decode("ascii")
    response = JSONResponse({"user": username, "token": token})
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_TTL_S, httponly=True, samesite="lax", path="/")
    return response


@endpoint
async def logout(request: Request) -> Response:
    await session_user(request)
    await BACKEND.session_delete(request.state.sid)
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
    await BACKEND.kv_put(key, value)
    return JSONResponse({"key": key, "size": len(value), "created": True}, status_code=201,
                        headers={"Location": _kv_location(request, key)})


@endpoint
async def kv_item(request: Request) -> Response:
    key = kv_key(request)
    if request.method == "PUT":
        value = await read_body(request, MAX_VALUE)
        created = await BACKEND.kv_put(key, value)
        return JSONResponse({"key": key, "size": len(value), "created": created},
                            status_code=201 if created else 200,
                            headers={"Location": _kv_location(request, key)} if created else None)
    if request.method == "DELETE":
        if not await BACKEND.kv_delete(key):
            raise HTTPException(404, "no such key")
        return Response(status_code=204)
    value = await BACKEND.kv_get(key)
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
            await BACKEND.ready()
            allowed, retry_after, remaining = await BACKEND.rate_take(key)
        except DRIVER_ERRORS as exc:
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


guarded_app = Starlette(
    routes=[
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/me", me, methods=["GET"]),
        Route("/kv", kv_create, methods=["POST"]),
        Route("/kv/{key}", kv_item, methods=["GET", "PUT", "DELETE"]),
        *EXTRA_ROUTES,
    ],
    middleware=[Middleware(RateLimitMiddleware)],
    exception_handlers={HTTPException: http_error},
)
guarded_app.router.redirect_slashes = False


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def debug_vars(request: Request) -> Response:
    try:
        all_tasks = asyncio.all_tasks()
    except RuntimeError:
        all_tasks = set()
    body: dict[str, Any] = {
        "sse_open": 0,  # no streaming routes in this refapp
        "ws_open": 0,
        "tasks": len(all_tasks),
        "requests": STATS.requests,
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - STATS.started, 3),
        "threads": threading.active_count(),
        "service": SERVICE,
        "drv_checks": CHECKS.checks,
        "drv_mismatches": CHECKS.mismatches,
        "drv_superseded": CHECKS.superseded,
        "drv_checks_by_kind": dict(CHECKS.by_kind),
        "rate_limit": RATE_LIMIT if RATE is not None else "off",
        "rate_limited": STATS.rate_limited,
        "backend_errors": STATS.backend_errors,
        "fault": FAULT or None,
        "stopping": STATS.stopping,
    }
    body.update(BACKEND.debug())
    return JSONResponse(body)


async def echo(request: Request) -> Response:
    scope = request.scope
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, (bytes, bytearray)) else scope.get("path", "")
    query = scope.get("query_string", b"") or b""
    target = path + ("?" + query.decode("latin-1") if query else "")
    digest = hashlib.sha256()
    length = 0
    try:
        async for chunk in request.stream():
            digest.update(chunk)
            length += len(chunk)
    except ClientDisconnect:
        return Response(status_code=400)
    headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope.get("headers", [])]
    return JSONResponse({"method": scope.get("method"), "target": target, "http_version": scope.get("http_version"),
                         "headers": headers, "body_length": length, "body_sha256": digest.hexdigest()})


class EchoEndpoint:
    """Plain ASGI endpoint so that the Route accepts ANY method."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await echo(Request(scope, receive, send))
        await response(scope, receive, send)


async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI lifespan, by hand: a backend that cannot be reached at startup
    fails the startup with ONE line (Starlette's own lifespan handler would
    hand the engine a whole traceback). Engines without lifespan (daphne)
    connect on the first request instead."""
    message = await receive()
    if message["type"] != "lifespan.startup":
        return
    try:
        await BACKEND.ready()
    except DRIVER_ERRORS as exc:
        line = f"{SLUG}: cannot reach {SERVICE} at startup: {type(exc).__name__}: {exc}"
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        await send({"type": "lifespan.startup.failed", "message": line})
        return
    await send({"type": "lifespan.startup.complete"})
    message = await receive()  # lifespan.shutdown
    STATS.stopping = True
    with contextlib.suppress(Exception):
        await BACKEND.close()
    await send({"type": "lifespan.shutdown.complete"})


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

OPEN_PATHS = frozenset({"/healthz", "/debug/vars", "/echo"})


def route_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):]
    return path


class Dispatcher:
    """Counts requests; sends the open paths around the rate limiter."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(scope, receive, send)
            return
        if scope["type"] == "http":
            STATS.requests += 1
        path = route_path(scope)
        if path in OPEN_PATHS or path.startswith("/echo/"):
            await open_app(scope, receive, send)
        else:
            await guarded_app(scope, receive, send)


app = Dispatcher()

# ==========================================================================
# stand-alone runner: python app.py [--port N] [--engine ...]
# ==========================================================================

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINES = ("uvicorn", "uvicorn-h11", "hypercorn", "granian", "daphne")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    """Run the app under an engine's CLI as a child (signals forwarded) and
    print ``ready addr=HOST:PORT`` once the port accepts connections."""
    import subprocess

    parser = argparse.ArgumentParser(description=f"refapp {SLUG}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--engine", choices=ENGINES, default="uvicorn")
    args = parser.parse_args(argv)
    host, port = args.host, args.port or _free_port(args.host)
    py = sys.executable
    if args.engine in ("uvicorn", "uvicorn-h11"):
        loop, proto = ("uvloop", "httptools") if args.engine == "uvicorn" else ("asyncio", "h11")
        cmd = [py, "-m", "uvicorn", "--host", host, "--port", str(port), "--loop", loop, "--http", proto,
               "--no-access-log", "--log-level", "warning", "app:app"]
    elif args.engine == "hypercorn":
        cmd = [py, "-m", "hypercorn", "--workers", "0", "--bind", f"{host}:{port}", "app:app"]
    elif args.engine == "granian":
        cmd = [py, "-m", "granian", "--interface", "asgi", "--host", host, "--port", str(port), "--workers", "1",
               "--no-access-log", "--log-level", "warning", "app:app"]
    else:
        cmd = [py, "-m", "daphne", "-b", host, "-p", str(port), "-v", "0", "app:app"]
    env = dict(os.environ)
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    child = subprocess.Popen(cmd, cwd=HERE, env=env)

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    deadline = time.monotonic() + 30
    while child.poll() is None and time.monotonic() < deadline:
        if _port_open(host, port):
            print(f"ready addr={host}:{port}", flush=True)
            break
        time.sleep(0.05)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
