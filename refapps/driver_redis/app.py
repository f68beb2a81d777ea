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

import asyncio
import os
import secrets
import sys
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError
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
    self_check_enabled,
)
from refapp_common.runner import main  # noqa: E402

SLUG = "driver_redis"
SERVICE = "redis"
driver.configure(SLUG, SERVICE)

# ==========================================================================
# Redis backend (redis-py asyncio)
# ==========================================================================

REDIS_URL = driver.require_env("REDIS_URL")
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
        assert driver.RATE is not None
        capacity, per_second = driver.RATE
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


app = driver.build_app(BACKEND, DRIVER_ERRORS, EXTRA_ROUTES)

if __name__ == "__main__":
    sys.exit(main(SLUG, __file__))
