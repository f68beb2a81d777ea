"""The Injector on a real child process (a small python http server): kill, term, stop and
fd-squeeze observed in /proc and on the wire; net-* through a real proxy; planned, so the watchdog
stays quiet; and the reasons a kind does not apply."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from probatorium import procfs, procs
from probatorium.faults import FAULT_KINDS, FaultProxy, FaultSpec, Injector
from probatorium.targets import FaultWindows, TargetControl, TargetSpec, Watchdog, start_target
from probatorium.targets.launcher import RunningTarget

pytestmark = pytest.mark.timeout(20)

PY = sys.executable
# GET / → "ok"; GET /open/N → opens N more descriptors and answers how many it got before EMFILE.
SERVER = '''\
import http.server, os, signal, sys, time

if sys.argv[2:] == ["ignore-term"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok"
        if self.path.startswith("/open/"):
            held, error = [], "none"
            try:
                for _ in range(int(self.path[6:])):
                    held.append(os.open("/dev/null", os.O_RDONLY))
            except OSError as exc:
                error = exc.strerror
            for fd in held:
                os.close(fd)
            body = f"{len(held)} {error}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''


def _start(tmp_path: Path, *extra: str) -> RunningTarget:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    return start_target(TargetSpec(kind="cmd", cmd=" ".join([PY, str(script), "{port}", *extra])), tmp_path / "logs")


@pytest.fixture
def target(tmp_path: Path) -> Iterator[RunningTarget]:
    running = _start(tmp_path)
    try:
        yield running
    finally:
        if running.spawned is not None:  # never leave it stopped: a stopped process cannot take SIGTERM
            procs.signal_tree(running.spawned.identity, signal.SIGCONT)
        running.stop(grace=1.0)


def get(port: int, path: str = "/", timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


def injector(target: RunningTarget, proxy: FaultProxy | None = None) -> Injector:
    return Injector(TargetControl(target, windows=FaultWindows(grace_s=0.3)), proxy)


def test_target_kill_restarts_a_new_process(target: RunningTarget) -> None:
    old = target.pid
    fault = asyncio.run(injector(target).inject(FaultSpec("target-kill", 0, 0.2), seed=1))
    assert fault.applied and fault.not_applicable == ""
    assert fault.observed["pid"] == old and fault.observed["died"] and fault.observed["exit"] == -signal.SIGKILL
    assert fault.observed["restarted_pid"] == target.pid != old
    assert not procs.same_process(old, None) and get(target.port) == b"ok"
    assert fault.ended_at - fault.started_at >= 0.2


def test_target_term_drains_within_its_grace(target: RunningTarget) -> None:
    old = target.pid
    fault = asyncio.run(injector(target).inject(FaultSpec("target-term", 0, 0, {"grace_s": 3}), seed=1))
    assert fault.applied and fault.observed["exited_within_grace"] and not fault.observed["killed_after_grace"]
    assert fault.observed["exit"] == -signal.SIGTERM and target.pid != old and get(target.port) == b"ok"


def test_target_term_kills_what_outlives_its_grace(tmp_path: Path) -> None:
    stubborn = _start(tmp_path, "ignore-term")
    try:
        fault = asyncio.run(injector(stubborn).inject(FaultSpec("target-term", 0, 0, {"grace_s": 0.5}), seed=1))
        assert fault.applied and fault.observed["killed_after_grace"]
        assert fault.observed["exit"] == -signal.SIGKILL and get(stubborn.port) == b"ok"
    finally:
        stubborn.stop(grace=0.5)


def test_target_stop_is_state_t_then_running_and_no_hang(target: RunningTarget) -> None:
    inj = injector(target)
    dog = Watchdog(target, interval=0.1, timeout=0.3, hang_after=2, faults=inj.control.windows)
    dog.start()
    assert procs.wait_until(lambda: dog.health_checks >= 2, 5)
    seen: list[str | None] = []

    async def run() -> None:
        task = asyncio.create_task(inj.inject(FaultSpec("target-stop", 0, 2.0), seed=1))
        await asyncio.sleep(0.5)
        seen.append(procfs.state(target.pid))
        with pytest.raises(OSError):  # stopped: nothing answers
            await asyncio.to_thread(get, target.port, "/", 0.3)
        return await task

    try:
        fault = asyncio.run(run())
        assert procs.wait_until(lambda: dog.health_checks >= 3, 5)
    finally:
        dog.stop()
    assert seen == ["T"] and fault.applied and fault.observed["state_during"] == "T"
    assert fault.observed["state_after"] in ("S", "R") and get(target.port) == b"ok"
    assert dog.planned_timeouts > dog.hang_after and dog.events == []  # planned: no I-HANG


def test_fd_squeeze_lowers_the_soft_limit_only_while_it_lasts(target: RunningTarget) -> None:
    hard_before = open(f"/proc/{target.pid}/limits").read()
    assert get(target.port, "/open/64") == b"64 none"
    inj = injector(target)
    during: dict[str, object] = {}

    async def run() -> object:
        task = asyncio.create_task(inj.inject(FaultSpec("fd-squeeze", 0, 1.0, {"headroom": 12}), seed=1))
        await asyncio.sleep(0.4)
        during["limit"] = procfs.fd_soft_limit(target.pid)
        during["answer"] = await asyncio.to_thread(get, target.port, "/open/64")
        return await task

    fault = asyncio.run(run())
    observed = fault.observed
    assert fault.applied and observed["soft_during"] == observed["open"] + 12 < observed["soft_before"]
    assert during["limit"] == observed["soft_during"]
    opened, _, error = during["answer"].decode().partition(" ")  # type: ignore[union-attr]
    assert int(opened) < 12 and error == "Too many open files"
    assert observed["soft_after"] == observed["soft_before"] and observed["hard"] == _hard(hard_before)
    assert _hard(open(f"/proc/{target.pid}/limits").read()) == observed["hard"]  # never touched
    assert get(target.port, "/open/64") == b"64 none"
    assert [w.kind for w in inj.control.windows.all()] == ["fd-squeeze"]


def _hard(limits: str) -> int:
    line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
    return int(line.split()[4])


def test_net_faults_through_the_proxy_count_only_when_they_bite(target: RunningTarget) -> None:
    async def run() -> tuple[object, object]:
        proxy = FaultProxy()
        host, port = await proxy.start(lambda: (target.host, target.port))
        inj = injector(target, proxy)
        try:
            idle = await inj.inject(FaultSpec("net-latency", 0, 0.2, {"delay_ms": 50}), seed=1)
            task = asyncio.create_task(inj.inject(FaultSpec("net-latency", 0, 1.0, {"delay_ms": 50}), seed=1))
            await asyncio.sleep(0.1)
            assert await asyncio.to_thread(get, port) == b"ok"
            return idle, await task
        finally:
            await proxy.close()

    idle, busy = asyncio.run(run())
    assert not idle.applied and idle.observed["bytes"] == 0  # nothing went through: not injected
    assert busy.applied and busy.observed["delayed_chunks"] >= 2


def test_what_does_not_apply_says_why(target: RunningTarget) -> None:
    inj = injector(target)
    assert inj.applies("net-reset") == "no fault proxy"
    assert inj.applies("service-kill") == "no backing service"
    assert "netem" in (inj.applies("net-netem") or "")
    assert all(inj.applies(kind) is None for kind in ("target-kill", "target-term", "target-stop", "fd-squeeze"))
    fault = asyncio.run(inj.inject(FaultSpec("net-stall", 1, 1, {"hold_ms": 10}), seed=1))
    assert not fault.applied and fault.not_applicable == "no fault proxy"
    assert set(FAULT_KINDS) >= {"net-netem", "service-stop"} and len(FAULT_KINDS) == 14
    url = Injector(TargetControl(None))
    assert "no local process" in (url.applies("target-kill") or "")
