"""The one process layer: spawn, identify, signal, wait for and stop processes.

The launcher (the server under test) and the backing services both start and
stop their processes here. A pid alone is not an identity (pids are reused),
so every process is known by :class:`Identity` — ``(pid, start_ticks)``,
``start_ticks`` being field 22 of ``/proc/<pid>/stat`` — and nothing here
ever signals a process whose identity does not match what was recorded.

Every child runs in its own session (``start_new_session``), so its pid is
its process-group id and a stop reaches the engine's workers too; it is
started with ``PR_SET_PDEATHSIG`` so it dies with the validator; and it is
forked from one long-lived thread (:class:`Spawner`), because the death
signal fires when the forking THREAD ends, not the process.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from probatorium import procfs

PR_SET_PDEATHSIG = 1
POLL_S = 0.02
#: How long a SIGKILLed group is waited for before giving up (a process stuck in D state).
KILL_WAIT_S = 5.0

libc = None
try:  # loaded before any fork: a preexec function must not import or dlopen
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.prctl.restype = ctypes.c_int
except (OSError, AttributeError):  # pragma: no cover - non-glibc hosts
    libc = None


@dataclass(frozen=True)
class Identity:
    """One process, told apart from any later process that gets the same pid."""

    pid: int
    start_ticks: int | None

    @classmethod
    def of(cls, pid: int) -> Identity:
        """The identity of the process running as `pid` now."""
        return cls(pid, procfs.start_ticks(pid))

    def alive(self) -> bool:
        """True while this very process runs (not a zombie, not a reused pid)."""
        return same_process(self.pid, self.start_ticks)


def same_process(pid: int | None, start_ticks: int | None) -> bool:
    """True when ``pid`` is alive (not a zombie) and is the process recorded
    (``start_ticks`` None: any process with that pid)."""
    if not pid or pid <= 0:
        return False
    now = procfs.live_start_ticks(pid)
    if now is None:
        return False
    return start_ticks is None or now == start_ticks


def group_members(pgid: int, leader_start_ticks: int | None) -> list[int]:
    """PIDs of live processes in process group ``pgid`` that are provably ours.

    The group is ours when its leader (pid == pgid) is the recorded process, or
    when the leader is gone and every member started after the recorded leader
    (Linux never hands out a PID still used as a process-group id, so a group
    without its leader can only be the one we created). A live leader with a
    different start time means the id was reused: nothing is returned.
    """
    if not pgid or pgid <= 1:
        return []
    leader_now = procfs.start_ticks(pgid)
    if leader_now is not None and leader_start_ticks is not None and leader_now != leader_start_ticks:
        return []
    members = []
    for pid in procfs.group_pids(pgid):
        ticks = procfs.start_ticks(pid)
        if ticks is None or (leader_start_ticks is not None and ticks < leader_start_ticks):
            continue
        members.append(pid)
    return members


def processes_in_dir(directory: str | os.PathLike) -> dict[int, int]:
    """Live processes whose working directory lies inside ``directory``
    → their start ticks. Every server we start runs with its cwd in its own
    throw-away directory (PostgreSQL's backends re-``setsid`` themselves, so
    the process group alone does not find them)."""
    base = os.path.realpath(directory)
    if not base or base == "/":
        return {}
    found: dict[int, int] = {}
    for pid in procfs.pids():
        where = procfs.cwd(pid)
        if where is not None and (where == base or where.startswith(base + "/")):
            ticks = procfs.live_start_ticks(pid)
            if ticks is not None:
                found[pid] = ticks
    return found


def listening_pids_ok(pid: int, port: int, host_hex: str = "0100007F") -> bool | None:
    """Does ``pid`` hold the socket listening on 127.0.0.1:``port``?

    None when that cannot be told (no /proc/net/tcp, or the fds of ``pid``
    are not readable). A health probe must be answered by OUR server, not by
    another one that already sat on the port we picked.
    """
    listening = procfs.tcp_inodes(("/proc/net/tcp",), procfs.TCP_LISTEN, f"{host_hex}:{port:04X}")
    if listening is None:
        return None
    if not listening:
        return False
    held = procfs.socket_inodes(pid)
    if held is None:
        return None
    return bool(held & listening)


# --------------------------------------------------------------------------
# spawning


def make_preexec(death_signal: int | None, cpus: tuple[int, ...] | None = None) -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to send ``death_signal`` to the child when the
    thread that forked it dies (PR_SET_PDEATHSIG), and pinning it to ``cpus``.

    Popen applies ``user=``/``group=`` before calling preexec_fn, and a change
    of credentials clears the parent-death signal, so it has to be set here,
    last. If the parent already died between fork and prctl, exit at once.
    """
    if not sys.platform.startswith("linux") or (death_signal is None and not cpus):
        return None
    if death_signal is not None and libc is None:
        return None
    parent = os.getpid()
    prctl = libc.prctl if libc is not None else None

    def _preexec() -> None:  # runs in the child between fork and exec: no imports, no allocation worth naming
        if cpus:
            os.sched_setaffinity(0, cpus)
        if death_signal is not None and prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)

    return _preexec


class Spawner:
    """Runs process creation on one long-lived daemon thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not
    the process. Targets are restarted and services started from threads
    that come and go, so every fork from a non-main thread happens on a
    thread that lives as long as the process (the main thread does its own).
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future, Callable[[], Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on the spawner thread (directly on the main thread)."""
        if threading.current_thread() in (threading.main_thread(), self._thread):
            return fn(*args, **kwargs)  # the main thread forks for itself; the spawner never waits on itself
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="probatorium-spawner", daemon=True)
                self._thread.start()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((future, lambda: fn(*args, **kwargs)))
        try:
            return future.result()
        except BaseException:
            # Interrupted while the child was being created: it must not outlive us unnoticed.
            if not future.cancel() and future.exception(timeout=30) is None:
                orphan = future.result()
                if isinstance(orphan, subprocess.Popen):
                    signal_group(orphan.pid, None, signal.SIGKILL)
                    orphan.wait()
            raise

    def _loop(self) -> None:
        while True:
            future, job = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)


SPAWNER = Spawner()


@dataclass
class Spawned:
    """A child we started: its Popen and its identity (it leads its own process group)."""

    popen: subprocess.Popen
    identity: Identity

    @property
    def pid(self) -> int:
        return self.identity.pid


def spawn(argv: list[str], *, death_signal: int | None = signal.SIGKILL, cpus: tuple[int, ...] | None = None,
          **popen_kwargs: Any) -> Spawned:
    """Start ``argv`` in its own session from the spawner thread, armed with ``death_signal``.

    ``popen_kwargs`` go to :class:`subprocess.Popen` (cwd, env, stdio, user, ...).
    """
    preexec = make_preexec(death_signal, cpus)

    def job() -> subprocess.Popen:
        return subprocess.Popen(argv, start_new_session=True, preexec_fn=preexec, **popen_kwargs)

    popen = SPAWNER.run(job)
    return Spawned(popen, Identity.of(popen.pid))


# --------------------------------------------------------------------------
# signalling and stopping


def signal_process(identity: Identity, sig: int) -> bool:
    """Send ``sig`` to this very process (never to a reused pid); True if it was sent."""
    if not identity.alive():
        return False
    try:
        os.kill(identity.pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def signal_group(pgid: int, leader_start_ticks: int | None, sig: int) -> list[int]:
    """Signal every member of our group ``pgid``; the pids that were signalled."""
    hit = []
    for pid in group_members(pgid, leader_start_ticks):
        try:
            os.kill(pid, sig)
            hit.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return hit


def signal_tree(identity: Identity, sig: int) -> bool:
    """``sig`` once to the process and to every member of the group it leads (SIGSTOP, SIGCONT,
    SIGKILL reach the engine's workers too); True if anything was signalled. The leader is
    signalled on its own only when it left the group: a second SIGTERM that lands while an
    asyncio server is shutting down is written to a closed wakeup fd (a traceback on stderr)."""
    hit = signal_group(identity.pid, identity.start_ticks, sig)
    if identity.pid in hit:
        return True
    return signal_process(identity, sig) or bool(hit)


def _kill_recorded(procs: dict[int, int], sig: int) -> None:
    for pid, ticks in procs.items():
        signal_process(Identity(pid, ticks), sig)


def _reap(popen: subprocess.Popen | None) -> None:
    if popen is not None:
        try:
            popen.poll()
        except Exception:  # pragma: no cover - defensive
            pass


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = POLL_S) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` s passed; whether it held (checked once more at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()


def _wait_recorded(procs: dict[int, int], timeout: float) -> bool:
    """Wait until none of ``procs`` (pid → start ticks) is alive."""
    return wait_until(lambda: not any(same_process(p, t) for p, t in procs.items()), timeout)


def wait_group_gone(pid: int, pgid: int, start_ticks: int | None, timeout: float,
                    popen: subprocess.Popen | None = None) -> bool:
    """Wait up to ``timeout`` s until the process and its group are gone (reaping ``popen``)."""
    def gone() -> bool:
        _reap(popen)
        return not same_process(pid, start_ticks) and not group_members(pgid, start_ticks)

    return wait_until(gone, timeout)


def _stop_leftovers(strays: dict[int, int], stop_signal: int, grace: float) -> str:
    """The leader is gone but processes of its directory are not (a SIGKILLed postmaster)."""
    _kill_recorded(strays, stop_signal)
    _wait_recorded(strays, grace)
    _kill_recorded(strays, signal.SIGKILL)
    _wait_recorded(strays, KILL_WAIT_S)
    return "stopped leftovers"


def stop_process_group(pid: int, pgid: int | None, start_ticks: int | None, *,
                       stop_signal: int = signal.SIGTERM, grace: float = 5.0,
                       popen: subprocess.Popen | None = None,
                       directory: str | os.PathLike | None = None) -> str:
    """Stop a recorded process, its process group and (when ``directory`` is
    given) every process working inside that directory.

    Sends ``stop_signal`` to the leader and group, waits up to ``grace``
    seconds for all of them to exit, then SIGKILLs what is left. Returns a
    short word for the log: "stopped", "killed", "stopped leftovers" or "gone".
    """
    group = pgid or pid
    strays = processes_in_dir(directory) if directory else {}
    strays.pop(pid, None)
    if not same_process(pid, start_ticks) and not group_members(group, start_ticks):
        _reap(popen)
        return _stop_leftovers(strays, stop_signal, grace) if strays else "gone"
    deadline = time.monotonic() + grace
    if pid not in signal_group(group, start_ticks, stop_signal):  # the leader once, never twice
        signal_process(Identity(pid, start_ticks), stop_signal)
    # The leader reaps its own children when graceful; stragglers get the rest of the grace.
    if wait_group_gone(pid, group, start_ticks, grace, popen) \
            and _wait_recorded(strays, max(0.0, deadline - time.monotonic())):
        return "stopped"
    signal_group(group, start_ticks, signal.SIGKILL)
    signal_process(Identity(pid, start_ticks), signal.SIGKILL)
    _kill_recorded(strays, signal.SIGKILL)
    wait_group_gone(pid, group, start_ticks, KILL_WAIT_S, popen)
    _wait_recorded(strays, KILL_WAIT_S)
    return "killed"


def stop(spawned: Spawned, *, stop_signal: int = signal.SIGTERM, grace: float = 5.0,
         directory: str | os.PathLike | None = None) -> str:
    """Stop a child we spawned (its group leads by its pid): see :func:`stop_process_group`."""
    ident = spawned.identity
    result = stop_process_group(ident.pid, ident.pid, ident.start_ticks, stop_signal=stop_signal,
                                grace=grace, popen=spawned.popen, directory=directory)
    try:
        spawned.popen.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        pass  # stuck in the kernel (D state); nothing more we can do
    return result
