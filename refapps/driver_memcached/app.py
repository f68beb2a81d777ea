"""Reference app ``driver_memcached`` for probatorium.

A Starlette app whose state lives in a real memcached server, reached with
``aiomcache`` (a maintained pure-Python asyncio memcached client that speaks
the text protocol, including ``gets``/``cas``):

* key/value contract ``PUT/GET/DELETE /kv/{key}`` (plus ``POST /kv``) and a
  multiget ``GET /kv?keys=a,b``,
* a memcached-backed session store (the cookie holds only a signed id),
* a rate limiter that is a CAS-loop token bucket (``gets`` + ``cas``,
  retried when another request changed the bucket in between).

I-DRV-1: after every write the app reads the value back through the driver
and answers 500 ``{"x-invariant": "I-DRV-1", ...}`` when it differs.

Needs ``MEMCACHED_ADDR`` (``HOST:PORT``); without it the app stops at import
with one line on stderr. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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

import aiomcache
import aiomcache.exceptions
from itsdangerous import BadData, TimestampSigner
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

SLUG = "driver_memcached"
SERVICE = "memcached"

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
# memcached backend (aiomcache)
# ==========================================================================


def _parse_addr(raw: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        _die(f"MEMCACHED_ADDR={raw!r} is not HOST:PORT")
    return host, int(port)


MEMCACHED_HOST, MEMCACHED_PORT = _parse_addr(_require_env("MEMCACHED_ADDR", "memcached"))
POOL_SIZE = 32
#: Every memcached call gets this long (aiomcache itself has no timeouts).
OP_TIMEOUT_S = 10.0
#: CAS attempts of one rate-limit decision before giving up (answered as 429).
MAX_CAS_ATTEMPTS = 50
MAX_MULTIGET = 50


class BackendRefused(Exception):
    """memcached answered a storage command with something other than STORED."""


DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    aiomcache.exceptions.ClientException, BackendRefused, OSError, asyncio.TimeoutError, EOFError,
    asyncio.IncompleteReadError)


def _mkey(prefix: str, name: str) -> bytes:
    """A memcached key for `name`: printable ASCII without spaces, <= 250 bytes.

    Names that are not (spaces, non-ASCII, control characters, too long) are
    replaced by their SHA-256 under a different prefix, so the two forms can
    never collide.
    """
    raw = name.encode("utf-8", "surrogatepass")
    if len(prefix) + len(raw) <= 250 and all(0x21 <= b <= 0x7E for b in raw):
        return prefix.encode() + raw
    return prefix.rstrip(":").encode() + b"#:" + hashlib.sha256(raw).hexdigest().encode()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Marks a shielded command's exception as seen: when its request was gone
    before it failed, nobody awaits it, and asyncio would otherwise log
    "Task exception was never retrieved" with a traceback on stderr."""
    if not task.cancelled():
        task.exception()


class KeyLocks:
    """Per-key asyncio locks: the app's own writes to one key are serialised,
    so its read-back after a write (memcached has no transactions) is exact."""

    def __init__(self) -> None:
        self._locks: dict[bytes, list[Any]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: bytes):
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[key]


class MemcachedBackend:
    def __init__(self) -> None:
        self.client: aiomcache.Client | None = None
        self._lock: asyncio.Lock | None = None
        self.keys = KeyLocks()
        self.buckets = KeyLocks()
        self.version = ""
        self.cas_retries = 0
        self.cas_exhausted = 0
        self.bucket_writes = 0

    async def _op(self, coro: Awaitable[Any]) -> Any:
        # aiomcache releases a connection back to its pool even when the
        # calling task is cancelled halfway through a command, which would
        # leave an unread reply on it for the next user. Shielding lets every
        # command finish (so the connection stays in step) whatever happens
        # to the request, and bounds it with a timeout.
        task = asyncio.ensure_future(coro)
        task.add_done_callback(_retrieve)
        return await asyncio.wait_for(asyncio.shield(task), OP_TIMEOUT_S)

    async def ready(self) -> None:
        if self.client is not None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.client is not None:
                return
            client = aiomcache.Client(MEMCACHED_HOST, MEMCACHED_PORT, pool_size=POOL_SIZE, pool_minsize=1)
            try:
                version = await self._op(client.version())
            except BaseException:
                await client.close()
                raise
            self.version = bytes(version).decode("latin-1") if isinstance(version, (bytes, bytearray)) else str(version)
            self.client = client

    @property
    def mc(self) -> aiomcache.Client:
        assert self.client is not None
        return self.client

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.close()

    async def _set(self, key: bytes, value: bytes, exptime: int = 0) -> None:
        if not await self._op(self.mc.set(key, value, exptime=exptime)):
            raise BackendRefused(f"set {key[:40]!r} was not stored")

    # -- rate limiter: CAS-loop token bucket -----------------------------------
    async def rate_take(self, key: str) -> tuple[bool, float, int]:
        assert RATE is not None
        capacity, per_second = RATE
        k = _mkey("rl:", key)
        # Requests of this process take turns per bucket (a hot key would
        # otherwise make N concurrent requests retry O(N^2) times); the CAS
        # loop is what keeps the bucket right against OTHER processes that
        # share the memcached server.
        async with self.buckets.hold(k):
            return await self._take(k, capacity, per_second)

    async def _take(self, k: bytes, capacity: float, per_second: float) -> tuple[bool, float, int]:
        ttl = int(math.ceil(capacity / per_second)) + 60
        for _attempt in range(MAX_CAS_ATTEMPTS):
            now = time.time()
            raw, token = await self._op(self.mc.gets(k))
            if raw is None:
                left = capacity - 1
                if await self._op(self.mc.add(k, f"{left!r} {now!r}".encode(), exptime=ttl)):
                    self.bucket_writes += 1
                    return True, 0.0, int(left)
                self.cas_retries += 1  # another request created it first
                continue
            try:
                tokens_s, ts_s = raw.decode("ascii").split()
                tokens, ts = float(tokens_s), float(ts_s)
            except (UnicodeDecodeError, ValueError):
                tokens, ts = capacity, now  # unreadable: start a full bucket
            tokens = min(capacity, tokens + max(0.0, now - ts) * per_second)
            if tokens < 1:
                # nothing to take: no write needed, the refill is computed
                # from the stored timestamp next time
                return False, (1 - tokens) / per_second, 0
            left = tokens - 1
            if await self._op(self.mc.cas(k, f"{left!r} {now!r}".encode(), token, exptime=ttl)):
                self.bucket_writes += 1
                return True, 0.0, int(left)
            self.cas_retries += 1  # EXISTS (changed meanwhile) or NOT_FOUND (expired): read again
        self.cas_exhausted += 1
        return False, 0.05, 0

    # -- key/value -------------------------------------------------------------
    async def kv_put(self, key: str, value: bytes) -> bool:
        k = _mkey("kv:", key)
        async with self.keys.hold(k):
            stored = maybe_corrupt(value)
            created = bool(await self._op(self.mc.add(k, stored)))
            if not created:
                await self._set(k, stored)
            if self_check_enabled():
                check_equal("kv_put", key, value, await self._op(self.mc.get(k)))
        return created

    async def kv_get(self, key: str) -> bytes | None:
        return await self._op(self.mc.get(_mkey("kv:", key)))

    async def kv_multiget(self, keys: list[str]) -> list[bytes | None]:
        return list(await self._op(self.mc.multi_get(*(_mkey("kv:", key) for key in keys))))

    async def kv_delete(self, key: str) -> bool:
        k = _mkey("kv:", key)
        async with self.keys.hold(k):
            existed = bool(await self._op(self.mc.delete(k)))
            check_absent("kv_delete", key, await self._op(self.mc.get(k)))
        return existed

    # -- sessions -----------------------------------------------------------------
    async def session_create(self, sid: str, data: bytes) -> None:
        k = _mkey("sess:", sid)
        await self._set(k, data, exptime=SESSION_TTL_S)
        check_equal("session", "sess:" + sid[:6] + "…", data, await self._op(self.mc.get(k)))

    async def session_get(self, sid: str) -> dict[str, Any] | None:
        return decode_session(await self._op(self.mc.get(_mkey("sess:", sid))))

    async def session_delete(self, sid: str) -> None:
        k = _mkey("sess:", sid)
        await self._op(self.mc.delete(k))
        check_absent("session_delete", "sess:" + sid[:6] + "…", await self._op(self.mc.get(k)))

    def debug(self) -> dict[str, Any]:
        return {"memcached_version": self.version, "cas_retries": self.cas_retries,
                "cas_exhausted": self.cas_exhausted, "bucket_writes": self.bucket_writes,
                "pool_max": POOL_SIZE, "key_locks": len(self.keys._locks)}


BACKEND = MemcachedBackend()

# ==========================================================================
# memcached-only route: multiget
# ==========================================================================


@endpoint
async def kv_multiget(request: Request) -> Response:
    """GET /kv?keys=a,b: one ``get`` command for several keys."""
    raw = request.query_params.get("keys")
    if raw is None or raw == "":
        raise HTTPException(400, "query parameter 'keys' (comma-separated) is required")
    keys = list(dict.fromkeys(raw.split(",")))
    if len(keys) > MAX_MULTIGET:
        raise HTTPException(400, f"at most {MAX_MULTIGET} keys")
    for key in keys:
        if not 1 <= len(key.encode("utf-8", "surrogatepass")) <= MAX_KEY:
            raise HTTPException(400, f"every key must have 1..{MAX_KEY} bytes")
        check_text("keys", key, 1, MAX_KEY)
    found = await BACKEND.kv_multiget(keys)
    values: dict[str, str] = {}
    values_b64: dict[str, str] = {}
    missing: list[str] = []
    for key, value in zip(keys, found, strict=True):
        if value is None:
            missing.append(key)
            continue
        try:
            values[key] = value.decode("utf-8")
        except UnicodeDecodeError:
            values_b64[key] = base64.b64encode(value).decode("ascii")
    return JSONResponse({"values": values, "values_b64": values_b64, "missing": missing})


EXTRA_ROUTES = [
    Route("/kv", kv_multiget, methods=["GET"]),
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
