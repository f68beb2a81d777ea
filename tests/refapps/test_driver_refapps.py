"""End-to-end tests of the three driver refapps against REAL services.

PostgreSQL, Redis and memcached are started once for the module by
probatorium's ``ServiceManager`` (host binaries, throw-away directories,
loopback ports); every refapp is started by the real launcher under a real
engine (uvicorn and hypercorn by default; ``PROBATORIUM_REFAPP_ENGINES=all``
runs all five) and driven over TCP.

Checked per refapp × engine: the key/value contract (PUT/GET/DELETE/404 with
exact bytes), login → session in the backend → /me → logout, the I-DRV-1
self-check counters in /debug/vars, the refapp's own routes (items, counters,
pipeline, multiget), and concurrent writes to one key never raising a false
I-DRV-1. Once per refapp: the rate limiter answers 429 when configured tiny,
the fault knob makes the self-check answer 500 ``x-invariant: I-DRV-1``, and a
missing service address stops the app at once with one line on stderr.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probatorium.services import ServiceManager
from probatorium.targets.launcher import RunningTarget, TargetSpec, start_target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parents[2]
REFAPPS = ("driver_postgres", "driver_redis", "driver_memcached")
SERVICE = {"driver_postgres": "postgres", "driver_redis": "redis", "driver_memcached": "memcached"}
ENV_VAR = {"driver_postgres": "DATABASE_URL", "driver_redis": "REDIS_URL", "driver_memcached": "MEMCACHED_ADDR"}
ALL_ENGINES = ("uvicorn", "uvicorn-h11", "hypercorn", "granian", "daphne")
_requested = os.environ.get("PROBATORIUM_REFAPP_ENGINES", "uvicorn,hypercorn").strip()
ENGINES = ALL_ENGINES if _requested == "all" else tuple(e.strip() for e in _requested.split(",") if e.strip())

_missing = ServiceManager(reap_stale=False).unavailable(["postgres", "redis", "memcached"])
# CI sets PROBATORIUM_REQUIRE_SERVICES=1: there a missing package fails instead of skipping.
if _missing and not os.environ.get("PROBATORIUM_REQUIRE_SERVICES"):
    pytestmark.append(pytest.mark.skip(reason="; ".join(_missing.values())))


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, str]]:
    state = Path(tempfile.mkdtemp(prefix="probatorium-test-drv-state-"))
    with ServiceManager(state_dir=state, reap_stale=False) as manager:
        manager.up(["postgres", "redis", "memcached"])
        yield manager.env()
    subprocess.run(["rm", "-rf", str(state)], check=False)


def _start(refapp: str, engine: str, env: dict[str, str], tmp_path: Path, **extra: str) -> RunningTarget:
    full = {ENV_VAR[refapp]: env[ENV_VAR[refapp]], "REFAPP_RATE_LIMIT": "1000/second", "REFAPP_FAULT": ""}
    full.update(extra)
    return start_target(TargetSpec(kind="refapp", refapp=refapp, engine=engine, env=full),
                        tmp_path / f"{refapp}-{engine}")


class Client:
    """Tiny HTTP/1.1 client with a cookie jar (one connection per request)."""

    def __init__(self, target: RunningTarget) -> None:
        self.host, self.port = target.host, target.port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        try:
            h = dict(headers or {})
            if ctype:
                h["Content-Type"] = ctype
            if self.cookies:
                h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            for name, value in resp.getheaders():
                if name.lower() == "set-cookie":
                    pair = value.split(";", 1)[0]
                    k, _, v = pair.partition("=")
                    if v in ("", '""') or "max-age=0" in value.lower():
                        self.cookies.pop(k.strip(), None)
                    else:
                        self.cookies[k.strip()] = v.strip()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def json(self, method: str, path: str, doc: Any | None = None) -> tuple[int, Any]:
        body = json.dumps(doc).encode() if doc is not None else None
        status, _, data = self.request(method, path, body, "application/json" if body is not None else None)
        return status, json.loads(data) if data else None

    def debug(self) -> dict[str, Any]:
        status, doc = self.json("GET", "/debug/vars")
        assert status == 200
        return doc


def _stop(target: RunningTarget) -> str:
    target.stop()
    return target.stderr_path.read_text("utf-8", "replace")


def _assert_no_crash(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr[-3000:]


# --------------------------------------------------------------------------
# the key/value contract, sessions, self-check counters, refapp routes


def _kv_contract(c: Client, tag: str) -> None:
    key = f"/kv/t-{tag}-{time.time_ns()}"
    assert c.request("GET", key)[0] == 404
    assert c.request("DELETE", key)[0] == 404
    status, headers, body = c.request("PUT", key, b"first value", "text/plain")
    assert status == 201, body
    assert json.loads(body)["created"] is True
    binary = bytes(range(256)) * 4 + b"\x00\r\n"
    status, _, body = c.request("PUT", key, binary, "application/octet-stream")
    assert status == 200, body
    assert json.loads(body) == {"key": key[4:], "size": len(binary), "created": False}
    status, headers, body = c.request("GET", key)
    assert (status, body) == (200, binary)
    assert c.request("PUT", key, b"", "text/plain")[0] == 200  # the empty value is a value
    assert c.request("GET", key)[:3:2] == (200, b"")
    assert c.request("DELETE", key)[0] == 204
    assert c.request("GET", key)[0] == 404
    assert c.request("DELETE", key)[0] == 404
    # keys are path segments: percent-encoded spaces and non-ASCII work
    odd = "/kv/" + "a%20b%C3%A9-" + tag
    assert c.request("PUT", odd, b"odd", "text/plain")[0] == 201
    assert c.request("GET", odd)[2] == b"odd"
    assert c.request("DELETE", odd)[0] == 204
    # POST /kv picks the key itself and answers its Location
    status, headers, body = c.request("POST", "/kv", b"made", "text/plain")
    assert status == 201
    made = json.loads(body)["key"]
    assert headers["location"] == f"/kv/{made}"
    assert c.request("GET", headers["location"])[2] == b"made"
    assert c.request("DELETE", headers["location"])[0] == 204
    # too large
    assert c.request("PUT", key, b"x" * (256 * 1024 + 1), "application/octet-stream")[0] == 413


def _session(c: Client) -> None:
    assert c.json("GET", "/me")[0] == 401
    assert c.json("POST", "/login", {"username": "", "password": "x"})[0] == 400
    status, doc = c.json("POST", "/login", {"username": "walker ä", "password": "pw"})
    assert status == 200 and doc["user"] == "walker ä" and doc["token"]
    assert "session" in c.cookies and c.cookies["session"] == doc["token"]
    assert c.json("GET", "/me") == (200, {"user": "walker ä"})
    # the bearer token works too, and a tampered one does not
    bearer = Client.__new__(Client)
    bearer.host, bearer.port, bearer.cookies = c.host, c.port, {}
    assert bearer.request("GET", "/me", headers={"Authorization": "Bearer " + doc["token"]})[0] == 200
    assert bearer.request("GET", "/me", headers={"Authorization": "Bearer " + doc["token"][:-2] + "xx"})[0] == 401


def _postgres_items(c: Client) -> None:
    status, headers, body = c.request("POST", "/api/items", json.dumps({"name": "bolt", "qty": 3}).encode(),
                                      "application/json")
    assert status == 201, body
    item = json.loads(body)
    assert headers["location"] == f"/api/items/{item['id']}" and item["version"] == 1
    second = c.json("POST", "/api/items", {"name": "nut"})[1]
    assert c.json("GET", f"/api/items/{item['id']}") == (200, item)
    status, updated = c.json("PUT", f"/api/items/{item['id']}", {"name": "bolt M6", "qty": 7})
    assert status == 200 and updated == {"id": item["id"], "name": "bolt M6", "qty": 7, "version": 2}
    status, ranged = c.json("GET", f"/api/items?from={item['id']}&to={item['id']}")
    assert (status, ranged) == (200, [updated])
    status, both = c.json("GET", f"/api/items?from={item['id']}&to={second['id']}")
    assert [i["id"] for i in both] == [item["id"], second["id"]]
    assert c.json("GET", "/api/items?from=5&to=1")[0] == 400
    assert c.json("POST", "/api/items", {"name": "", "qty": 1})[0] == 400
    # owner-scoped: another login sees nothing
    other = Client.__new__(Client)
    other.host, other.port, other.cookies = c.host, c.port, {}
    assert other.json("POST", "/login", {"username": "someone else", "password": "x"})[0] == 200
    assert other.json("GET", f"/api/items/{item['id']}")[0] == 404
    assert other.json("PUT", f"/api/items/{item['id']}", {"name": "stolen"})[0] == 404
    for i in (item, second):
        assert c.request("DELETE", f"/api/items/{i['id']}")[0] == 204
    assert c.json("GET", f"/api/items/{item['id']}")[0] == 404


def _redis_routes(c: Client) -> None:
    status, headers, body = c.request("POST", "/counters")
    assert status == 201
    name = json.loads(body)["counter"]
    assert headers["location"] == f"/counter/{name}"
    assert c.json("GET", f"/counter/{name}") == (200, {"counter": name, "value": 0})
    for n in (1, 2, 3):
        assert c.json("POST", f"/counter/{name}/incr") == (200, {"counter": name, "value": n})
    assert c.json("GET", "/counter/never-made")[0] == 404
    status, doc = c.json("POST", "/pipeline?n=9")
    assert status == 200 and doc == {"n": 9, "verified": 9, "commands": 19, "deleted": 9}
    assert c.json("POST", "/pipeline?n=0")[0] == 400


def _memcached_routes(c: Client) -> None:
    assert c.request("PUT", "/kv/mg-a", b"alpha", "text/plain")[0] in (200, 201)
    assert c.request("PUT", "/kv/mg-b", b"\xff\xfe", "application/octet-stream")[0] in (200, 201)
    status, doc = c.json("GET", "/kv?keys=mg-a,mg-b,mg-none")
    assert status == 200
    assert doc == {"values": {"mg-a": "alpha"}, "values_b64": {"mg-b": "//4="}, "missing": ["mg-none"]}
    assert c.json("GET", "/kv")[0] == 400


async def _burst(host: str, port: int, key: str, n: int) -> dict[int, int]:
    """n concurrent PUT/DELETE/GET requests on ONE key."""

    async def one(i: int) -> int:
        method = ("PUT", "DELETE", "GET", "PUT")[i % 4]
        body = (str(i) * (1 + i % 40)).encode() if method == "PUT" else b""
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"{method} {key} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
        await writer.drain()
        data = await reader.read()
        writer.close()
        return int(data.split(b" ", 2)[1])

    statuses = await asyncio.gather(*(one(i) for i in range(n)))
    out: dict[int, int] = {}
    for s in statuses:
        out[s] = out.get(s, 0) + 1
    return out


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("refapp", REFAPPS)
def test_driver_refapp(refapp: str, engine: str, services: dict[str, str], tmp_path: Path) -> None:
    target = _start(refapp, engine, services, tmp_path)
    try:
        c = Client(target)
        assert c.request("GET", "/healthz")[:3:2] == (200, b"ok")
        before = c.debug()
        for field in ("sse_open", "ws_open", "tasks", "requests", "drv_checks", "drv_mismatches"):
            assert isinstance(before[field], int) and not isinstance(before[field], bool), field
        assert before["service"] == SERVICE[refapp]
        _kv_contract(c, engine)
        _session(c)
        {"driver_postgres": _postgres_items, "driver_redis": _redis_routes,
         "driver_memcached": _memcached_routes}[refapp](c)
        statuses = asyncio.run(_burst(target.host, target.port, f"/kv/burst-{engine}", 120))
        assert 500 not in statuses and 503 not in statuses, statuses
        status, echo = c.json("POST", "/echo/x?y=1", {"a": 1})
        assert status == 200 and echo["method"] == "POST" and echo["target"] == "/echo/x?y=1"
        assert c.json("POST", "/logout")[0] == 204
        assert c.json("GET", "/me")[0] == 401
        after = c.debug()
        assert after["drv_mismatches"] == 0
        assert after["drv_checks"] >= before["drv_checks"] + 40
        kinds = after["drv_checks_by_kind"]
        assert kinds["kv_put"] > 0 and kinds["kv_delete"] > 0 and kinds["session"] > 0
        assert after["requests"] > before["requests"] + 100
        assert after["rate_limited"] == 0 and after["backend_errors"] == 0
    finally:
        stderr = _stop(target)
    _assert_no_crash(stderr)


# --------------------------------------------------------------------------
# rate limiter, fault injection, fail-fast


def _redis_command(url: str, *args: str) -> bytes:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    payload = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(payload)
        return s.recv(4096)


@pytest.mark.parametrize("refapp", REFAPPS)
def test_rate_limit_tiny(refapp: str, services: dict[str, str], tmp_path: Path) -> None:
    target = _start(refapp, "uvicorn", services, tmp_path, REFAPP_RATE_LIMIT="4/minute")
    try:
        c = Client(target)
        statuses = [c.request("GET", "/kv/rl-probe")[0] for _ in range(4)]
        assert statuses == [404] * 4
        status, headers, body = c.request("GET", "/kv/rl-probe")
        assert status == 429, body
        assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-limit"] == "4"
        assert c.request("POST", "/login", b"{}", "application/json")[0] == 429  # one budget for all guarded routes
        # open routes are outside the limit
        assert c.request("GET", "/healthz")[0] == 200
        assert c.request("GET", "/echo")[0] == 200
        doc = c.debug()
        assert doc["rate_limited"] == 2 and doc["rate_limit"] == "4/minute"
        if refapp == "driver_redis":
            assert doc["script_loads"] == 1 and doc["noscript_reloads"] == 0
            # the server forgets its scripts: the next EVALSHA gets NOSCRIPT and the app loads it again
            assert _redis_command(services["REDIS_URL"], "SCRIPT", "FLUSH").startswith(b"+OK")
            assert c.request("GET", "/kv/rl-probe")[0] == 429  # still limited: the bucket survived
            doc = c.debug()
            assert doc["noscript_reloads"] == 1 and doc["script_loads"] == 2
        if refapp == "driver_memcached":
            assert doc["bucket_writes"] == 4 and doc["cas_exhausted"] == 0
    finally:
        stderr = _stop(target)
    _assert_no_crash(stderr)


async def _bearer_burst(targets: list[RunningTarget], token: str, n: int) -> dict[int, int]:
    async def one(i: int) -> int:
        t = targets[i % len(targets)]
        reader, writer = await asyncio.open_connection(t.host, t.port)
        writer.write(f"GET /kv/bucket-probe HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        return int(data.split(b" ", 2)[1])

    out: dict[int, int] = {}
    for status in await asyncio.gather(*(one(i) for i in range(n))):
        out[status] = out.get(status, 0) + 1
    return out


def _flush_backend(refapp: str, services: dict[str, str]) -> None:
    """Empty the key space of the refapp's backend (FLUSHALL / flush_all over its real protocol)."""
    import socket
    from urllib.parse import urlsplit

    if refapp == "driver_redis":
        u = urlsplit(services["REDIS_URL"])
        addr, cmd, ok = (u.hostname, u.port), b"FLUSHALL\r\n", b"+OK"
    else:
        host, _, port = services["MEMCACHED_ADDR"].rpartition(":")
        addr, cmd, ok = (host, int(port)), b"flush_all\r\n", b"OK"
    with socket.create_connection(addr, timeout=5) as sock:
        sock.sendall(cmd)
        assert sock.recv(64).startswith(ok)


@pytest.mark.parametrize("refapp", ["driver_redis", "driver_memcached"])
def test_shared_bucket_is_atomic_across_processes(refapp: str, services: dict[str, str], tmp_path: Path) -> None:
    """Two app processes share one bucket in the backend (same signed session id): of 120
    concurrent requests exactly the bucket's 30 tokens pass (Lua EVALSHA / CAS loop)."""
    secret = {"REFAPP_SECRET_KEY": "shared-test-secret"}
    _flush_backend(refapp, services)  # rate-limit buckets of earlier tests live in the same backend
    # log in where the bucket is generous (the peer-address bucket is shared with earlier tests);
    # the signed session id is valid on every process with the same secret
    door = _start(refapp, "uvicorn", services, tmp_path / "door", **secret)
    try:
        status, doc = Client(door).json("POST", "/login", {"username": "bucket", "password": "x"})
        assert status == 200
    finally:
        _assert_no_crash(_stop(door))
    extra = {"REFAPP_RATE_LIMIT": "30/hour", **secret}
    targets = [_start(refapp, engine, services, tmp_path, **extra) for engine in ("uvicorn", "hypercorn")]
    try:
        statuses = asyncio.run(_bearer_burst(targets, doc["token"], 120))
        assert statuses == {404: 30, 429: 90}, statuses
        debugs = [Client(t).debug() for t in targets]
        assert sum(d["rate_limited"] for d in debugs) == 90
        if refapp == "driver_memcached":
            assert all(d["cas_exhausted"] == 0 for d in debugs)
    finally:
        stderrs = [_stop(t) for t in targets]
    for stderr in stderrs:
        _assert_no_crash(stderr)


@pytest.mark.parametrize("refapp", REFAPPS)
def test_fault_is_caught_by_self_check(refapp: str, services: dict[str, str], tmp_path: Path) -> None:
    target = _start(refapp, "uvicorn", services, tmp_path, REFAPP_FAULT="corrupt")
    try:
        c = Client(target)
        status, _, body = c.request("PUT", "/kv/faulty", b"precious", "text/plain")
        assert status == 500
        doc = json.loads(body)
        assert doc["x-invariant"] == "I-DRV-1" and doc["check"] == "kv_put" and doc["key"] == "faulty"
        debug = c.debug()
        assert debug["drv_mismatches"] == 1 and debug["fault"] == "corrupt"
        c.request("DELETE", "/kv/faulty")
    finally:
        stderr = _stop(target)
    _assert_no_crash(stderr)


def test_unchecked_fault_is_visible_from_outside(services: dict[str, str], tmp_path: Path) -> None:
    """``corrupt-unchecked``: the write is acknowledged, a client's read-back differs (what the
    validator's outside I-DRV-1 check must catch)."""
    target = _start("driver_redis", "uvicorn", services, tmp_path, REFAPP_FAULT="corrupt-unchecked")
    try:
        c = Client(target)
        assert c.request("PUT", "/kv/lossy", b"precious", "text/plain")[0] == 201
        status, _, body = c.request("GET", "/kv/lossy")
        assert status == 200 and body != b"precious"
        assert c.debug()["drv_mismatches"] == 0
        c.request("DELETE", "/kv/lossy")
    finally:
        stderr = _stop(target)
    _assert_no_crash(stderr)


@pytest.mark.parametrize("refapp", REFAPPS)
def test_missing_service_address_fails_fast(refapp: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VAR.values()}
    app_dir = REPO / "refapps" / refapp
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "uvicorn", "--port", "0", "app:app"], cwd=app_dir, env=env,
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith(f"{refapp}: {ENV_VAR[refapp]} is not set"), proc.stderr
    assert time.monotonic() - started < 20


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("refapp", REFAPPS)
def test_unreachable_service_fails_startup_with_one_line(refapp: str) -> None:
    port = _closed_port()
    address = {"driver_postgres": f"postgresql://nobody@127.0.0.1:{port}/db",
               "driver_redis": f"redis://127.0.0.1:{port}/0", "driver_memcached": f"127.0.0.1:{port}"}[refapp]
    env = {k: v for k, v in os.environ.items() if k not in ENV_VAR.values()}
    env[ENV_VAR[refapp]] = address
    proc = subprocess.run([sys.executable, "-m", "uvicorn", "--port", "0", "app:app"], cwd=REPO / "refapps" / refapp,
                          env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert f"{refapp}: cannot reach {SERVICE[refapp]} at startup:" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_services_file_and_requirements() -> None:
    for refapp in REFAPPS:
        folder = REPO / "refapps" / refapp
        assert (folder / "services.txt").read_text().split() == [SERVICE[refapp]]
        for name in ("app.py", "openapi.yaml", "markov.yaml", "requirements.in", "README.md"):
            assert (folder / name).is_file(), name
