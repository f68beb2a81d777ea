"""Watch a running target: did it die, does it hang, did it crash loudly?

docs/contracts.md: an exit while the target is wanted up is I-LIVENESS; the health path
timing out `hang_after` (4) times in a row is I-HANG; crash markers on stderr
are recorded. Stdlib only, one daemon thread per target.
"""

from __future__ import annotations

import http.client
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from probatorium.targets.control import FaultWindows
    from probatorium.targets.launcher import RunningTarget

log = logging.getLogger(__name__)

#: Substrings of a stderr line that mark a crash.
CRASH_MARKERS: tuple[str, ...] = (
    "Traceback (most recent call last)",
    "Fatal Python error",
    "Segmentation fault",
    "core dumped",
    # A Rust panic (granian's core is Rust): "thread 'x' panicked at file:line".
    "' panicked at ",
)
#: Lines kept after a "Traceback" line (the frames and the exception).
TRACEBACK_FOLLOW_LINES = 20
#: Most stderr bytes read per tick, so a log flood cannot stall the watchdog.
MAX_SCAN_BYTES = 8 * 1024 * 1024
#: Lines python writes between chained tracebacks: not the end of one.
_TRACEBACK_CONTINUATIONS = ("During handling of", "The above exception", "Traceback")

Outcome = Literal["response", "timeout", "refused", "error"]


@dataclass
class WatchEvent:
    """A predicate the watchdog saw trip."""

    predicate: str
    at: str  # ISO-8601 UTC
    detail: str


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def probe_health(host: str, port: int, path: str, timeout: float) -> Outcome:
    """GET `path` once; classify as response (any status), timeout, refused or error."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        response.read(65536)
        return "response"
    except TimeoutError:
        # No answer in time, whether the connect or the response stalled.
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except (OSError, http.client.HTTPException):
        # Reset, closed without a response, garbage: not a hang, not an answer.
        return "error"
    finally:
        connection.close()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Watchdog:
    """A daemon thread checking liveness, health and stderr of one target.

    ``events`` collects I-LIVENESS / I-HANG (each reported once per episode),
    ``crash_markers`` the stderr lines (with a traceback's following lines)
    that mark a crash. ``pause()``/``resume()`` bracket a deliberate stop or
    restart by the orchestrator; an exit after ``target.stop()`` is never
    reported either. ``faults`` (the cell's planned fault windows, see
    targets/control.py): the exit of a process a planned kill / term / restart
    was aimed at is no I-LIVENESS, a health probe overlapping a planned window
    (or its grace) counts toward no I-HANG; ``planned_exits`` and
    ``planned_timeouts`` count what they excused.
    """

    def __init__(
        self,
        target: RunningTarget,
        health_path: str | None = None,
        interval: float = 2.0,
        timeout: float = 5.0,
        hang_after: int = 4,
        on_event: Callable[[WatchEvent], None] | None = None,
        faults: FaultWindows | None = None,
    ) -> None:
        self.target = target
        self.faults = faults
        self.planned_exits = 0
        self.planned_timeouts = 0
        # Default to the path the target was declared with (``/healthz`` unless told).
        self.health_path = health_path if health_path is not None else target.spec.health_path
        self.interval = interval
        self.timeout = timeout
        self.hang_after = hang_after
        self.on_event = on_event
        self.events: list[WatchEvent] = []
        self.crash_markers: list[str] = []
        self.health_checks = 0
        self.health_timeouts_max_streak = 0
        self.timeout_streak = 0
        self._hang_reported = False
        self._paused = False
        self._reported_exit_of: object | None = None
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._scan_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stderr_offset = 0
        self._partial = b""
        # While a traceback is being collected: (index in crash_markers, lines still to take).
        self._capture: tuple[int, int] | None = None

    # -- control -------------------------------------------------------------

    def start(self) -> None:
        """Start the watching thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"probatorium-watchdog-{self.target.pid}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and pick up the crash markers written last."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.timeout + self.interval + 1.0)
        self.scan_stderr()

    def pause(self) -> None:
        """Stop judging (the orchestrator is stopping/restarting the target on purpose)."""
        with self._lock:
            self._paused = True
            self.timeout_streak = 0

    def resume(self) -> None:
        """Judge again; hang counting starts from zero."""
        with self._lock:
            self._paused = False
            self.timeout_streak = 0
            self._hang_reported = False

    @property
    def paused(self) -> bool:
        """Whether judging is paused."""
        return self._paused

    # -- the checks ----------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a watchdog must outlive its own bugs
                log.exception("watchdog tick failed for %s", self.target)
            self._stop.wait(self.interval)

    def tick(self) -> None:
        """One round: stderr scan, liveness, then (if alive) one health check."""
        self.scan_stderr()
        if self._paused or self.target.stopping:
            return
        if not self._check_liveness():
            return
        self._check_health()

    def _check_liveness(self) -> bool:
        """False (and I-LIVENESS once per exit) when the process is gone."""
        process = self.target.process
        if self.target.spec.kind == "url" or process is None:
            return True
        code = process.poll()
        if code is None:
            return True
        with self._lock:
            if self._paused or self.target.stopping or self._reported_exit_of is process:
                return False
            self._reported_exit_of = process
            if self._planned_exit(process):
                self.planned_exits += 1
                return False
        self.scan_stderr()
        last = next(
            (
                line.strip()
                for line in reversed(self.target.stderr_tail(50))
                if line.strip() and not line.startswith("=== probatorium:")
            ),
            "(stderr is empty)",
        )
        self._emit(
            "I-LIVENESS",
            f"{self.target.spec.describe()} (pid {process.pid}) {_describe_exit(code)} "
            f"while wanted up; last stderr line: {last}",
        )
        return False

    def _planned_exit(self, process: object) -> bool:
        """Whether this exit is the one a planned kill / term / restart was aimed at."""
        if self.faults is None:
            return False
        spawned = self.target.spawned
        identity = spawned.identity if spawned is not None and spawned.popen is process else None
        return self.faults.planned_death("target", identity)

    def _check_health(self) -> None:
        sent_at = self.faults.now() if self.faults is not None else 0.0
        outcome = probe_health(self.target.host, self.target.port, self.health_path, self.timeout)
        hang_detail: str | None = None
        with self._lock:
            self.health_checks += 1
            if self._paused or self.target.stopping:
                return  # the orchestrator stepped in during the probe
            if outcome == "timeout" and self.faults is not None and self.faults.overlapping("target", sent_at):
                # A planned pause (SIGSTOP) or restart was in force while this probe waited.
                self.planned_timeouts += 1
                self.timeout_streak = 0
                return
            if outcome == "response":
                self.timeout_streak = 0
                self._hang_reported = False
            elif outcome == "timeout":
                self.timeout_streak += 1
                self.health_timeouts_max_streak = max(
                    self.health_timeouts_max_streak, self.timeout_streak
                )
                if self.timeout_streak >= self.hang_after and not self._hang_reported:
                    self._hang_reported = True
                    hang_detail = (
                        f"{self.target.spec.describe()}: GET {self.health_path} on "
                        f"{self.target.host}:{self.target.port} got no response within "
                        f"{self.timeout:g} s, {self.timeout_streak} times in a row"
                    )
            # "refused"/"error": the server answered at the TCP level; neither a hang nor health.
        if hang_detail is not None:
            self._emit("I-HANG", hang_detail)

    def _emit(self, predicate: str, detail: str) -> None:
        event = WatchEvent(predicate=predicate, at=_now_iso(), detail=detail)
        with self._lock:
            self.events.append(event)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # noqa: BLE001 - a bad callback must not stop the watching
                log.exception("watchdog on_event callback failed")

    # -- stderr --------------------------------------------------------------

    def scan_stderr(self) -> None:
        """Read stderr.log from where the last scan stopped; record crash markers."""
        if self.target.spec.kind == "url":
            return
        with self._scan_lock:
            path = self.target.stderr_path
            try:
                size = path.stat().st_size
            except OSError:
                return
            if size < self._stderr_offset:  # truncated: a new log
                self._stderr_offset, self._partial, self._capture = 0, b"", None
            if size == self._stderr_offset:
                return
            try:
                with path.open("rb") as handle:
                    handle.seek(self._stderr_offset)
                    chunk = handle.read(min(size - self._stderr_offset, MAX_SCAN_BYTES))
            except OSError:
                return
            self._stderr_offset += len(chunk)
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()  # an unfinished last line waits for the next scan
            for raw in lines:
                self._feed(raw.decode("utf-8", errors="replace").rstrip("\r"))

    def _feed(self, line: str) -> None:
        if any(marker in line for marker in CRASH_MARKERS):
            with self._lock:
                self.crash_markers.append(line)
                index = len(self.crash_markers) - 1
            is_traceback = "Traceback (most recent call last)" in line
            self._capture = (index, TRACEBACK_FOLLOW_LINES) if is_traceback else None
            return
        if self._capture is None:
            return
        index, remaining = self._capture
        with self._lock:
            self.crash_markers[index] += "\n" + line
        # The first unindented line after the frames is the exception itself.
        ends = bool(line) and not line[0].isspace() and not line.startswith(_TRACEBACK_CONTINUATIONS)
        self._capture = None if ends or remaining <= 1 else (index, remaining - 1)
