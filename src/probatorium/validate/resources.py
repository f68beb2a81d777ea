"""Resource properties of the target: a 1 Hz sampler and pure leak judges.

``ResourceSampler`` samples the target's process TREE (the pid the launcher
started plus every descendant: granian serves from a child process)
from ``/proc`` once per ``interval``: summed ``VmRSS``, open file descriptors,
threads, and the asyncio task count from the target's debug endpoint when it
offers one (docs/contracts.md contracts: ``GET /debug/vars`` → JSON with ``tasks``).
The pid is re-read from ``pid_getter()`` every tick; when it changes (the
target was restarted) the series gets a new ``segment`` and no slope is ever
fitted across that boundary.

``judge_leak(series, kind)`` is pure: it takes the list of samples and
decides I-MEM-1 (``rss``), I-FD-1 (``fds``) or I-TASK-1 (``tasks``). The
rule (documented with its numbers in docs/leaks.md):

1. Split the series into segments (restart boundaries). Per segment drop a
   warm-up of ``max(15 s, 20 % of the segment)`` capped at 120 s.
2. Reduce the rest to per-bucket MINIMA (5 s buckets; wider for very long
   runs so at most 400 buckets are fitted). A leak raises the floor; bursts
   (a GC-able allocation, a keep-alive task pile-up) do not.
3. Fit a Theil–Sen slope over the bucket minima, with the Mann–Kendall
   statistic and Sen's one-sided 95 % lower confidence bound.
4. STRONG rule (any window of ≥ 8 buckets, i.e. ≥ 40 s after warm-up; the
   whole window, its second half when that has ≥ 12 buckets, and its last
   3 minutes when those are at most a quarter of it):
   fail when slope ≥ 0.6·T, Sen's one-sided 95 % lower bound is > 0 (the
   rise is significant), ≥ 65 % of pairwise slopes are positive and the net
   growth (median of the last 3 minima minus median of the first 3) is
   ≥ 0.4·T·span (for the later windows also measured from the first 3
   minima of the whole segment: recovering from a dip is not a leak), and
   the window's later half alone still rises at ≥ 0.2·T (a start-up ramp
   that levelled off is not a leak). T = 10 MB/min, 20 fds/min,
   50 tasks/min.
5. WEAK rule (only when ≥ 10 minutes remain after warm-up): fail when slope
   ≥ 0.75·W (W = 1 MB/min, 2 fds/min, 5 tasks/min), Mann–Kendall z ≥ 3.09
   (one-sided p < 0.001), the second half alone still grows at ≥ 0.5·W, and
   the net growth (median of last vs first 10 % of minima) is ≥ 0.5·W·span
   and ≥ 5 % of the baseline.

6. EXHAUSTED rule (fds only): a fast fd leak fills the descriptor table and
   then levels off at the limit (accept() fails with EMFILE), which the
   strong rule's "still rising" test would excuse as a finished ramp. So
   I-FD-1 also fails when, within one segment, a process of the tree held
   ≥ 90 % of its RLIMIT_NOFILE soft limit (``fd_share``, read from
   /proc/PID/limits) and the tree's fds grew by ≥ 200 and ≥ half of their
   peak since the segment's first sample (warm-up included).

Too few samples (no window with 8 buckets) is ``not_judged``, never passed
(the EXHAUSTED rule needs no buckets).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import procfs
from ..targets.control import TARGET, FaultWindows
from ..procfs import process_tree  # noqa: F401 - re-exported: the tree the sampler sums

LeakKind = Literal["rss", "fds", "tasks"]
LeakStatus = Literal["passed", "failed", "not_judged"]

#: Which predicate each kind decides, and which sample field it reads.
PREDICATES: dict[str, str] = {"rss": "I-MEM-1", "fds": "I-FD-1", "tasks": "I-TASK-1"}
FIELDS: dict[str, str] = {"rss": "rss_bytes", "fds": "fds", "tasks": "tasks"}
UNITS: dict[str, str] = {"rss": "bytes/min", "fds": "fds/min", "tasks": "tasks/min"}

MB = 1_000_000  # SPEC "10 MB/min": decimal megabytes, the stricter reading

#: Strong-leak thresholds T (per minute): must be caught within a minute.
STRONG_PER_MIN: dict[str, float] = {"rss": 10 * MB, "fds": 20.0, "tasks": 50.0}
#: Weak-leak thresholds W (per minute): caught only over a long soak.
WEAK_PER_MIN: dict[str, float] = {"rss": 1 * MB, "fds": 2.0, "tasks": 5.0}

WARMUP_MIN_S = 15.0
WARMUP_FRACTION = 0.20
WARMUP_CAP_S = 120.0
BUCKET_S = 5.0
MAX_BUCKETS = 400
MIN_BUCKETS = 8
#: A bucket counts only with at least this share of the samples it should hold.
BUCKET_FILL = 0.6

# Strong rule constants (see the module docstring and docs/leaks.md).
STRONG_SLOPE_FACTOR = 0.6
STRONG_POSITIVE_PAIRS = 0.65
#: The second half of a window is tried on its own (a leak that starts late)
#: only when it has this many buckets: fewer would add a noisy second look.
HALF_WINDOW_MIN_BUCKETS = 12
#: Long windows are also tried over their last TRAILING_WINDOW_S seconds
#: (a leak that starts late in a soak is diluted in the whole-window slope).
TRAILING_WINDOW_S = 180.0
STRONG_GROWTH_FACTOR = 0.4
STRONG_EDGE_BUCKETS = 3
#: The window's later half, fitted alone, must still rise this fast (× T):
#: a start-up ramp that has already levelled off is not a leak.
STRONG_TAIL_FACTOR = 0.2
Z_95_ONE_SIDED = 1.6449

# Exhausted rule (fds): share of RLIMIT_NOFILE held, and growth that got it there.
FD_EXHAUSTED_SHARE = 0.9
FD_EXHAUSTED_MIN_GROWTH = 200
FD_EXHAUSTED_GROWTH_SHARE = 0.5

# Weak rule constants.
WEAK_MIN_SPAN_S = 600.0
WEAK_SLOPE_FACTOR = 0.75
WEAK_Z = 3.0902  # one-sided p < 0.001
WEAK_SECOND_HALF_FACTOR = 0.5
WEAK_GROWTH_FACTOR = 0.5
WEAK_RELATIVE_GROWTH = 0.05
WEAK_EDGE_FRACTION = 0.10


# --------------------------------------------------------------------------
# sampling


def sample_tree(root: int) -> dict[str, Any] | None:
    """One sample of the tree under `root`: rss_bytes, fds, threads, procs, and fd_share (the
    largest share of its RLIMIT_NOFILE soft limit any one process holds; None if unknown)."""
    measured = procfs.sample_tree(root)
    if measured is None:
        return None
    share = measured.fd_share
    return {"rss_bytes": measured.rss_bytes, "fds": measured.fds, "threads": measured.threads,
            "procs": measured.procs, "fd_share": None if share is None else round(share, 4)}


def fetch_debug(url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """The debug endpoint's JSON object (GET); None if it is not one or unreachable."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close", "Accept": "application/json"})
        response = connection.getresponse()
        body = response.read(1 << 20)
        if response.status != 200:
            return None
        data = json.loads(body)
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        connection.close()
    return data if isinstance(data, dict) else None


def debug_tasks(data: Mapping[str, Any] | None) -> int | None:
    """``tasks`` of a debug answer; None if absent or not an integer."""
    tasks = data.get("tasks") if isinstance(data, Mapping) else None
    if isinstance(tasks, bool) or not isinstance(tasks, int):
        return None
    return tasks


def debug_self_checks(data: Mapping[str, Any] | None) -> dict[str, int] | None:
    """``self_checks`` of a debug answer (predicate → cumulative count of the target's own checks,
    docs/contracts.md); None when absent or not an object. Entries that are not a predicate name
    with a non-negative integer are dropped."""
    raw = data.get("self_checks") if isinstance(data, Mapping) else None
    if not isinstance(raw, Mapping):
        return None
    return {str(k)[:64]: v for k, v in raw.items()
            if isinstance(k, str) and k and isinstance(v, int) and not isinstance(v, bool) and v >= 0}


def fetch_debug_tasks(url: str, timeout: float = 1.0) -> int | None:
    """``tasks`` from a debug endpoint (GET, JSON object); None if absent or unreachable."""
    return debug_tasks(fetch_debug(url, timeout))


def self_check_totals(samples: Sequence[Mapping[str, Any]]) -> dict[str, int] | None:
    """How many self-checks per predicate the target ran over the series (pure).

    The counts are cumulative per process: within one process lifetime the largest value
    seen is its count, and the lifetimes' counts are summed. A new lifetime starts at a
    pid change or when a count goes down (a restart that kept the pid); a new ``segment``
    alone (a planned pause) does not reset anything. None when no sample carried
    ``self_checks`` (the target does not offer the contract)."""
    done: dict[str, int] = {}  # sum over finished lifetimes
    peak: dict[str, int] = {}  # the current lifetime's maximum
    seen = False
    pid: Any = None
    for sample in samples:
        checks = sample.get("self_checks")
        if sample.get("pid") != pid:
            pid = sample.get("pid")
            for k, v in peak.items():
                done[k] = done.get(k, 0) + v
            peak = {}
        if not isinstance(checks, Mapping):
            continue
        seen = True
        for k, v in checks.items():
            if k in peak and v < peak[k]:  # went down: the process restarted under the same pid
                done[k] = done.get(k, 0) + peak[k]
                peak[k] = v
            else:
                peak[k] = max(v, peak.get(k, 0))
                done.setdefault(k, 0)
    if not seen:
        return None
    return {k: done.get(k, 0) + peak.get(k, 0) for k in sorted(set(done) | set(peak))}


class ResourceSampler:
    """Samples the target's process tree every `interval` s on a daemon thread.

    `pid_getter` is called every tick (the target may be restarted: a new
    pid, or the same pid with a new start time, opens a new ``segment``; the
    first sample of a segment after the first carries ``restart: True``).
    `debug_url` (a URL or a callable returning one, e.g. when the port
    changes on restart) is polled for ``tasks`` with a 1 s timeout.

    `faults` (the cell's planned fault windows): ticks a window of `subject` covers are
    skipped (``fault_skips``) and the next sample opens a new segment, so a planned
    restart or pause is never fitted as a leak.

    Each sample: ``t`` (s since start()), ``rss_bytes``, ``fds``,
    ``threads``, ``tasks`` (int or None), ``pid``, ``procs`` (processes in
    the tree), ``segment``; ``restart`` on a segment's first sample;
    ``self_checks`` (predicate → count) when the debug endpoint lists them.
    """

    def __init__(
        self,
        pid_getter: Callable[[], int | None],
        *,
        interval: float = 1.0,
        debug_url: str | Callable[[], str | None] | None = None,
        debug_timeout: float = 1.0,
        faults: FaultWindows | None = None,
        subject: str = TARGET,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self._pid_getter = pid_getter
        self.interval = interval
        self._debug_url = debug_url
        self._debug_timeout = debug_timeout
        self._samples: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self.started_at = ""
        self._identity: tuple[int, int | None] | None = None
        self._segment = -1
        #: Ticks on which no process could be sampled (target down or restarting).
        self.missed = 0
        #: Ticks on which the debug endpoint gave no ``tasks``.
        self.debug_misses = 0
        self._faults, self._subject = faults, subject
        #: Ticks skipped because a planned fault window (or its grace) covered them.
        self.fault_skips = 0
        self._after_fault = False

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> ResourceSampler:
        """Start sampling (the first sample is taken at once). Returns self."""
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        self._t0 = time.monotonic()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._thread = threading.Thread(target=self._run, name="probatorium-resources", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sampling and wait for the thread. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def samples(self) -> list[dict[str, Any]]:
        """A copy of the samples so far (safe to read while sampling)."""
        with self._lock:
            return [dict(s) for s in self._samples]

    def judge(self, **kwargs: Any) -> dict[str, LeakVerdict]:
        """``judge_all`` over the samples so far (I-MEM-1, I-FD-1, I-TASK-1)."""
        return judge_all(self.samples, **kwargs)

    def write_series(self, path: str | os.PathLike[str]) -> Path:
        """Write the series as JSON (``started_at``, ``interval``, ``samples``)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "started_at": self.started_at,
            "interval": self.interval,
            "missed": self.missed,
            "debug_misses": self.debug_misses,
            "fault_skips": self.fault_skips,
            "samples": self.samples,
        }
        target.write_text(json.dumps(document, indent=None, separators=(",", ":")) + "\n")
        return target

    # -- sampling ------------------------------------------------------------

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:  # noqa: BLE001 - a sampler must never die mid-run
                self.missed += 1
            tick += 1
            next_at = self._t0 + tick * self.interval
            now = time.monotonic()
            if now > next_at:  # a slow tick (debug endpoint time-out): skip, do not burst
                tick = int((now - self._t0) / self.interval) + 1
                next_at = self._t0 + tick * self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _resolve_debug_url(self) -> str | None:
        if self._debug_url is None:
            return None
        if callable(self._debug_url):
            try:
                return self._debug_url()
            except Exception:  # noqa: BLE001
                return None
        return self._debug_url

    def sample_once(self) -> dict[str, Any] | None:
        """Take one sample now and append it; None when no process was found."""
        t = time.monotonic() - self._t0
        try:
            pid = self._pid_getter()
        except Exception:  # noqa: BLE001 - the getter belongs to the caller
            pid = None
        if self._faults is not None and self._faults.covers_now(self._subject):
            # A planned pause / kill / restart: its samples say nothing about leaks, and
            # the series starts a new segment after it (a fresh baseline).
            self.fault_skips += 1
            self._after_fault = True
            return None
        if pid is None:
            self.missed += 1
            return None
        start = procfs.live_start_ticks(pid)
        measured = sample_tree(pid) if start is not None else None
        if measured is None:
            self.missed += 1
            return None
        sample: dict[str, Any] = {"t": round(t, 3), **measured, "tasks": None, "pid": pid}
        url = self._resolve_debug_url()
        if url:
            data = fetch_debug(url, self._debug_timeout)
            sample["tasks"] = debug_tasks(data)
            if sample["tasks"] is None:
                self.debug_misses += 1
            checks = debug_self_checks(data)
            if checks is not None:  # the self-check count contract (docs/contracts.md)
                sample["self_checks"] = checks
        identity = (pid, start)
        with self._lock:
            if identity != self._identity or self._after_fault:
                self._identity, self._after_fault = identity, False
                self._segment += 1
                if self._segment > 0:
                    sample["restart"] = True
            sample["segment"] = self._segment
            self._samples.append(sample)
        return sample


# --------------------------------------------------------------------------
# statistics (pure)


def theil_sen(points: Sequence[tuple[float, float]]) -> tuple[float, list[float]]:
    """Median of the pairwise slopes (per x unit) and the sorted pairwise slopes."""
    slopes: list[float] = []
    for i in range(len(points)):
        xi, yi = points[i]
        for j in range(i + 1, len(points)):
            xj, yj = points[j]
            if xj != xi:
                slopes.append((yj - yi) / (xj - xi))
    if not slopes:
        return 0.0, []
    slopes.sort()
    return _median_sorted(slopes), slopes


def _median_sorted(values: Sequence[float]) -> float:
    n = len(values)
    mid = n // 2
    return float(values[mid]) if n % 2 else (values[mid - 1] + values[mid]) / 2.0


def _median(values: Sequence[float]) -> float:
    return _median_sorted(sorted(values))


def mann_kendall(ys: Sequence[float]) -> tuple[int, float, float]:
    """(S, variance of S with tie correction, z with continuity correction)."""
    n = len(ys)
    s = 0
    for i in range(n):
        for j in range(i + 1, n):
            d = ys[j] - ys[i]
            s += (d > 0) - (d < 0)
    ties: dict[float, int] = {}
    for y in ys:
        ties[y] = ties.get(y, 0) + 1
    var = (n * (n - 1) * (2 * n + 5) - sum(c * (c - 1) * (2 * c + 5) for c in ties.values() if c > 1)) / 18.0
    if var <= 0:
        return s, 0.0, 0.0
    if s > 0:
        z = (s - 1) / math.sqrt(var)
    elif s < 0:
        z = (s + 1) / math.sqrt(var)
    else:
        z = 0.0
    return s, var, z


def sen_lower_bound(sorted_slopes: Sequence[float], var_s: float, z: float = Z_95_ONE_SIDED) -> float:
    """Sen's one-sided lower confidence bound of the Theil–Sen slope."""
    n = len(sorted_slopes)
    if n == 0:
        return 0.0
    c = z * math.sqrt(max(var_s, 0.0))
    rank = int(math.floor((n - c) / 2.0))  # 1-based rank of the lower bound
    rank = min(max(rank, 1), n)
    return float(sorted_slopes[rank - 1])


def warmup_for(span: float) -> float:
    """The warm-up dropped from a segment of `span` seconds."""
    return min(WARMUP_CAP_S, max(WARMUP_MIN_S, WARMUP_FRACTION * span))


def bucket_minima(
    points: Sequence[tuple[float, float]], start: float, end: float, width: float, min_count: int
) -> list[tuple[float, float]]:
    """Minimum of each `width` bucket in [start, end) holding ≥ `min_count` points.

    Each bucket minimum is placed at its bucket's centre.
    """
    buckets: dict[int, list[float]] = {}
    for t, y in points:
        if t < start or t >= end:
            continue
        buckets.setdefault(int((t - start) // width), []).append(y)
    # A bucket with too few samples (a sampling gap, the trailing partial
    # bucket) is left out rather than trusted.
    return [
        (start + (index + 0.5) * width, min(values))
        for index, values in sorted(buckets.items())
        if len(values) >= min_count
    ]


@dataclass
class WindowFit:
    """Statistics of one window of bucket minima."""

    t0: float
    t1: float
    n: int
    slope_per_min: float
    lower_per_min: float
    positive_pairs: float
    mk_z: float
    growth: float
    baseline: float


def fit_window(buckets: Sequence[tuple[float, float]], edge: int) -> WindowFit:
    """Theil–Sen, Sen lower bound, Mann–Kendall and net growth over `buckets`."""
    slope, slopes = theil_sen(buckets)
    ys = [y for _, y in buckets]
    _s, var_s, z = mann_kendall(ys)
    lower = sen_lower_bound(slopes, var_s)
    positive = sum(1 for s in slopes if s > 0) / len(slopes) if slopes else 0.0
    edge = max(1, min(edge, len(ys) // 2))
    baseline = _median(ys[:edge])
    growth = _median(ys[-edge:]) - baseline
    return WindowFit(
        t0=buckets[0][0], t1=buckets[-1][0], n=len(buckets),
        slope_per_min=slope * 60.0, lower_per_min=lower * 60.0,
        positive_pairs=positive, mk_z=z, growth=growth, baseline=baseline,
    )


@dataclass
class LeakVerdict:
    """The verdict of one leak predicate over a whole series."""

    status: LeakStatus
    evaluations: int
    reason: str
    slope_per_min: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    predicate: str = ""
    kind: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict (a PropertyResult plus slope_per_min and evidence)."""
        return {
            "status": self.status,
            "evaluations": self.evaluations,
            "reason": self.reason,
            "slope_per_min": self.slope_per_min,
            "evidence": self.evidence,
        }


def _segments(series: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split at restart boundaries: a ``segment`` change, a ``restart`` flag or a pid change."""
    segments: list[list[dict[str, Any]]] = []
    previous: dict[str, Any] | None = None
    for sample in series:
        boundary = previous is None or bool(sample.get("restart"))
        if previous is not None:
            if sample.get("segment") is not None and sample.get("segment") != previous.get("segment"):
                boundary = True
            if sample.get("pid") is not None and sample.get("pid") != previous.get("pid"):
                boundary = True
        if boundary:
            segments.append([])
        segments[-1].append(sample)
        previous = sample
    return segments


def _fmt(kind: str, per_min: float) -> str:
    if kind == "rss":
        return f"{per_min / MB:.2f} MB/min"
    return f"{per_min:.1f} {UNITS[kind]}"


@dataclass(frozen=True)
class _Rules:
    """What one judge_leak call applies: the kind, the sample field, thresholds and bucketing."""

    kind: str
    key: str
    strong: float
    weak: float
    warmup: float | None
    bucket: float
    min_buckets: int


@dataclass
class _Findings:
    """What the per-segment fits found so far."""

    fits: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    evaluations: int = 0


def judge_leak(
    series: Sequence[dict[str, Any]],
    kind: str,
    *,
    warmup: float | None = None,
    bucket: float = BUCKET_S,
    min_buckets: int = MIN_BUCKETS,
    strong_per_min: float | None = None,
    weak_per_min: float | None = None,
) -> LeakVerdict:
    """Decide one leak predicate (`kind` rss/fds/tasks) over a sample series.

    `warmup` overrides the per-segment warm-up rule (seconds), `bucket` the
    bucket width; thresholds default to STRONG_PER_MIN / WEAK_PER_MIN.
    """
    if kind not in FIELDS:
        raise ValueError(f"unknown leak kind {kind!r}; valid: {', '.join(FIELDS)}")
    rules = _Rules(kind, FIELDS[kind], STRONG_PER_MIN[kind] if strong_per_min is None else strong_per_min,
                   WEAK_PER_MIN[kind] if weak_per_min is None else weak_per_min, warmup, bucket, min_buckets)
    if not series:
        return _verdict(rules, "not_judged", 0, "no resource samples")
    if kind == "tasks" and all(s.get("tasks") is None for s in series):
        return _verdict(rules, "not_judged", 0, "no asyncio task counts: the target offers no debug endpoint "
                        "with an integer 'tasks' field")
    found = _Findings()
    for index, segment in enumerate(_segments(series)):
        _judge_segment(rules, index, segment, found)
    return _conclude(rules, found)


def _verdict(rules: _Rules, status: LeakStatus, evaluations: int, reason: str, slope: float | None = None,
             evidence: dict[str, Any] | None = None) -> LeakVerdict:
    return LeakVerdict(status, evaluations, reason, slope, evidence or {}, PREDICATES[rules.kind], rules.kind)


def _judge_segment(rules: _Rules, index: int, segment: Sequence[dict[str, Any]], found: _Findings) -> None:
    """Fit one restart segment: the EXHAUSTED rule (fds), the STRONG windows, the WEAK rule."""
    key = rules.key
    points = [(float(s["t"]), float(s[key])) for s in segment if s.get(key) is not None]
    if len(points) < 2:
        found.skipped.append(f"segment {index}: {len(points)} sample(s)")
        return
    if rules.kind == "fds":
        exhausted = _fd_exhausted(segment, index, points)
        if exhausted is not None:
            found.fits.append(exhausted)
            found.failures.append(exhausted)
            found.evaluations += len(points)
    seg_start, seg_end = points[0][0], points[-1][0]
    span = seg_end - seg_start
    skip = warmup_for(span) if rules.warmup is None else rules.warmup
    start = seg_start + skip
    end = seg_end + 1e-9
    if end - start <= 0:
        found.skipped.append(f"segment {index}: {span:.0f} s, all warm-up")
        return
    dts = sorted(b[0] - a[0] for a, b in zip(points, points[1:]) if b[0] > a[0])
    step = _median_sorted(dts) if dts else 1.0
    width = max(rules.bucket, (end - start) / MAX_BUCKETS)
    min_count = max(1, int(math.floor(BUCKET_FILL * width / step)))
    buckets = bucket_minima(points, start, end, width, min_count)
    if len(buckets) < rules.min_buckets:
        found.skipped.append(
            f"segment {index}: {len(buckets)} bucket(s) of {width:g} s after a {skip:g} s warm-up "
            f"(need {rules.min_buckets})"
        )
        return
    found.evaluations += sum(1 for t, _ in points if start <= t < end)
    head = {"segment": index, "bucket_s": width, "warmup_s": skip}
    _strong_rule(rules, buckets, head, found)
    if (end - start) >= WEAK_MIN_SPAN_S:
        _weak_rule(rules, buckets, head, found)


def _strong_windows(buckets: list[tuple[float, float]], min_buckets: int) -> list[tuple[str, list]]:
    """The whole window, its second half and its last 3 minutes when they qualify (rule 4)."""
    windows: list[tuple[str, list]] = [("whole", buckets)]
    half = buckets[len(buckets) // 2:]
    if len(half) >= max(min_buckets, HALF_WINDOW_MIN_BUCKETS):
        windows.append(("second_half", half))
    trailing = [b for b in buckets if b[0] >= buckets[-1][0] - TRAILING_WINDOW_S]
    if len(trailing) >= min_buckets and 2 * len(trailing) <= len(half):
        windows.append(("last_3min", trailing))
    return windows


def _strong_rule(rules: _Rules, buckets: list[tuple[float, float]], head: dict[str, Any],
                 found: _Findings) -> None:
    """The STRONG rule over each window of one segment (module docstring, rule 4)."""
    strong = rules.strong
    segment_floor = _median([y for _, y in buckets[:STRONG_EDGE_BUCKETS]])
    for name, window in _strong_windows(buckets, rules.min_buckets):
        fit = fit_window(window, STRONG_EDGE_BUCKETS)
        span_min = (fit.t1 - fit.t0) / 60.0
        tail_slope = theil_sen(window[len(window) // 2:])[0] * 60.0
        needed = STRONG_GROWTH_FACTOR * strong * span_min
        # A later window must also end above where the whole segment's
        # floor started: recovering from a dip (load fell, then came
        # back) is not a leak, a leak sets a new floor.
        above_start = fit.baseline + fit.growth - segment_floor
        strong_fail = (
            fit.slope_per_min >= STRONG_SLOPE_FACTOR * strong
            and fit.lower_per_min > 0.0
            and fit.positive_pairs >= STRONG_POSITIVE_PAIRS
            and fit.growth >= needed
            and above_start >= needed
            and tail_slope >= STRONG_TAIL_FACTOR * strong
        )
        record = {
            "segment": head["segment"], "window": name, "rule": "strong", "bucket_s": head["bucket_s"],
            "warmup_s": head["warmup_s"], **_fit_dict(fit), "tail_slope_per_min": tail_slope,
            "above_segment_start": above_start,
        }
        found.fits.append(record)
        if strong_fail:
            found.failures.append({**record, "buckets": [[round(t, 3), y] for t, y in window]})


def _weak_rule(rules: _Rules, buckets: list[tuple[float, float]], head: dict[str, Any],
               found: _Findings) -> None:
    """The WEAK rule over one long segment (module docstring, rule 5)."""
    weak = rules.weak
    half = buckets[len(buckets) // 2:]
    whole = fit_window(buckets, max(1, int(len(buckets) * WEAK_EDGE_FRACTION)))
    second = fit_window(half, max(1, int(len(half) * WEAK_EDGE_FRACTION))) if len(half) >= 2 else None
    span_min = (whole.t1 - whole.t0) / 60.0
    weak_fail = (
        whole.slope_per_min >= WEAK_SLOPE_FACTOR * weak
        and whole.mk_z >= WEAK_Z
        and second is not None
        and second.slope_per_min >= WEAK_SECOND_HALF_FACTOR * weak
        and whole.growth >= WEAK_GROWTH_FACTOR * weak * span_min
        and whole.growth >= WEAK_RELATIVE_GROWTH * abs(whole.baseline)
    )
    record = {
        "segment": head["segment"], "window": "whole", "rule": "weak", "bucket_s": head["bucket_s"],
        "warmup_s": head["warmup_s"], **_fit_dict(whole),
        "second_half_slope_per_min": second.slope_per_min if second else None,
    }
    found.fits.append(record)
    if weak_fail:
        found.failures.append({**record, "buckets": [[round(t, 3), y] for t, y in buckets]})


def _conclude(rules: _Rules, found: _Findings) -> LeakVerdict:
    """The verdict from every segment's fits: exhausted first, then the worst failure, else passed."""
    kind, predicate = rules.kind, PREDICATES[rules.kind]
    fits, failures, skipped, evaluations = found.fits, found.failures, found.skipped, found.evaluations
    if not fits:
        return _verdict(rules, "not_judged", 0,
                        "too few samples after warm-up: " + "; ".join(skipped or ["no usable samples"]))
    exhausted = [f for f in failures if f["rule"] == "exhausted"]
    if exhausted:
        f = exhausted[0]
        reason = (
            f"{predicate}: the descriptor table is exhausted: {f['peak']:g} fds open, "
            f"{f['peak_share']:.0%} of a process's RLIMIT_NOFILE (grew by {f['growth']:g} since "
            f"t={f['t0']:g} s, segment {f['segment']}; {_fmt(kind, f['slope_per_min'])} on the way up)"
        )
        return _verdict(rules, "failed", evaluations, reason, f["slope_per_min"],
                        {"failures": failures, "fits": fits, "skipped": skipped})
    if failures:
        worst = max(failures, key=lambda f: f["slope_per_min"])
        reason = (
            f"{predicate}: {kind} grows {_fmt(kind, worst['slope_per_min'])} (Theil–Sen over "
            f"{worst['n']} bucket minima, {worst['rule']} rule, segment {worst['segment']} "
            f"{worst['window']}; lower bound {_fmt(kind, worst['lower_per_min'])}, "
            f"{worst['positive_pairs']:.0%} positive pairs, net growth {worst['growth']:g})"
        )
        return _verdict(rules, "failed", evaluations, reason, worst["slope_per_min"],
                        {"failures": failures, "fits": fits, "skipped": skipped})
    whole_fits = [f for f in fits if f["window"] == "whole" and f["rule"] == "strong"]
    slope = max(f["slope_per_min"] for f in whole_fits)
    reason = (
        f"{kind} slope {_fmt(kind, slope)} over {len(whole_fits)} segment(s) "
        f"(strong threshold {_fmt(kind, rules.strong)})"
    )
    return _verdict(rules, "passed", evaluations, reason, slope, {"fits": fits, "skipped": skipped})


def _fd_exhausted(segment: Sequence[dict[str, Any]], index: int,
                 points: Sequence[tuple[float, float]]) -> dict[str, Any] | None:
    """The EXHAUSTED rule's failure record for one segment, or None (module docstring, rule 6)."""
    shares = [(float(s["t"]), float(s["fd_share"])) for s in segment if s.get("fd_share") is not None]
    if not shares:
        return None
    peak_share = max(v for _, v in shares)
    t_peak, peak = max(points, key=lambda p: p[1])
    t0, first = points[0]
    growth = peak - first
    if peak_share < FD_EXHAUSTED_SHARE or growth < FD_EXHAUSTED_MIN_GROWTH \
            or growth < FD_EXHAUSTED_GROWTH_SHARE * peak:
        return None
    rise = [p for p in points if p[0] <= t_peak]
    slope = theil_sen(rise)[0] * 60.0 if len(rise) >= 2 else 0.0
    return {"segment": index, "window": "segment", "rule": "exhausted", "t0": round(t0, 3),
            "t1": round(t_peak, 3), "n": len(points), "slope_per_min": slope, "peak": peak,
            "peak_share": peak_share, "growth": growth, "baseline": first,
            "buckets": [[round(t, 3), y] for t, y in points]}


def _fit_dict(fit: WindowFit) -> dict[str, Any]:
    return {
        "t0": round(fit.t0, 3), "t1": round(fit.t1, 3), "n": fit.n,
        "slope_per_min": fit.slope_per_min, "lower_per_min": fit.lower_per_min,
        "positive_pairs": round(fit.positive_pairs, 4), "mk_z": round(fit.mk_z, 3),
        "growth": fit.growth, "baseline": fit.baseline,
    }


def judge_all(series: Sequence[dict[str, Any]], **kwargs: Any) -> dict[str, LeakVerdict]:
    """I-MEM-1, I-FD-1 and I-TASK-1 over one series, keyed by predicate."""
    return {PREDICATES[kind]: judge_leak(series, kind, **kwargs) for kind in FIELDS}


#: A count (fds, tasks) is "drained" when, in the quiet settle window, its floor is back within
#: this many minutes of a strong leak's growth above its idle level before the traffic.
DRAIN_MARGIN_MINUTES = 0.5


def drained_after_traffic(pred: str, traffic: Sequence[dict[str, Any]], settle: Sequence[dict[str, Any]]) -> str:
    """Why a count that rose under traffic was no leak ('' when it stayed up, or cannot tell).

    A leaked fd or task stays when the load stops; one held by in-flight work goes back to
    the idle level. Idle = the lowest of the segment's first 3 samples (taken before the
    slices' traffic, or right after a restart); settled = the lowest of the quiet window's
    last 5 samples. RSS is never judged this way: a Python heap rarely gives memory back,
    so a flat settle proves nothing either way.
    """
    kind = next((k for k, p in PREDICATES.items() if p == pred), None)
    if kind not in ("fds", "tasks") or len(settle) < 5 or not traffic:
        return ""
    key = FIELDS[kind]
    seg = traffic[-1].get("segment", 0)
    idle = [x[key] for x in traffic if x.get("segment", 0) == seg and isinstance(x.get(key), int)][:3]
    late = [x[key] for x in settle[-5:] if x.get("segment", 0) == seg and isinstance(x.get(key), int)]
    if len(idle) < 3 or len(late) < 3:
        return ""
    before, after = min(idle), min(late)
    if after <= before + DRAIN_MARGIN_MINUTES * STRONG_PER_MIN[kind]:
        return f"{key} went back to {after} once traffic stopped ({before} before it)"
    return ""


def load_series(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The samples of a series written by ``ResourceSampler.write_series``."""
    data = json.loads(Path(path).read_text())
    return list(data["samples"] if isinstance(data, dict) else data)
