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

import asyncio
import base64
import contextlib
import hashlib
import math
import os
import sys
import time
from collections.abc import Awaitable
from typing import Any

import aiomcache
import aiomcache.exceptions
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # refapps/: refapp_common
from refapp_common import driver  # noqa: E402
from refapp_common.driver import (  # noqa: E402
    MAX_KEY,
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

SLUG = "driver_memcached"
SERVICE = "memcached"
driver.configure(SLUG, SERVICE)

# ==========================================================================
# memcached backend (aiomcache)
# ==========================================================================


def _parse_addr(raw: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        driver.die(f"MEMCACHED_ADDR={raw!r} is not HOST:PORT")
    return host, int(port)


MEMCACHED_HOST, MEMCACHED_PORT = _parse_addr(driver.require_env("MEMCACHED_ADDR"))
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
        assert driver.RATE is not None
        capacity, per_second = driver.RATE
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


app = driver.build_app(BACKEND, DRIVER_ERRORS, EXTRA_ROUTES)

if __name__ == "__main__":
    sys.exit(main(SLUG, __file__))
