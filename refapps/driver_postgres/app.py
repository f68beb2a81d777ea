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

import asyncio
import os
import sys
import time
from collections import OrderedDict
from typing import Any

import asyncpg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # refapps/: refapp_common
from refapp_common import driver  # noqa: E402
from refapp_common.driver import (  # noqa: E402
    CHECKS,
    SESSION_TTL_S,
    check_absent,
    check_equal,
    check_text,
    decode_session,
    endpoint,
    maybe_corrupt,
    read_json_object,
    self_check_enabled,
    session_user,
)
from refapp_common.runner import main  # noqa: E402

SLUG = "driver_postgres"
SERVICE = "postgres"
driver.configure(SLUG, SERVICE)

# ==========================================================================
# PostgreSQL backend (asyncpg pool)
# ==========================================================================

DATABASE_URL = driver.require_env("DATABASE_URL")
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
        assert driver.RATE is not None
        capacity, per_second = driver.RATE
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


app = driver.build_app(BACKEND, DRIVER_ERRORS, EXTRA_ROUTES)

if __name__ == "__main__":
    sys.exit(main(SLUG, __file__))
