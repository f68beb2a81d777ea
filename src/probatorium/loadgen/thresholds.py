"""k6-style thresholds: ``'p99<50ms'``, ``'errors<0.1%'``, ``'rps>1000'`` as data, parsed and judged purely.

Grammar (whitespace ignored, case-insensitive)::

    threshold := METRIC OP NUMBER [UNIT]
    OP        := "<" | "<=" | ">" | ">="
    METRIC    := latency | "rps" | "throughput" | count
    latency   := "p" N | "p(" N ")" | "max" | "mean" | "avg"     UNIT us | µs | ms | s (required)
                 N a percentile in (0, 100]; p999 = p99.9, p9999 = p99.99
    count     := "errors" | "errors." CLASS | "unsent"          UNIT "%" (of attempts) or none (a count)
                 CLASS connect | reset | timeout | status | protocol
    rps       := requests answered per second of the window     no UNIT

A threshold is judged against one :class:`Measured` (a loadgen result, or a
bench cell's merged saturation result). Percentiles are read from the merged
HdrHistogram, never averaged. A latency with no recorded sample, or an error
ratio with no attempt, is *not measured* and counts as broken: a run that
measured nothing does not pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from probatorium.errors import UsageError
from probatorium.loadgen import hist

__all__ = ["Threshold", "Measured", "Verdict", "parse_threshold", "parse_thresholds", "evaluate",
           "all_passed", "ALLOWED"]

ERROR_CLASSES = ("connect", "reset", "timeout", "status", "protocol")
#: how a threshold may be written (the tail of every parse error)
ALLOWED = ("allowed: METRIC OP VALUE; METRIC p50|p90|p95|p99|p99.9|pN|max|mean with us|ms|s, "
           "rps (requests/s), errors|errors.{connect,reset,timeout,status,protocol}|unsent as N or N%; "
           "OP < <= > >=; e.g. 'p99<50ms', 'errors<0.1%', 'rps>=1000'")
LATENCY_UNITS = {"us": 1.0, "µs": 1.0, "μs": 1.0, "ms": 1000.0, "s": 1_000_000.0}  # micro sign and Greek mu
_NAMED_LATENCY = {"max": "max", "mean": "mean", "avg": "mean"}
_OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_SHAPE = re.compile(
    r"(?P<metric>[a-zµ_][a-z0-9_.()]*)\s*(?P<op><=|>=|==|!=|=|<|>)\s*"
    r"(?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*(?P<unit>\S*)")


@dataclass(frozen=True)
class Threshold:
    """One parsed threshold. ``metric`` is canonical (``p99``, ``p99.9``, ``mean``, ``rps``,
    ``errors``, ``errors.timeout``, ``unsent``); ``value`` is in ``unit`` as written."""

    expr: str  # as the user wrote it (stripped)
    metric: str
    op: str
    value: float
    unit: str  # "us" | "ms" | "s" for latency, "%" or "" for counts, "" for rps
    kind: str  # "latency" | "rps" | "count" | "ratio"
    percentile: float | None = None  # latency pN; None for max / mean


@dataclass(frozen=True)
class Measured:
    """What a threshold is judged against (one loadgen run or one bench cell's saturation)."""

    requests: int  # responses received (any status)
    duration_s: float
    rps: float
    errors: Mapping[str, int]
    latency_us: Mapping[str, float]
    histogram: str = ""  # merged HdrHistogram (V2 base64), µs; percentiles are read from it
    unsent: int = 0

    @classmethod
    def from_load_result(cls, d: Mapping[str, Any]) -> "Measured":
        """From ``LoadResult.to_dict()`` (or the JSON loadgen prints)."""
        return cls(requests=d["requests"], duration_s=d["duration_s"], rps=d["requests_per_sec"],
                   errors=dict(d["errors"]), latency_us=dict(d["latency_us"]), histogram=d.get("histogram", ""),
                   unsent=d.get("unsent", 0))

    @classmethod
    def from_saturation(cls, sat: Any) -> "Measured":
        """From a bench cell's ``Saturation`` (closed loop: nothing is unsent)."""
        return cls(requests=sat.requests, duration_s=sat.duration_s, rps=sat.rps, errors=dict(sat.errors),
                   latency_us=dict(sat.latency_us), histogram=sat.histogram)

    @property
    def attempts(self) -> int:
        """Requests that got an answer plus those that failed without one (status errors are answers)."""
        return self.requests + sum(v for k, v in self.errors.items() if k != "status")


@dataclass(frozen=True)
class Verdict:
    """One threshold judged: ``actual`` in the threshold's unit, None when not measured."""

    threshold: str
    metric: str
    op: str
    value: float
    unit: str
    actual: float | None
    passed: bool
    detail: str  # e.g. "p99 = 1.23 ms", "errors = 0.000% (0 of 5,120)", "p99 not measured: no latency sample"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """``threshold p99<50ms: passed (p99 = 1.23 ms)`` / ``... BROKEN (...)``."""
        return f"threshold {self.threshold}: {'passed' if self.passed else 'BROKEN'} ({self.detail})"


def _bad(text: str, why: str) -> UsageError:
    return UsageError(f"bad threshold {text!r}: {why}; {ALLOWED}")


def _percentile(text: str, name: str) -> float | None:
    """``p99`` -> 99, ``p99.9`` / ``p999`` / ``p(99.9)`` -> 99.9; None when ``name`` is not a percentile."""
    m = re.fullmatch(r"p(?:\((\d+(?:\.\d+)?)\)|(\d+(?:\.\d+)?))", name)
    if not m:
        return None
    digits = m.group(1) or m.group(2)
    if m.group(2) and "." not in digits and len(digits) > 2 and digits.startswith("99"):
        digits = "99." + digits[2:]  # p999 = p99.9, the name loadgen's own latency_us uses
    p = float(digits)
    if not 0 < p <= 100:
        raise _bad(text, f"percentile {digits} is not in (0, 100]")
    return p


def _pname(p: float) -> str:
    return f"p{p:g}"


def parse_threshold(text: str) -> Threshold:
    """Parse one threshold; UsageError (exit 2) naming the expression and what is allowed."""
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "empty")
    src = text.strip()
    m = _SHAPE.fullmatch(src.lower())
    if not m:
        raise _bad(src, "not METRIC OP VALUE")
    metric, op, unit = m.group("metric"), m.group("op"), m.group("unit")
    if op not in _OPS:
        raise _bad(src, f"operator {op!r} is not one of < <= > >=")
    value = float(m.group("num"))
    if not math.isfinite(value) or value < 0:
        raise _bad(src, f"value {m.group('num')} must be a finite number >= 0")
    pct = _percentile(src, metric)
    if pct is not None or metric in _NAMED_LATENCY:
        if unit not in LATENCY_UNITS:
            raise _bad(src, f"a latency needs a unit us, ms or s, got {unit or 'none'!r}")
        name = _pname(pct) if pct is not None else _NAMED_LATENCY[metric]
        return Threshold(src, name, op, value, "us" if unit in ("µs", "μs") else unit, "latency", pct)
    if metric in ("rps", "throughput"):
        if unit not in ("", "rps", "/s"):
            raise _bad(src, f"rps takes a plain number of requests per second, got unit {unit!r}")
        return Threshold(src, "rps", op, value, "", "rps")
    if metric in ("errors", "unsent") or (metric.startswith("errors.") and metric[7:] in ERROR_CLASSES):
        if unit not in ("", "%"):
            raise _bad(src, f"{metric} is a count (N) or a percentage (N%), got unit {unit!r}")
        if unit == "%" and value > 100:
            raise _bad(src, f"{value:g}% is more than 100%")
        if unit == "" and value != int(value):
            raise _bad(src, f"{metric} as a count needs a whole number (or add %)")
        return Threshold(src, metric, op, value, unit, "ratio" if unit == "%" else "count")
    raise _bad(src, f"unknown metric {metric!r}")


def parse_thresholds(texts: Iterable[str] | None) -> tuple[Threshold, ...]:
    """Every ``--threshold`` parsed (the first bad one raises)."""
    return tuple(parse_threshold(t) for t in (texts or ()))


def _count(t: Threshold, m: Measured) -> int:
    if t.metric == "unsent":
        return m.unsent
    if t.metric == "errors":
        return sum(m.errors.values())
    return m.errors.get(t.metric[7:], 0)


def _latency_us(t: Threshold, m: Measured) -> float | None:
    """The latency in µs from the merged histogram (latency_us when there is none); None: no sample."""
    if m.histogram:
        h = hist.decode(m.histogram)
        if h.get_total_count() == 0:
            return None
        if t.percentile is not None:
            return float(h.get_value_at_percentile(t.percentile))
        return float(h.get_max_value() if t.metric == "max" else h.get_mean_value())
    if m.requests == 0:
        return None
    key = "p999" if t.metric == "p99.9" else t.metric
    if key not in m.latency_us:
        return None
    return float(m.latency_us[key])


def _actual(t: Threshold, m: Measured) -> tuple[float | None, str]:
    """(the measured value in the threshold's unit or None, the detail text)."""
    if t.kind == "latency":
        us = _latency_us(t, m)
        if us is None:
            return None, f"{t.metric} not measured: no latency sample"
        return us / LATENCY_UNITS[t.unit], f"{t.metric} = {fmt_us(us)}"
    if t.kind == "rps":
        return m.rps, f"rps = {m.rps:,.1f}"
    n = _count(t, m)
    if t.kind == "count":
        return float(n), f"{t.metric} = {n:,}"
    denom = m.attempts + (m.unsent if t.metric == "unsent" else 0)
    if denom == 0:
        return None, f"{t.metric} not measured: no request was attempted"
    pct = 100.0 * n / denom
    return pct, f"{t.metric} = {pct:.3g}% ({n:,} of {denom:,})"


def fmt_us(us: float, spec: str = ".3g") -> str:
    """A latency in the unit that reads best: 830 µs, 1.07 ms, 2.35 s (`spec` formats ms and s)."""
    if us >= 1_000_000:
        return f"{us / 1e6:{spec}} s"
    if us >= 1000:
        return f"{us / 1000:{spec}} ms"
    return f"{us:.0f} µs"


def evaluate(thresholds: Sequence[Threshold], measured: Measured) -> list[Verdict]:
    """Judge every threshold against one result; a metric that was not measured is broken."""
    out = []
    for t in thresholds:
        actual, detail = _actual(t, measured)
        passed = actual is not None and _OPS[t.op](actual, t.value)
        out.append(Verdict(t.expr, t.metric, t.op, t.value, t.unit, actual, passed, detail))
    return out


def all_passed(verdicts: Iterable[Verdict | Mapping[str, Any]]) -> bool:
    """True when no verdict is broken (Verdict objects or their dicts from a results file)."""
    return all(v.passed if isinstance(v, Verdict) else v["passed"] for v in verdicts)
