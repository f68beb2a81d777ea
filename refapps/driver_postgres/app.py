"""Reference app ``driver_postgres`` for probatorium.

A Starlette app whose state lives in a real PostgreSQL server, reached with
asyncpg through a connection pool:

* key/value contract ``PUT/GET/DELETE /kv/{key}`` (plus ``POST /kv``),
* a small relational resource ``/api/items``: create (201 + Location), read,
  update inside a transaction (``SELECT ... FOR UPDATE`` then ``UPDATE``),
  delete, and a range read ``GET /api/items?from=&to=``,
* a PostgreSQL-backed session store (the cookie holds only a signed id).

Tables are created at startup (idempotent, serialised by an advisory lock so
several app processes may start against one database at once).

I-DRV-1: after every write the app reads the value back through the driver
and answers 500 ``{"x-invariant": "I-DRV-1", ...}`` when it differs.

Needs ``DATABASE_URL`` (``postgresql://user@host:port/db``); without it the
app stops at import with one line on stderr. See README.md.
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
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn
from urllib.parse import quote

import asyncpg
from itsdangerous import BadData, TimestampSigner
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

SLUG = "driver_postgres"
SERVICE = "postgres"

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
# PostgreSQL backend (asyncpg pool)
# ==========================================================================

DATABASE_URL = _require_env("DATABASE_URL", "postgres")
POOL_MIN = 2
POOL_MAX = 20
COMMAND_TIMEOUT_S = 10.0
MAX_ITEMS_PER_OWNER = 1000
MAX_RANGE = 100
MAX_ITEM_NAME = 200
MAX_QTY = 1_000_000_000
#: Rate-limit buckets kept in process memory (see LocalBuckets).
MAX_BUCKETS = 100_000

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)

SCHEMA_LOCK_ID = 0x70726F62  # "prob": advisory lock serialising CREATE ... IF NOT EXISTS
SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS drv_kv_rev;
CREATE TABLE IF NOT EXISTS drv_kv (
    key        text PRIMARY KEY,
    value      bytea NOT NULL,
    rev        bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS drv_sessions (
    sid        text PRIMARY KEY,
    data       bytea NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS drv_sessions_expires ON drv_sessions (expires_at);
CREATE TABLE IF NOT EXISTS drv_items (
    id         bigserial PRIMARY KEY,
    owner      text NOT NULL,
    name       text NOT NULL,
    qty        bigint NOT NULL,
    version    integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS drv_items_owner_id ON drv_items (owner, id);
"""


class LocalBuckets:
    """Token buckets in process memory (the app runs one worker per server).

    PostgreSQL is not a good place for a per-request counter, and the point of
    this refapp is the relational driver, so its rate limiter is a plain
    in-process token bucket with the same REFAPP_RATE_LIMIT knob as the
    Redis and memcached refapps (which keep their buckets in the backend).
    """

    def __init__(self) -> None:
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> tuple[bool, float, int]:
        assert RATE is not None
        capacity, per_second = RATE
        now = time.monotonic()
        tokens, ts = self.buckets.pop(key, (capacity, now))
        tokens = min(capacity, tokens + (now - ts) * per_second)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self.buckets[key] = (tokens, now)
        while len(self.buckets) > MAX_BUCKETS:
            self.buckets.popitem(last=False)
        return allowed, 0.0 if allowed else (1 - tokens) / per_second, int(tokens)


class PostgresBackend:
    def __init__(self) -> None:
        self.pool: asyncpg.Pool | None = None
        self._lock: asyncio.Lock | None = None
        self.server_version = ""
        self.buckets = LocalBuckets()
        self.logins = 0

    async def ready(self) -> None:
        if self.pool is not None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.pool is not None:
                return
            pool = await asyncpg.create_pool(DATABASE_URL, min_size=POOL_MIN, max_size=POOL_MAX,
                                             command_timeout=COMMAND_TIMEOUT_S, timeout=5)
            try:
                async with pool.acquire() as con:
                    async with con.transaction():
                        await con.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_ID)
                        await con.execute(SCHEMA)
                    self.server_version = str(await con.fetchval("SHOW server_version"))
            except BaseException:
                await pool.close()
                raise
            self.pool = pool

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None
        return self.pool

    async def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            await asyncio.wait_for(pool.close(), 5)

    async def rate_take(self, key: str) -> tuple[bool, float, int]:
        return self.buckets.take(key)

    # -- key/value -------------------------------------------------------------
    async def kv_put(self, key: str, value: bytes) -> bool:
        stored = maybe_corrupt(value)
        async with self.db.acquire() as con:
            async with con.transaction():
                # Writers of one key are serialised by an advisory lock taken
                # before anything else, so revs (nextval) grow in commit order
                # for that key and the reads below can be compared exactly.
                # (Without it, an INSERT that waited on a concurrent DELETE
                # commits a rev drawn before that DELETE.)
                await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "kv:" + key)
                row = await con.fetchrow(
                    "INSERT INTO drv_kv (key, value, rev) VALUES ($1, $2, nextval('drv_kv_rev')) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, rev = nextval('drv_kv_rev'), "
                    "updated_at = now() RETURNING rev, (xmax = 0) AS inserted", key, stored)
                # the key's lock is held until commit: this read is exact
                inside = await con.fetchval("SELECT value FROM drv_kv WHERE key = $1", key)
                if self_check_enabled():
                    check_equal("kv_put", key, value, inside)
        if self_check_enabled():
            # after COMMIT, through the pool (maybe another connection): the
            # row must carry our value unless a later write (higher rev) or a
            # delete replaced it meanwhile
            after = await self.db.fetchrow("SELECT value, rev FROM drv_kv WHERE key = $1", key)
            if after is not None and after["rev"] == row["rev"]:
                check_equal("kv_put_committed", key, value, after["value"])
            elif after is not None and after["rev"] < row["rev"]:
                CHECKS.fail("kv_put_committed", "kv_put_committed: an older revision is visible after commit",
                            key=key, rev_written=row["rev"], rev_read=after["rev"])
            else:
                CHECKS.superseded += 1
                CHECKS.ok("kv_put_committed")
        return bool(row["inserted"])

    async def kv_get(self, key: str) -> bytes | None:
        return await self.db.fetchval("SELECT value FROM drv_kv WHERE key = $1", key)

    async def kv_delete(self, key: str) -> bool:
        async with self.db.acquire() as con:
            async with con.transaction():
                await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "kv:" + key)
                rev = await con.fetchval("DELETE FROM drv_kv WHERE key = $1 RETURNING rev", key)
                check_absent("kv_delete", key, await con.fetchval("SELECT value FROM drv_kv WHERE key = $1", key))
        if rev is not None:
            after = await self.db.fetchrow("SELECT value, rev FROM drv_kv WHERE key = $1", key)
            if after is not None and after["rev"] <= rev:
                CHECKS.fail("kv_delete_committed", "kv_delete_committed: the deleted revision is visible after commit",
                            key=key, rev_deleted=rev, rev_read=after["rev"])
            if after is not None:
                CHECKS.superseded += 1  # written again since (a later revision)
            CHECKS.ok("kv_delete_committed")
        return rev is not None

    # -- sessions -----------------------------------------------------------------
    async def session_create(self, sid: str, data: bytes) -> None:
        self.logins += 1
        if self.logins % 500 == 0:  # expired sessions are swept now and then
            await self.db.execute("DELETE FROM drv_sessions WHERE expires_at < now()")
        await self.db.execute(
            "INSERT INTO drv_sessions (sid, data, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))",
            sid, data, float(SESSION_TTL_S))
        back = await self.db.fetchval("SELECT data FROM drv_sessions WHERE sid = $1", sid)
        check_equal("session", "sess:" + sid[:6] + "…", data, back)

    async def session_get(self, sid: str) -> dict[str, Any] | None:
        return decode_session(await self.db.fetchval(
            "SELECT data FROM drv_sessions WHERE sid = $1 AND expires_at > now()", sid))

    async def session_delete(self, sid: str) -> None:
        await self.db.execute("DELETE FROM drv_sessions WHERE sid = $1", sid)
        back = await self.db.fetchval("SELECT data FROM drv_sessions WHERE sid = $1", sid)
        check_absent("session_delete", "sess:" + sid[:6] + "…", back)

    def debug(self) -> dict[str, Any]:
        pool = self.pool
        return {"server_version": self.server_version, "pool_max": POOL_MAX,
                "pool_size": pool.get_size() if pool is not None else 0,
                "pool_idle": pool.get_idle_size() if pool is not None else 0,
                "rate_buckets": len(self.buckets.buckets)}


BACKEND = PostgresBackend()

# ==========================================================================
# relational resource: /api/items (session required, namespaced by owner)
# ==========================================================================

ITEM_COLUMNS = "id, name, qty, version"


def _item(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "qty": row["qty"], "version": row["version"]}


def _item_fields(data: dict[str, Any]) -> tuple[str, int]:
    name = check_text("name", data.get("name"), 1, MAX_ITEM_NAME)
    if "\x00" in name:
        raise HTTPException(400, "'name' must not contain NUL")  # PostgreSQL text cannot hold it
    qty = data.get("qty", 0)
    if not isinstance(qty, int) or isinstance(qty, bool) or not 0 <= qty <= MAX_QTY:
        raise HTTPException(400, f"'qty' must be an integer 0..{MAX_QTY}")
    return name, qty


def _check_item(kind: str, expected: dict[str, Any], row: asyncpg.Record | None) -> None:
    got = _item(row) if row is not None else None
    if got == expected:
        CHECKS.ok(kind)
        return
    CHECKS.fail(kind, f"{kind}: item read back differs from the item written", item_id=expected["id"],
                written=expected, read=got)


def _int_query(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.lstrip("-").isdigit() and len(raw) < 19):
        raise HTTPException(400, f"'{name}' must be an integer")
    return int(raw)


@endpoint
async def items_collection(request: Request) -> Response:
    owner = await session_user(request)
    if request.method == "POST":
        name, qty = _item_fields(await read_json_object(request))
        async with BACKEND.db.acquire() as con:
            async with con.transaction():
                # serialise one owner's creates so the quota holds under concurrency
                await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", owner)
                count = await con.fetchval("SELECT count(*) FROM drv_items WHERE owner = $1", owner)
                if count >= MAX_ITEMS_PER_OWNER:
                    raise HTTPException(403, "item quota exceeded")
                row = await con.fetchrow(
                    f"INSERT INTO drv_items (owner, name, qty) VALUES ($1, $2, $3) RETURNING {ITEM_COLUMNS}",
                    owner, name, qty)
        item = _item(row)
        # after COMMIT: nobody knows the new id yet, so the read is exact
        _check_item("item_create", item, await BACKEND.db.fetchrow(
            f"SELECT {ITEM_COLUMNS} FROM drv_items WHERE id = $1 AND owner = $2", item["id"], owner))
        location = request.scope.get("root_path", "") + f"/api/items/{item['id']}"
        return JSONResponse(item, status_code=201, headers={"Location": location})
    lo, hi = _int_query(request, "from"), _int_query(request, "to")
    if lo is not None and hi is not None and lo > hi:
        raise HTTPException(400, "'from' must not be greater than 'to'")
    rows = await BACKEND.db.fetch(
        f"SELECT {ITEM_COLUMNS} FROM drv_items WHERE owner = $1 AND ($2::bigint IS NULL OR id >= $2) "
        "AND ($3::bigint IS NULL OR id <= $3) ORDER BY id LIMIT $4", owner, lo, hi, MAX_RANGE)
    return JSONResponse([_item(r) for r in rows])


@endpoint
async def item_detail(request: Request) -> Response:
    owner = await session_user(request)
    item_id: int = request.path_params["id"]
    if not 0 < item_id < 2**63:
        raise HTTPException(404, "no such item")
    if request.method == "GET":
        row = await BACKEND.db.fetchrow(
            f"SELECT {ITEM_COLUMNS} FROM drv_items WHERE id = $1 AND owner = $2", item_id, owner)
        if row is None:
            raise HTTPException(404, "no such item")
        return JSONResponse(_item(row))
    if request.method == "DELETE":
        async with BACKEND.db.acquire() as con:
            async with con.transaction():
                gone = await con.fetchval("DELETE FROM drv_items WHERE id = $1 AND owner = $2 RETURNING id",
                                          item_id, owner)
        if gone is None:
            raise HTTPException(404, "no such item")
        back = await BACKEND.db.fetchval("SELECT id FROM drv_items WHERE id = $1", item_id)
        if back is not None:
            CHECKS.fail("item_delete", "item_delete: the item is still there after commit", item_id=item_id)
        CHECKS.ok("item_delete")
        return Response(status_code=204)
    # PUT: update in a transaction (lock the row, change it, read it back)
    data = await read_json_object(request)
    name, qty = _item_fields(data)
    async with BACKEND.db.acquire() as con:
        async with con.transaction():
            current = await con.fetchrow(
                "SELECT version FROM drv_items WHERE id = $1 AND owner = $2 FOR UPDATE", item_id, owner)
            if current is None:
                raise HTTPException(404, "no such item")
            row = await con.fetchrow(
                f"UPDATE drv_items SET name = $3, qty = $4, version = version + 1, updated_at = now() "
                f"WHERE id = $1 AND owner = $2 RETURNING {ITEM_COLUMNS}", item_id, owner, name, qty)
            item = _item(row)
            if item["version"] != current["version"] + 1 or item["name"] != name or item["qty"] != qty:
                CHECKS.fail("item_update", "item_update: UPDATE ... RETURNING differs from what was set",
                            item_id=item_id, written={"name": name, "qty": qty}, read=item)
            _check_item("item_update", item, await con.fetchrow(
                f"SELECT {ITEM_COLUMNS} FROM drv_items WHERE id = $1", item_id))
    # after COMMIT: exact unless a later update (higher version) or a delete came in between
    after = await BACKEND.db.fetchrow(f"SELECT {ITEM_COLUMNS} FROM drv_items WHERE id = $1", item_id)
    if after is not None and after["version"] == item["version"]:
        _check_item("item_update_committed", item, after)
    elif after is not None and after["version"] < item["version"]:
        CHECKS.fail("item_update_committed", "item_update_committed: an older version is visible after commit",
                    item_id=item_id, written=item, read=_item(after))
    else:
        CHECKS.superseded += 1
        CHECKS.ok("item_update_committed")
    return JSONResponse(item)


EXTRA_ROUTES = [
    Route("/api/items", items_collection, methods=["GET", "POST"]),
    Route("/api/items/{id:int}", item_detail, methods=["GET", "PUT", "DELETE"]),
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
