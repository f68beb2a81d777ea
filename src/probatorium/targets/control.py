"""Planned faults: the only way to pause, kill or restart the target or a backing service.

A tier that injects a fault (Tier 3 SIGSTOPs the target, SIGKILLs a
service, restarts the target) goes through :class:`TargetControl`, which
signals the process by its identity (:mod:`probatorium.procs`) and records a
:class:`FaultWindow` in the cell's :class:`FaultWindows`. The watchdog, the
liveness checks and the resource sampler read those windows, so a planned
fault is never mistaken for a failure:

- a SIGSTOP inside a window is not I-HANG (health probes that overlap the
  window or its grace are not counted);
- the death of the very process a planned kill / term / restart was aimed at
  is not I-LIVENESS (matched by pid + start time, whenever it is noticed);
- resource samples inside a window are skipped and the series starts a new
  segment after it, so a restart is never a leak.

An unplanned death or hang — outside every window, or of another process —
is reported exactly as before.
"""

from __future__ import annotations

import dataclasses
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from probatorium import procfs, procs

TARGET = "target"
#: Fault kinds and what they do to the subject.
PAUSE, KILL, TERM, RESTART = "pause", "kill", "term", "restart"
#: A lowered soft RLIMIT_NOFILE (the subject stays alive; refused accepts inside it are planned).
SQUEEZE = "fd-squeeze"
#: Kinds whose subject is expected to die (its exit is not I-LIVENESS).
DEATH_KINDS = frozenset({KILL, TERM, RESTART})
#: Seconds after a window closes during which the subject is still excused: a probe sent just
#: before SIGCONT answers late, a restarted server needs a moment to be fully up.
DEFAULT_GRACE_S = 2.0


@dataclass(frozen=True)
class FaultWindow:
    """A planned fault: what, on whom, when (seconds on the cell's clock) and for how long.

    ``duration_s`` is None while the fault lasts (the window is open); ``grace_s`` extends
    it after it closes. ``pid``/``start_ticks`` name the process the fault was aimed at
    (None for a fault planned ahead, e.g. in a :class:`~probatorium.validate.schedule.Schedule`).
    """

    kind: str
    subject: str  # "target" or a service name
    start_s: float
    duration_s: float | None = None
    grace_s: float = 0.0
    pid: int | None = None
    start_ticks: int | None = None

    @property
    def is_open(self) -> bool:
        return self.duration_s is None

    @property
    def end_s(self) -> float | None:
        """When the fault ended (None while it lasts)."""
        return None if self.duration_s is None else self.start_s + self.duration_s

    def overlaps(self, t0: float, t1: float) -> bool:
        """Whether the window or its grace overlaps [t0, t1]."""
        end = self.end_s
        return self.start_s <= t1 and (end is None or t0 <= end + self.grace_s)

    def aimed_at(self, identity: procs.Identity) -> bool:
        """Whether this fault was aimed at exactly that process (pid and start time)."""
        return self.pid == identity.pid and (self.start_ticks is None or self.start_ticks == identity.start_ticks)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FaultWindows:
    """The thread-safe record of one cell's planned faults (times on ``clock``, from creation)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, grace_s: float = DEFAULT_GRACE_S) -> None:
        self._clock = clock
        self._t0 = clock()
        self.grace_s = grace_s
        self._windows: list[FaultWindow] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds since the record was created (the cell's fault clock)."""
        return self._clock() - self._t0

    def open(self, kind: str, subject: str, identity: procs.Identity | None = None,
             grace_s: float | None = None) -> int:
        """Open a window now; returns its handle for :meth:`close`."""
        window = FaultWindow(kind, subject, self.now(), None, self.grace_s if grace_s is None else grace_s,
                             identity.pid if identity else None, identity.start_ticks if identity else None)
        with self._lock:
            self._windows.append(window)
            return len(self._windows) - 1

    def close(self, handle: int) -> FaultWindow:
        """Close an open window now (idempotent); returns it."""
        with self._lock:
            window = self._windows[handle]
            if window.is_open:
                window = dataclasses.replace(window, duration_s=max(0.0, self.now() - window.start_s))
                self._windows[handle] = window
            return window

    def close_open(self, subject: str, kinds: frozenset[str] | None = None) -> None:
        """Close every open window of ``subject`` (of ``kinds``): the fault is over."""
        with self._lock:
            handles = [i for i, w in enumerate(self._windows)
                       if w.is_open and w.subject == subject and (kinds is None or w.kind in kinds)]
        for handle in handles:
            self.close(handle)

    def all(self) -> list[FaultWindow]:
        """Every window so far (open ones included)."""
        with self._lock:
            return list(self._windows)

    def overlapping(self, subject: str, t0: float, t1: float | None = None) -> list[FaultWindow]:
        """Windows of ``subject`` whose span or grace overlaps [t0, t1] (t1: now)."""
        t1 = self.now() if t1 is None else t1
        return [w for w in self.all() if w.subject == subject and w.overlaps(t0, t1)]

    def covers_now(self, subject: str) -> bool:
        """Whether a window of ``subject`` (or its grace) covers this moment."""
        now = self.now()
        return bool(self.overlapping(subject, now, now))

    def is_open(self, subject: str) -> bool:
        """Whether a fault of ``subject`` lasts right now (an open window)."""
        return any(w.is_open and w.subject == subject for w in self.all())

    def planned_death(self, subject: str, identity: procs.Identity | None) -> bool:
        """Whether the exit of ``identity`` was planned: a kill / term / restart aimed at that very
        process, or (no identity known) one covering this moment."""
        windows = [w for w in self.all() if w.subject == subject and w.kind in DEATH_KINDS]
        if identity is not None and any(w.aimed_at(identity) for w in windows):
            return True
        now = self.now()
        return any(w.pid is None and w.overlaps(now, now) for w in windows)


class TargetControl:
    """Pause / resume / kill / term / restart the target and each backing service, each a planned window.

    ``target`` is a :class:`~probatorium.targets.launcher.RunningTarget`; ``services`` a
    :class:`~probatorium.services.ServiceManager` (or None). Subjects are ``"target"`` and the
    services' names.
    """

    def __init__(self, target: Any, services: Any = None, windows: FaultWindows | None = None) -> None:
        self.target = target
        self.services = services
        self.windows = windows or FaultWindows()
        self._lock = threading.RLock()
        #: subject → (window handle, [(process, soft limit before, hard limit)]) while squeezed.
        self._squeezed: dict[str, tuple[int, list[tuple[procs.Identity, int, int]]]] = {}

    def identity(self, subject: str = TARGET) -> procs.Identity | None:
        """The identity of the subject's process now (None: no local process)."""
        if subject == TARGET:
            spawned = getattr(self.target, "spawned", None)
            return spawned.identity if spawned is not None else None
        if self.services is None:
            raise KeyError(f"no backing services: cannot control {subject!r}")
        return self.services.identity(subject)

    def _signal(self, kind: str, subject: str, sig: int) -> FaultWindow:
        with self._lock:
            identity = self.identity(subject)
            if identity is None:
                raise RuntimeError(f"{subject} has no local process to {kind}")
            handle = self.windows.open(kind, subject, identity)
            if not procs.signal_tree(identity, sig):
                self.windows.close(handle)  # nothing was signalled: the fault did not happen
                raise ProcessLookupError(f"{subject} (pid {identity.pid}) is not running")
            return self.windows.all()[handle]

    def pause(self, subject: str = TARGET) -> FaultWindow:
        """SIGSTOP the subject's process group; the window stays open until :meth:`resume`."""
        return self._signal(PAUSE, subject, signal.SIGSTOP)

    def resume(self, subject: str = TARGET) -> None:
        """SIGCONT the subject's process group and close its pause window."""
        with self._lock:
            identity = self.identity(subject)
            if identity is not None:
                procs.signal_tree(identity, signal.SIGCONT)
            self.windows.close_open(subject, frozenset({PAUSE}))

    def kill(self, subject: str = TARGET) -> FaultWindow:
        """SIGKILL the subject's process group; the window stays open until :meth:`restart`."""
        return self._signal(KILL, subject, signal.SIGKILL)

    def term(self, subject: str = TARGET) -> FaultWindow:
        """SIGTERM the subject's process group; the window stays open until :meth:`restart`."""
        return self._signal(TERM, subject, signal.SIGTERM)

    def restart(self, subject: str = TARGET) -> FaultWindow:
        """Stop the subject (whatever its state) and start it again; the window closes once it is up.

        Closes the subject's open kill / term / pause windows too: the fault is over.
        """
        with self._lock:
            identity = self.identity(subject)
            handle = self.windows.open(RESTART, subject, identity)
            if identity is not None and self.windows.is_open(subject):
                procs.signal_tree(identity, signal.SIGCONT)  # a stopped process cannot take its SIGTERM
            try:
                if subject == TARGET:
                    self.target.restart()
                else:
                    self.services.restart(subject)
            finally:
                self.windows.close_open(subject, frozenset({KILL, TERM, PAUSE}))
                window = self.windows.close(handle)
            return window

    def squeeze_fds(self, subject: str = TARGET, headroom: int = 8) -> tuple[FaultWindow, dict[str, Any]]:
        """Lower the soft RLIMIT_NOFILE of the subject's process (and its group's members) to the
        descriptors each holds now + ``headroom``; the window stays open until :meth:`release_fds`.

        The hard limit is never touched (raising a hard limit back is refused on some hosts).
        Returns the window and what was measured for the main process: ``soft_before``,
        ``soft_during``, ``open``, ``hard`` and ``processes`` (how many were squeezed).
        """
        with self._lock:
            if subject in self._squeezed:
                raise RuntimeError(f"{subject} is already squeezed")
            identity = self.identity(subject)
            if identity is None or not identity.alive():
                raise ProcessLookupError(f"{subject} has no running local process to squeeze")
            handle = self.windows.open(SQUEEZE, subject, identity)
            saved: list[tuple[procs.Identity, int, int]] = []
            measured: dict[str, Any] = {}
            members = [identity.pid] + [p for p in procs.group_members(identity.pid, identity.start_ticks)
                                        if p != identity.pid]
            for pid in members:
                row = _squeeze_one(pid, headroom)
                if row is None:
                    continue
                saved.append((procs.Identity.of(pid), row["soft_before"], row["hard"]))
                if pid == identity.pid:
                    measured = dict(row, pid=pid)
            if not saved:
                self.windows.close(handle)
                raise ProcessLookupError(f"{subject} (pid {identity.pid}): no limit could be lowered")
            self._squeezed[subject] = (handle, saved)
            measured["processes"] = len(saved)
            return self.windows.all()[handle], measured

    def release_fds(self, subject: str = TARGET) -> dict[str, Any]:
        """Give the squeezed processes their soft limits back and close the window; returns
        ``soft_after`` of the main process and how many processes were restored."""
        with self._lock:
            handle, saved = self._squeezed.pop(subject, (None, []))
            restored, soft_after = 0, None
            for identity, soft, _hard in saved:
                if not identity.alive():
                    continue  # it died (or was restarted): a new process has its own limits
                try:
                    _, hard_now = resource.prlimit(identity.pid, resource.RLIMIT_NOFILE)
                    resource.prlimit(identity.pid, resource.RLIMIT_NOFILE, (min(soft, hard_now), hard_now))
                    restored += 1
                except (ProcessLookupError, PermissionError, OSError):
                    continue
                if soft_after is None:
                    soft_after = procfs.fd_soft_limit(identity.pid)
            if handle is not None:
                self.windows.close(handle)
            return {"soft_after": soft_after, "restored": restored}


def _squeeze_one(pid: int, headroom: int) -> dict[str, Any] | None:
    """Lower one process's soft RLIMIT_NOFILE to its open count + headroom (never raise it)."""
    try:
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        open_now = procfs.fd_count(pid)
        if open_now is None:
            return None
        target = open_now + headroom if soft == resource.RLIM_INFINITY else min(soft, open_now + headroom)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (target, hard))
    except (ProcessLookupError, PermissionError, OSError):
        return None
    return {"soft_before": soft, "soft_during": procfs.fd_soft_limit(pid), "open": open_now, "hard": hard}
