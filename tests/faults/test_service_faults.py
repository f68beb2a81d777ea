"""service-kill and service-stop on a real redis-server through the Injector, and the durability
model: a durable redis keeps an acknowledged write across SIGKILL + restart, the default does not."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from probatorium import procfs
from probatorium.faults import FaultSpec, Injector, durable
from probatorium.services import Manifest, ServiceManager, cleanup_manifest
from probatorium.services.servers import Postgres, Redis
from probatorium.targets import FaultWindows, TargetControl

pytestmark = [pytest.mark.timeout(20),
              pytest.mark.skipif(not os.path.exists("/usr/bin/redis-server"), reason="no /usr/bin/redis-server")]


@pytest.fixture
def services_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # Under /tmp and traversable: redis runs as its own account (tests/services does the same).
    root = Path(tempfile.mkdtemp(prefix="probatorium-test-faults-", dir="/tmp"))
    os.chmod(root, 0o711)
    monkeypatch.setenv("PROBATORIUM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PROBATORIUM_SERVICES_TMPDIR", str(root))
    try:
        yield root
    finally:
        cleanup_manifest(Manifest(tmp_path / "state"), include_live=True)
        shutil.rmtree(root, ignore_errors=True)


def resp(port: int, *words: str, timeout: float = 2.0) -> bytes:
    """One RESP command, its one-line (or bulk) answer."""
    payload = f"*{len(words)}\r\n".encode() + b"".join(f"${len(w)}\r\n{w}\r\n".encode() for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        data = sock.recv(65536)
        if data.startswith(b"$") and not data.startswith(b"$-1"):
            while data.count(b"\r\n") < 2:
                data += sock.recv(65536)
    return data


def _kill_and_read_back(manager: ServiceManager) -> tuple[bytes, dict]:
    with manager:
        info = manager.up(["redis"])["redis"]
        assert resp(info.port, "SET", "acked", "v1") == b"+OK\r\n"  # acknowledged
        inj = Injector(TargetControl(None, services=manager, windows=FaultWindows(grace_s=0.2)), None, ["redis"])
        fault = asyncio.run(inj.inject(FaultSpec("service-kill", 0, 0.1, subject="redis"), seed=1))
        after = manager.info("redis")
        assert fault.applied and fault.observed["died"] and fault.observed["pid"] == info.pid
        assert fault.observed["restarted_pid"] == after.pid != info.pid
        assert after.port == info.port and after.data_dir == info.data_dir  # the URL stays valid
        return resp(after.port, "GET", "acked"), fault.observed


def test_durable_redis_keeps_an_acknowledged_write_across_sigkill(services_env: Path) -> None:
    got, _ = _kill_and_read_back(ServiceManager(reap_stale=False, durable=True))
    assert got == b"$2\r\nv1\r\n"


def test_throwaway_redis_loses_it(services_env: Path) -> None:
    """The default tuning (Tier 1, the bench) is unchanged: no persistence, the write is gone."""
    got, _ = _kill_and_read_back(ServiceManager(reap_stale=False))
    assert got == b"$-1\r\n"


def test_service_stop_pauses_then_resumes_redis(services_env: Path) -> None:
    with ServiceManager(reap_stale=False) as manager:
        info = manager.up(["redis"])["redis"]
        inj = Injector(TargetControl(None, services=manager, windows=FaultWindows(grace_s=0.2)), None, ["redis"])
        assert inj.applies("service-stop", "postgres").startswith("no backing service 'postgres'")

        async def run() -> tuple[object, str | None]:
            task = asyncio.create_task(inj.inject(FaultSpec("service-stop", 0, 1.0, subject="redis"), seed=1))
            await asyncio.sleep(0.3)
            state = procfs.state(info.pid)
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(resp, info.port, "PING", timeout=0.3)
            return await task, state

        fault, state = asyncio.run(run())
        assert state == "T" and fault.applied and fault.observed["state_during"] == "T"
        assert fault.observed["state_after"] in ("S", "R")
        assert manager.info("redis").pid == info.pid and resp(info.port, "PING") == b"+PONG\r\n"
        assert [w.kind for w in inj.control.windows.all()] == ["pause"]


def test_the_durability_model_and_the_durable_settings() -> None:
    assert durable("postgres") and durable("redis") and not durable("memcached")
    assert not durable("redis", ServiceManager(reap_stale=False))  # started throw-away
    assert durable("redis", ServiceManager(reap_stale=False, durable=True))
    assert Postgres.durability(True) == {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
    assert set(Postgres.durability(False).values()) == {"off"}
    assert Redis.durability(True) == ["--appendonly", "yes", "--appendfsync", "always"]
    assert Redis.durability(False) == ["--appendonly", "no"]
    with pytest.raises(KeyError):
        durable("mysql")


def _psql(manager: ServiceManager, sql: str) -> str:
    psql = Postgres().binaries(manager.finder)["psql"]
    done = subprocess.run([psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", manager.env()["DATABASE_URL"],
                           "-c", sql], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(bool(ServiceManager(reap_stale=False).unavailable(["postgres"])), reason="no postgres here")
def test_durable_postgres_keeps_a_commit_across_sigkill(services_env: Path) -> None:
    with ServiceManager(reap_stale=False, durable=True) as manager:
        info = manager.up(["postgres"])["postgres"]
        assert _psql(manager, "show fsync") == "on" and _psql(manager, "show synchronous_commit") == "on"
        _psql(manager, "create table acked (v text); insert into acked values ('v1')")
        inj = Injector(TargetControl(None, services=manager), None, ["postgres"])
        fault = asyncio.run(inj.inject(FaultSpec("service-kill", 0, 0.1, subject="postgres"), seed=1))
        assert fault.applied and fault.observed["restarted_pid"] != info.pid
        assert manager.info("postgres").port == info.port and _psql(manager, "select v from acked") == "v1"
