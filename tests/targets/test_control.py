"""TargetControl and the one process layer, with real processes (no mocks).

A planned fault (a window in FaultWindows) is never a finding; the same fault
unplanned still is: SIGSTOP → I-HANG, SIGKILL → I-LIVENESS. procs never
signals a process whose start time differs from the one recorded.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probatorium import procfs, procs
from probatorium.targets import FaultWindow, FaultWindows, TargetControl, TargetSpec, Watchdog, start_target
from probatorium.targets.launcher import RunningTarget
from probatorium.validate.incidents import IncidentRecorder
from probatorium.validate.liveness import Liveness
from probatorium.validate.resources import ResourceSampler

wait_for = procs.wait_until

pytestmark = pytest.mark.timeout(30)

PY = sys.executable
SERVER = '''\
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''


@pytest.fixture
def target(tmp_path: Path) -> Iterator[RunningTarget]:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    running = start_target(TargetSpec(kind="cmd", cmd=f"{PY} {script} {{port}}"), tmp_path / "logs")
    try:
        yield running
    finally:
        if running.spawned is not None:  # never leave it stopped: a stopped process cannot take SIGTERM
            procs.signal_tree(running.spawned.identity, signal.SIGCONT)
        running.stop(grace=1.0)


def fast_watchdog(target: RunningTarget, faults: FaultWindows) -> Watchdog:
    dog = Watchdog(target, interval=0.1, timeout=0.5, hang_after=3, faults=faults)
    dog.start()
    assert wait_for(lambda: dog.health_checks >= 2, 5)
    return dog


# --- the watchdog reads the windows --------------------------------------------------------


def test_planned_sigstop_is_no_hang(target: RunningTarget) -> None:
    control = TargetControl(target, windows=FaultWindows(grace_s=0.5))
    dog = fast_watchdog(target, control.windows)
    try:
        window = control.pause()
        assert window.kind == "pause" and window.is_open and window.pid == target.pid
        assert wait_for(lambda: procfs.state(target.pid) == "T", 2)  # signals are delivered asynchronously
        # More timed-out probes than hang_after: unplanned, this would be an I-HANG.
        assert wait_for(lambda: dog.planned_timeouts > dog.hang_after, 8)
        control.resume()
        assert wait_for(lambda: procfs.state(target.pid) != "T", 2)
        checks = dog.health_checks
        assert wait_for(lambda: dog.health_checks >= checks + 3, 5)
    finally:
        dog.stop()
    assert dog.events == []
    assert not control.windows.all()[0].is_open


def test_the_same_sigstop_unplanned_is_a_hang(target: RunningTarget) -> None:
    windows = FaultWindows(grace_s=0.5)
    dog = fast_watchdog(target, windows)
    try:
        os.kill(target.pid, signal.SIGSTOP)  # not through TargetControl: no window
        assert wait_for(lambda: bool(dog.events), 5)
    finally:
        os.kill(target.pid, signal.SIGCONT)
        dog.stop()
    assert [e.predicate for e in dog.events] == ["I-HANG"]
    assert dog.planned_timeouts == 0


def test_a_stop_outside_its_window_is_a_hang(target: RunningTarget) -> None:
    """A window that closed (plus its grace) excuses nothing after it."""
    control = TargetControl(target, windows=FaultWindows(grace_s=0.2))
    dog = fast_watchdog(target, control.windows)
    try:
        control.pause()
        control.resume()
        time.sleep(0.4)
        os.kill(target.pid, signal.SIGSTOP)
        assert wait_for(lambda: bool(dog.events), 5)
    finally:
        os.kill(target.pid, signal.SIGCONT)
        dog.stop()
    assert [e.predicate for e in dog.events] == ["I-HANG"]


def test_planned_kill_and_restart_is_no_liveness_an_unplanned_kill_is(target: RunningTarget) -> None:
    control = TargetControl(target, windows=FaultWindows(grace_s=0.2))
    dog = fast_watchdog(target, control.windows)
    old_pid = target.pid
    try:
        control.kill()
        assert wait_for(lambda: dog.planned_exits == 1, 5)
        time.sleep(0.5)  # more ticks, past the grace: the planned death stays planned
        assert dog.events == []
        window = control.restart()
        assert window.kind == "restart" and not window.is_open
        assert target.alive() and target.pid != old_pid
        assert not control.windows.is_open("target")  # the kill window closed with the restart
        checks = dog.health_checks
        assert wait_for(lambda: dog.health_checks >= checks + 2, 5)
        assert dog.events == []
        time.sleep(0.3)
        os.kill(target.pid, signal.SIGKILL)  # unplanned: the new process was no fault's aim
        assert wait_for(lambda: bool(dog.events), 5)
    finally:
        dog.stop()
    assert [e.predicate for e in dog.events] == ["I-LIVENESS"]
    assert dog.planned_exits == 1


# --- liveness and the resource sampler read the windows -------------------------------------


def _liveness(target: RunningTarget, control: TargetControl, tmp_path: Path) -> tuple[Liveness, IncidentRecorder]:
    recorder = IncidentRecorder(tmp_path / "run", "cell", refapp="cmd", engine="cmd", arch="x86_64", versions={})
    live = Liveness(target, recorder, cell_seed=1, tally={}, dossier_dir=tmp_path / "run" / "cell",
                    restart=control.restart, pause=lambda: None, resume=lambda: None, stop=lambda: False,
                    say=lambda msg: None, control=control)
    return live, recorder


def test_liveness_waits_out_a_planned_kill_and_records_no_death(target: RunningTarget, tmp_path: Path) -> None:
    control = TargetControl(target, windows=FaultWindows(grace_s=0.2))
    live, recorder = _liveness(target, control, tmp_path)
    control.kill()
    assert wait_for(lambda: not target.alive(), 5)
    threading.Timer(0.5, control.restart).start()  # the tier ends its fault
    assert asyncio.run(live.recover())
    assert recorder.incidents == [] and live.restarts == 0


def test_liveness_records_an_unplanned_death(target: RunningTarget, tmp_path: Path) -> None:
    control = TargetControl(target, windows=FaultWindows(grace_s=0.2))
    live, recorder = _liveness(target, control, tmp_path)
    os.kill(target.pid, signal.SIGKILL)
    assert wait_for(lambda: not target.alive(), 5)
    assert asyncio.run(live.recover())
    assert [i.predicate for i in recorder.incidents] == ["I-LIVENESS"]
    assert live.restarts == 1
    assert [w.kind for w in control.windows.all()] == ["restart"]  # the recovery itself was planned


def test_sampler_skips_a_planned_restart_and_starts_a_new_segment(target: RunningTarget) -> None:
    windows = FaultWindows(grace_s=0.3)
    control = TargetControl(target, windows=windows)
    sampler = ResourceSampler(lambda: target.pid if target.alive() else None, interval=0.05, faults=windows)
    with sampler:
        assert wait_for(lambda: len(sampler.samples) >= 5, 5)
        control.restart()
        skipped_at = len(sampler.samples)
        assert wait_for(lambda: len(sampler.samples) >= skipped_at + 5, 5)
    samples = sampler.samples
    assert sampler.fault_skips >= 1
    assert {s["segment"] for s in samples} == {0, 1}
    assert sum(1 for s in samples if s.get("restart")) == 1
    assert all(s["t"] >= samples[skipped_at]["t"] for s in samples if s["segment"] == 1)


# --- a backing service through TargetControl ----------------------------------------------


def _ping(port: int, timeout: float = 1.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        return sock.recv(64)


@pytest.mark.skipif(not os.path.exists("/usr/bin/redis-server"), reason="no /usr/bin/redis-server")
def test_a_service_paused_resumed_and_restarted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real redis-server, SIGSTOPped (PING times out), SIGCONTed and restarted on its port."""
    from probatorium.services import Manifest, ServiceManager, cleanup_manifest

    # Under /tmp and traversable: the service may run as its own account (tests/services does the same).
    root = Path(tempfile.mkdtemp(prefix="probatorium-test-control-", dir="/tmp"))
    os.chmod(root, 0o711)
    monkeypatch.setenv("PROBATORIUM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PROBATORIUM_SERVICES_TMPDIR", str(root))
    try:
        _pause_resume_restart(ServiceManager(reap_stale=False))
    finally:
        cleanup_manifest(Manifest(tmp_path / "state"), include_live=True)
        shutil.rmtree(root, ignore_errors=True)


def _pause_resume_restart(manager: Any) -> None:
    with manager:
        info = manager.up(["redis"])["redis"]
        control = TargetControl(None, services=manager, windows=FaultWindows(grace_s=0.2))
        assert _ping(info.port) == b"+PONG\r\n"
        control.pause("redis")
        assert control.windows.is_open("redis")
        with pytest.raises(TimeoutError):
            _ping(info.port, timeout=0.5)
        control.resume("redis")
        assert _ping(info.port) == b"+PONG\r\n"
        window = control.restart("redis")
        assert window.subject == "redis" and window.pid == info.pid
        after = manager.info("redis")
        assert after.port == info.port and after.pid != info.pid
        assert not procs.Identity(window.pid, window.start_ticks).alive()
        assert _ping(info.port) == b"+PONG\r\n"
    assert not procfs.is_running(after.pid)


# --- the process layer ----------------------------------------------------------------------


def test_a_recycled_pid_is_never_signalled() -> None:
    """An identity whose start time differs from the live process's is not that process."""
    child = procs.spawn([PY, "-c", "import time; time.sleep(30)"], stdout=subprocess.DEVNULL)
    try:
        real = child.identity
        assert real.alive() and real.start_ticks is not None
        stale = procs.Identity(real.pid, real.start_ticks - 1)  # "the process that had this pid before"
        assert not stale.alive()
        assert not procs.signal_process(stale, signal.SIGKILL)
        assert not procs.signal_tree(stale, signal.SIGKILL)
        assert procs.stop_process_group(stale.pid, stale.pid, stale.start_ticks, grace=0.1) == "gone"
        assert real.alive()
        assert procs.stop(child, grace=1.0) == "stopped"
    finally:
        child.popen.kill()
        child.popen.wait()
    assert not real.alive()
    assert not procs.signal_process(real, signal.SIGKILL)  # gone: nothing is sent


def test_stop_kills_the_group_when_term_is_ignored() -> None:
    code = ("import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "os.fork() or None; time.sleep(30)")
    child = procs.spawn([PY, "-c", code])
    try:
        assert wait_for(lambda: len(procs.group_members(child.pid, child.identity.start_ticks)) == 2, 5)
        assert procs.stop(child, grace=0.3) == "killed"
        assert procs.group_members(child.pid, child.identity.start_ticks) == []
    finally:
        procs.signal_tree(child.identity, signal.SIGKILL)


def test_schedule_faults_are_the_same_type() -> None:
    from probatorium.validate.schedule import FaultWindow as ScheduleFault

    assert ScheduleFault is FaultWindow
    planned = FaultWindow("pause", "target", 10.0, 5.0, grace_s=1.0)
    assert planned.end_s == 15.0 and planned.overlaps(15.5, 20.0) and not planned.overlaps(16.5, 20.0)


def test_windows_excuse_only_the_process_they_were_aimed_at() -> None:
    clock = [100.0]
    windows = FaultWindows(clock=lambda: clock[0], grace_s=1.0)
    victim, successor = procs.Identity(4242, 7), procs.Identity(4242, 9)  # same pid, reused later
    handle = windows.open("kill", "target", victim)
    clock[0] += 3.0
    assert windows.is_open("target") and windows.covers_now("target")
    closed = windows.close(handle)
    assert closed.duration_s == 3.0 and not windows.is_open("target")
    clock[0] += 0.5
    assert windows.covers_now("target")  # inside the grace
    clock[0] += 1.0
    assert not windows.covers_now("target")
    assert windows.planned_death("target", victim)  # noticed late: still the planned one
    assert not windows.planned_death("target", successor)
    assert not windows.planned_death("redis", victim)
    assert windows.overlapping("target", 0.0, 1.0) and not windows.overlapping("target", 5.0)


def test_stop_sends_the_leader_its_signal_once(monkeypatch) -> None:
    """A second SIGTERM landing while an asyncio server shuts down is written to a closed wakeup
    fd (a traceback on the target's stderr, seen on hypercorn): stop signals each process of the
    group exactly once. The kills are real; the spy only records them."""
    sent: list[tuple[int, int]] = []
    real_kill = os.kill

    def spy(pid: int, sig: int) -> None:
        if sig:
            sent.append((pid, sig))
        real_kill(pid, sig)

    child = procs.spawn([PY, "-c", "import time; print('up', flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        assert child.popen.stdout.readline().strip() == b"up"
        monkeypatch.setattr(procs.os, "kill", spy)
        assert procs.stop(child, grace=3.0) == "stopped"
        assert sent == [(child.identity.pid, signal.SIGTERM)]
    finally:
        child.popen.kill()
