"""tests/servers/kvserver.py --backend redis against a real durable redis-server: across a SIGKILL +
restart of redis (a service-kill through the Injector), the strict server reconnects and reads its
acknowledged write back; with --bug backend-never-reconnects every /kv request stays 503."""

from __future__ import annotations

import asyncio
import http.client
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from probatorium.faults import FaultSpec, Injector
from probatorium.services import Manifest, ServiceManager, cleanup_manifest
from probatorium.targets import FaultWindows, TargetControl

SERVER = Path(__file__).with_name("kvserver.py")
pytestmark = [pytest.mark.timeout(30),
              pytest.mark.skipif(not os.path.exists("/usr/bin/redis-server"), reason="no /usr/bin/redis-server")]


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = Path(tempfile.mkdtemp(prefix="probatorium-test-kvbackend-", dir="/tmp"))
    os.chmod(root, 0o711)  # redis runs as its own account (tests/services does the same)
    monkeypatch.setenv("PROBATORIUM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PROBATORIUM_SERVICES_TMPDIR", str(root))
    try:
        with ServiceManager(reap_stale=False, durable=True) as m:
            m.up(["redis"])
            yield m
    finally:
        cleanup_manifest(Manifest(tmp_path / "state"), include_live=True)
        shutil.rmtree(root, ignore_errors=True)


def start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen([sys.executable, str(SERVER), "--port", "0", "--backend", "redis", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env})
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    line = proc.stdout.readline().decode() if ready else ""  # type: ignore[union-attr]
    if not line.startswith("ready addr="):
        proc.kill()
        err = proc.stderr.read().decode()[-500:]  # type: ignore[union-attr]
        raise RuntimeError(f"kvserver did not become ready: {line!r} {err}")
    return proc, int(line.strip().rsplit(":", 1)[1])


def call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_strict_reconnects_after_redis_restarts_and_the_bug_never_does(manager: ServiceManager) -> None:
    env = manager.env()
    strict, sport = start(env)
    buggy, bport = start(env, "--bug", "backend-never-reconnects")
    try:
        for port in (sport, bport):
            assert call(port, "PUT", f"/kv/k{port}", b"v1") == (201, b"")
            assert call(port, "GET", f"/kv/k{port}") == (200, b"v1")
        inj = Injector(TargetControl(None, services=manager, windows=FaultWindows(grace_s=0.2)), None, ["redis"])
        fault = asyncio.run(inj.inject(FaultSpec("service-kill", 0, 0.2, subject="redis"), seed=1))
        assert fault.applied and fault.observed["restarted_pid"]
        deadline, got = time.monotonic() + 5, {sport: [], bport: []}
        while time.monotonic() < deadline and len(got[bport]) < 10:  # bounded: 10 reads each, 5 s
            for port in (sport, bport):
                got[port].append(call(port, "GET", f"/kv/k{port}"))
            time.sleep(0.05)
        assert got[sport][-1] == (200, b"v1")  # reconnected, and the durable redis kept the write
        assert [s for s, _ in got[bport]] == [503] * len(got[bport]) and len(got[bport]) == 10
        assert call(bport, "GET", "/healthz")[0] == 200  # the process itself is fine: only the backend link
    finally:
        for proc in (strict, buggy):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
