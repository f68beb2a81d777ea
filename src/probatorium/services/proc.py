"""Process helpers for service lifecycles: identity, parent-death, stopping.

A PID alone is not an identity (PIDs are reused), so every recorded process is
identified by ``(pid, start_ticks)`` where ``start_ticks`` is field 22 of
``/proc/<pid>/stat`` (clock ticks since boot). Nothing here ever signals a
process whose identity does not match what was recorded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import threading
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1

_libc = None
try:  # loaded before any fork: preexec functions must not import or dlopen
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:  # pragma: no cover - non-glibc hosts
    _libc = None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'
    close = raw.rfind(")")
    if close < 0:
        return None
    return [raw[:close + 1]] + raw[close + 2:].split()


def proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    f = _stat_fields(pid)
    if not f or len(f) < 21:
        return None
    # after the re-split, index 0 is "pid (comm)", 1 is state (field 3) ...
    # field 22 (starttime) is therefore at index 22 - 2 = 20
    try:
        return int(f[20])
    except ValueError:
        return None


def proc_state(pid: int) -> str | None:
    f = _stat_fields(pid)
    return f[1] if f and len(f) > 1 else None


def proc_pgid(pid: int) -> int | None:
    f = _stat_fields(pid)
    try:
        return int(f[3]) if f and len(f) > 3 else None
    except ValueError:
        return None


def same_process(pid: int | None, start_ticks: int | None) -> bool:
    """True when ``pid`` is alive (not a zombie) and is the process recorded."""
    if not pid or pid <= 0:
        return False
    now = proc_start_ticks(pid)
    if now is None:
        return False
    if proc_state(pid) in ("Z", "X"):
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
    leader_now = proc_start_ticks(pgid)
    if leader_now is not None and leader_start_ticks is not None and leader_now != leader_start_ticks:
        return []
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        f = _stat_fields(pid)
        if not f or len(f) < 21:
            continue
        try:
            if int(f[3]) != pgid or f[1] in ("Z", "X"):
                continue
            if leader_start_ticks is not None and int(f[20]) < leader_start_ticks:
                continue
        except ValueError:
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
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd == base or cwd.startswith(base + "/"):
            ticks = proc_start_ticks(pid)
            if ticks is not None and proc_state(pid) not in ("Z", "X"):
                found[pid] = ticks
    return found


def listening_pids_ok(pid: int, port: int, host_hex: str = "0100007F") -> bool | None:
    """Does ``pid`` hold the socket listening on 127.0.0.1:``port``?

    None when that cannot be told (no /proc/net/tcp, or the fds of ``pid``
    are not readable). A health probe must be answered by OUR server, not by
    another one that already sat on the port we picked.
    """
    try:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    want = f"{host_hex}:{port:04X}"
    inodes = set()
    for row in rows:
        cols = row.split()
        if len(cols) > 9 and cols[1] == want and cols[3] == "0A":  # LISTEN
            inodes.add(cols[9])
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def make_preexec(death_signal: int | None):
    """A preexec_fn that asks the kernel to send ``death_signal`` to the child
    when the thread that forked it dies (PR_SET_PDEATHSIG).

    Popen applies ``user=``/``group=`` before calling preexec_fn, and a change
    of credentials clears the parent-death signal, so it has to be set here,
    last. If the parent already died between fork and prctl, exit at once.
    """
    if death_signal is None or _libc is None:
        return None
    parent = os.getpid()
    libc = _libc

    def _preexec() -> None:  # runs in the child between fork and exec
        libc.prctl(PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return _preexec


class Spawner:
    """Runs process creation on one long-lived thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not
    the process. Services started from a short-lived worker thread would die
    with that thread, so non-main threads hand the spawn to this daemon thread,
    which lives exactly as long as the process.
    """

    _lock = threading.Lock()
    _thread: threading.Thread | None = None
    _queue = None

    @classmethod
    def run(cls, fn, *args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            return fn(*args, **kwargs)
        import queue

        with cls._lock:
            if cls._thread is None or not cls._thread.is_alive():
                cls._queue = queue.Queue()
                cls._thread = threading.Thread(target=cls._loop, args=(cls._queue,),
                                               name="probatorium-spawner", daemon=True)
                cls._thread.start()
            q = cls._queue
        done = threading.Event()
        box: dict = {}
        q.put((fn, args, kwargs, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["value"]

    @staticmethod
    def _loop(q) -> None:
        while True:
            fn, args, kwargs, box, done = q.get()
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as e:  # handed back to the caller
                box["error"] = e
            finally:
                done.set()


def _signal_group(pgid: int, start_ticks: int | None, sig: int) -> bool:
    """Signal every member of our group; True if any was signalled."""
    members = group_members(pgid, start_ticks)
    hit = False
    for pid in members:
        try:
            os.kill(pid, sig)
            hit = True
        except (ProcessLookupError, PermissionError):
            pass
    return hit


def _kill_dir_processes(procs: dict[int, int], sig: int) -> None:
    for pid, ticks in procs.items():
        if same_process(pid, ticks):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def stop_process_group(pid: int, pgid: int | None, start_ticks: int | None, *,
                       stop_signal: int = signal.SIGTERM, grace: float = 5.0,
                       popen=None, directory: str | os.PathLike | None = None) -> str:
    """Stop a recorded service process, its process group and (when
    ``directory`` is given) every process working inside that directory.

    Sends ``stop_signal`` to the leader and group, waits up to ``grace``
    seconds for all of them to exit, then SIGKILLs what is left. Returns a
    short word for the log: "stopped", "killed" or "gone".
    """
    group = pgid or pid
    strays = processes_in_dir(directory) if directory else {}
    strays.pop(pid, None)
    if not same_process(pid, start_ticks) and not group_members(group, start_ticks):
        if popen is not None:
            _reap(popen)
        if strays:  # the leader is gone but its children are not (SIGKILLed postmaster)
            _kill_dir_processes(strays, stop_signal)
            _wait_dir(strays, grace)
            _kill_dir_processes(strays, signal.SIGKILL)
            _wait_dir(strays, 5.0)
            return "stopped leftovers"
        return "gone"
    _signal_group(group, start_ticks, stop_signal)
    if same_process(pid, start_ticks):
        try:
            os.kill(pid, stop_signal)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if popen is not None:
            _reap(popen)
        if not same_process(pid, start_ticks) and not group_members(group, start_ticks):
            # the leader reaps its own children normally; give stragglers the rest of the grace
            if _wait_dir(strays, max(0.0, deadline - time.monotonic())):
                return "stopped"
            break
        time.sleep(0.02)
    _signal_group(group, start_ticks, signal.SIGKILL)
    if same_process(pid, start_ticks):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _kill_dir_processes(strays, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if popen is not None:
            _reap(popen)
        if not same_process(pid, start_ticks) and not group_members(group, start_ticks):
            break
        time.sleep(0.02)
    _wait_dir(strays, 5.0)
    return "killed"


def _wait_dir(procs: dict[int, int], timeout: float) -> bool:
    """Wait until none of ``procs`` (pid → start ticks) is alive."""
    deadline = time.monotonic() + timeout
    while True:
        if not any(same_process(p, t) for p, t in procs.items()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _reap(popen) -> None:
    try:
        popen.poll()
    except Exception:  # pragma: no cover - defensive
        pass
