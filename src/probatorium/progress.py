"""Progress with ETA on stderr: validate (cell i/n), bench (competitor x cell, probe), fuzz, Tier 3 (seed i/n).

The orchestrators feed a :class:`Progress` with a plan (how many units, and
how long each is planned to take where the run is time-bounded), unit
start/finish events, a short "where inside the unit" text and sampled
counters. The reporter owns the clock and computes the ETA (:func:`eta_s`,
a pure function) and renders one status text (:func:`status_text`).

Three modes (:func:`progress_mode`):

* ``live`` (stderr is a terminal and ``CI`` is not true): one status line,
  redrawn in place at most 4 times a second; messages scroll above it;
* ``lines`` (not a terminal, or ``CI=true``): plain lines only, at most one
  line per unit end and one heartbeat line every 30 s, so CI logs stay short;
* ``off`` (``--quiet``, or ``PROBATORIUM_PROGRESS=0``): no status, no
  heartbeat; the run's own message lines still go to stderr.

Progress never writes to stdout (stdout carries exports and ``--json``).
Counters are sampled (a dict replaced by assignment), never locked per request.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

LIVE_REFRESH_S = 0.25  # at most 4 redraws a second
HEARTBEAT_S = 30.0  # lines mode: at most one heartbeat line per 30 s
MAX_TICKS = 40 * 24 * 3600 * 4  # the ticker thread's bound: 40 days of 4 ticks a second
_FALSE = ("0", "false", "no", "off")
_TRUE = ("1", "true", "yes", "on")


def progress_mode(stream: TextIO, env: Mapping[str, str] | None = None, quiet: bool = False) -> str:
    """'off' (--quiet / PROBATORIUM_PROGRESS=0), 'lines' (no terminal, or CI=true) or 'live'."""
    env = os.environ if env is None else env
    if quiet or env.get("PROBATORIUM_PROGRESS", "").strip().lower() in _FALSE:
        return "off"
    if env.get("CI", "").strip().lower() in _TRUE:
        return "lines"
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        tty = False
    return "live" if tty else "lines"


def fmt_duration(seconds: float | None) -> str:
    """42 → '42s', 185 → '3m05s', 3720 → '1h02m'; None → '?'."""
    if seconds is None:
        return "?"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def eta_s(planned: Sequence[float | None], actual: Sequence[float | None], current: int | None,
          in_unit_s: float, current_left_s: float | None = None) -> float | None:
    """Seconds left, or None when nothing tells yet.

    ``planned[i]`` is unit i's planned duration (None: unknown), ``actual[i]``
    how long it took once finished (None: not finished; 0.0: skipped — a
    skipped unit costs nothing and teaches nothing). ``current`` is the
    running unit's index and ``in_unit_s`` how long it has been running.
    With plans, every unit left is its plan scaled by what the finished
    units took over what they planned (start-up, settle and shutdown add to
    a cell's budget); without plans, the mean of the finished units.
    ``current_left_s``, when the running unit knows better (Tier 3 with
    explicit seeds: seeds left x their mean), replaces its own estimate.
    """
    done = [(p, a) for p, a in zip(planned, actual) if a is not None and a > 0]
    left = [i for i in range(len(planned)) if actual[i] is None and i != current
            and (current is None or i > current)]
    todo = left + ([current] if current is not None else [])
    if not todo:
        return 0.0
    if all(planned[i] is not None for i in todo):
        with_plan = [(p, a) for p, a in done if p]
        ratio = sum(a for _, a in with_plan) / sum(p for p, _ in with_plan) if with_plan else 1.0
        ratio = min(max(ratio, 0.5), 5.0)  # one odd unit must not swing the estimate wildly
        rest = sum(planned[i] * ratio for i in left)  # type: ignore[operator]
        if current is not None:
            rest += current_left_s if current_left_s is not None else \
                max(0.0, planned[current] * ratio - in_unit_s)  # type: ignore[operator]
        return rest
    if not done and current_left_s is None:
        return None
    mean = sum(a for _, a in done) / len(done) if done else 0.0
    rest = mean * len(left)
    if current is not None:
        rest += current_left_s if current_left_s is not None else max(0.0, mean - in_unit_s)
    return rest


def fmt_counts(counts: Mapping[str, int]) -> str:
    """{'requests': 12345, 'incidents': 1} → '12,345 requests · 1 incident' (zero counts kept)."""
    parts = []
    for name, n in counts.items():
        noun = name[:-1] if n == 1 and name.endswith("s") else name
        parts.append(f"{n:,} {noun}")
    return " · ".join(parts)


@dataclass
class Snapshot:
    """What one status text shows (a value: :func:`status_text` is pure)."""

    command: str
    noun: str
    index: int | None  # 0-based running unit, None before the first / after the last
    total: int
    label: str = ""
    sub: str = ""
    elapsed_s: float = 0.0
    eta_s: float | None = None
    counts: dict[str, int] = field(default_factory=dict)


def status_text(s: Snapshot) -> str:
    """'validate · cell 2/3 app/uvicorn · tier 3 seed 4/30 · 1m00s elapsed · ~1m30s left · 12 requests'."""
    parts = [s.command]
    if s.index is not None:
        parts.append(f"{s.noun} {s.index + 1}/{s.total}" + (f" {s.label}" if s.label else ""))
    if s.sub:
        parts.append(s.sub)
    parts.append(f"{fmt_duration(s.elapsed_s)} elapsed")
    parts.append(f"~{fmt_duration(s.eta_s)} left" if s.eta_s is not None else "time left unknown")
    if s.counts:
        parts.append(fmt_counts(s.counts))
    return " · ".join(parts)


class NullProgress:
    """The reporter of a run nobody watches (tests, library calls): every event is dropped."""

    mode = "off"

    def __call__(self, msg: str) -> None:
        """A message line: dropped."""

    def plan(self, planned: Sequence[float | None], noun: str = "cell") -> None:
        """The units of the run: ignored."""

    def start(self, label: str = "") -> None:
        """A unit begins: ignored."""

    def finish(self, outcome: str = "", *, skipped: bool = False, announce: bool = True) -> None:
        """A unit ended: ignored."""

    def sub(self, text: str) -> None:
        """Where inside the unit: ignored."""

    def unit_left(self, seconds: float) -> None:
        """The running unit's own estimate: ignored."""

    def counts(self, **counts: int) -> None:
        """Sampled counters: ignored."""

    def close(self) -> None:
        """Nothing to stop."""


def reporter_of(obj: Any) -> Progress | NullProgress:
    """The Progress behind a ``progress`` option (a plain callable or None gets a NullProgress)."""
    return obj if isinstance(obj, Progress) else NullProgress()


class Progress:
    """The reporter: events in, one status line (live) or a few plain lines (CI) out, on stderr.

    Calling it with a string prints that message line (it is the ``progress``
    callable of :class:`~probatorium.validate.plan.ValidateOptions`).
    """

    def __init__(self, command: str, *, mode: str = "lines", stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, heartbeat_s: float = HEARTBEAT_S,
                 width: Callable[[], int] | None = None) -> None:
        self.command, self.mode, self.clock, self.heartbeat_s = command, mode, clock, heartbeat_s
        self.stream = stream if stream is not None else sys.stderr
        self.width = width or (lambda: shutil.get_terminal_size((120, 20)).columns)
        self.noun = "cell"
        self.planned: list[float | None] = []
        self.actual: list[float | None] = []
        self.current: int | None = None
        self.label = self._sub = ""
        self._counts: dict[str, int] = {}
        self._hint: tuple[float, float] | None = None  # (when, seconds left in the running unit)
        self.t0 = self.unit_t0 = clock()
        self.last_beat = self.t0
        # around stream writes only (messages, redraws), never per request; reentrant: a signal handler
        # on the main thread may print while that thread is inside a write
        self._lock = threading.RLock()
        self._drawn = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- events -----------------------------------------------------------------------------
    def __call__(self, msg: str) -> None:
        """A message line (the run's own progress messages): above the live line, or plain."""
        with self._lock:
            self._clear()
            self.stream.write(msg + "\n")
            self._draw()
            self.stream.flush()

    def plan(self, planned: Sequence[float | None], noun: str = "cell") -> None:
        """The run's units and their planned durations (None where unknown)."""
        self.planned, self.actual, self.noun = list(planned), [None] * len(planned), noun

    def start(self, label: str = "") -> None:
        """The next unit begins."""
        self.current = 0 if self.current is None else self.current + 1
        if self.current >= len(self.planned):  # more units than planned: grow the plan
            self.planned.append(None)
            self.actual.append(None)
        self.label, self._sub, self._counts, self._hint = label, "", {}, None
        self.unit_t0 = self.clock()

    def finish(self, outcome: str = "", *, skipped: bool = False, announce: bool = True) -> None:
        """The running unit ended; ``announce`` prints its end line (off where the caller prints one)."""
        if self.current is None:
            return
        i = self.current
        took = self.clock() - self.unit_t0
        self.actual[i] = 0.0 if skipped else max(took, 1e-9)  # 0.0: done, but teaches nothing
        if announce and self.mode != "off":
            left = eta_s(self.planned, self.actual, None, 0.0)
            self(f"progress: {self.noun} {i + 1}/{len(self.planned)} done" + (f" ({outcome})" if outcome else "")
                 + f" in {fmt_duration(took)} · {fmt_duration(self.clock() - self.t0)} elapsed"
                 + (f" · ~{fmt_duration(left)} left" if left else ""))
        self._sub = ""

    def sub(self, text: str) -> None:
        """Where inside the unit ('tier 3 seed 4/30', 'probe 2/5'): shown live and in heartbeats."""
        self._sub = text

    def counts(self, **counts: int) -> None:
        """Sampled counters of the running unit (requests, incidents): replaced, not locked."""
        self._counts = dict(counts)

    def unit_left(self, seconds: float) -> None:
        """The running unit's own estimate of its time left (counts down from now until replaced)."""
        self._hint = (self.clock(), max(0.0, seconds))

    # ---- rendering --------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The status now."""
        now = self.clock()
        # copies: the ticker thread reads while start() may grow the lists
        planned, actual, current = list(self.planned), list(self.actual), self.current
        n = min(len(planned), len(actual))
        planned, actual = planned[:n], actual[:n]
        running = current if current is not None and current < n and actual[current] is None else None
        hint = self._hint
        left = max(0.0, hint[1] - (now - hint[0])) if hint is not None and running is not None else None
        return Snapshot(command=self.command, noun=self.noun, index=running, total=n,
                        label=self.label if running is not None else "", sub=self._sub, elapsed_s=now - self.t0,
                        eta_s=eta_s(planned, actual, running, now - self.unit_t0, left),
                        counts=dict(self._counts))

    def tick(self) -> None:
        """Redraw the live line, or print a heartbeat line when 30 s have passed (lines mode)."""
        if self.mode == "live":
            with self._lock:
                self._clear()
                self._draw()
                self.stream.flush()
        elif self.mode == "lines" and self.clock() - self.last_beat >= self.heartbeat_s:
            self.last_beat = self.clock()
            self("progress: " + status_text(self.snapshot()))

    def _draw(self) -> None:
        if self.mode == "live":
            text = status_text(self.snapshot())[: max(20, self.width() - 1)]  # never wraps
            self.stream.write(text)
            self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self._drawn = False

    # ---- the ticker -------------------------------------------------------------------------
    def begin(self) -> Progress:
        """Start the ticker thread (live: 4 redraws a second; lines: a heartbeat check every second)."""
        if self.mode != "off" and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="probatorium-progress", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        interval = LIVE_REFRESH_S if self.mode == "live" else 1.0
        for _ in range(MAX_TICKS):
            if self._stop.wait(interval):
                return
            try:
                self.tick()
            except (OSError, ValueError):  # stderr went away (a closed pipe): progress stops, the run goes on
                return

    def close(self) -> None:
        """Stop the ticker and take the live line away (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with self._lock:
            self._clear()
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self.begin()

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_progress(command: str, quiet: bool = False, stream: TextIO | None = None) -> Progress:
    """The reporter of a command run from the CLI, its mode chosen from stderr, CI and --quiet."""
    stream = stream if stream is not None else sys.stderr
    return Progress(command, mode=progress_mode(stream, quiet=quiet), stream=stream)
