"""latency_at_slo: the highest sustained open-loop rate under each latency SLO.

Pure logic over a ``run_fn(rate) -> Probe`` (the runner's is one open-loop
load-generator run; tests pass a model server). A rate *passes* an SLO when
the server kept up (achieved >= 99 % of the target), the errors (unsent slots
included) stayed within the budget and the merged p99 was at or below the SLO.

Search: the saturation rate (closed loop) is probed first; when it fails,
bisection between the highest passing and the lowest failing rate until the
gap is within ``resolution`` of the failing rate or the probe budget is spent.
SLOs are searched from the largest down, and every probe is judged against
every SLO, so later searches start from the bounds earlier probes established.
Every probe is kept as evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

DEFAULT_SLOS_MS = (10, 50, 100, 500, 1000)
DEFAULT_ERROR_BUDGET = 0.001
ACHIEVED_FRACTION = 0.99


@dataclass
class Probe:
    """One open-loop run at `rate` and what it showed."""

    rate: float
    achieved_rps: float
    p99_ms: float
    requests: int = 0
    errors: int = 0
    unsent: int = 0

    @property
    def error_ratio(self) -> float:
        slots = self.requests + self.errors + self.unsent
        return (self.errors + self.unsent) / slots if slots else 1.0

    def sustained(self, error_budget: float) -> bool:
        """The server kept up with the offered rate within the error budget."""
        return self.achieved_rps >= ACHIEVED_FRACTION * self.rate and self.error_ratio <= error_budget

    def passes(self, slo_ms: float, error_budget: float) -> bool:
        return self.sustained(error_budget) and self.p99_ms <= slo_ms

    def to_dict(self) -> dict:
        return asdict(self) | {"error_ratio": round(self.error_ratio, 6)}


def latency_at_slo(
    run_fn: Callable[[float], Probe],
    saturation_rps: float,
    slos_ms: Iterable[float] = DEFAULT_SLOS_MS,
    error_budget: float = DEFAULT_ERROR_BUDGET,
    max_probes: int = 8,
    resolution: float = 0.03,
    min_rate: float = 1.0,
) -> dict:
    """For each SLO, the highest passing rate found (None when none passed).

    Returns ``{"slos": {slo: {"rps", "lower", "upper", "converged"}},
    "probes": [Probe.to_dict()...], "saturation_rps", "error_budget"}``;
    ``upper`` is the lowest failing rate above ``rps`` (None if none failed),
    ``converged`` whether the gap closed to ``resolution`` within the budget.
    """
    probes: list[Probe] = []
    cache: dict[float, Probe] = {}

    def probe(rate: float) -> Probe:
        rate = round(max(rate, min_rate), 1)
        if rate not in cache:
            p = run_fn(rate)
            p.rate = rate
            cache[rate] = p
            probes.append(p)
        return cache[rate]

    def bounds(slo: float) -> tuple[float, float | None]:
        passing = [p.rate for p in probes if p.passes(slo, error_budget)]
        lo = max(passing, default=0.0)
        failing = [p.rate for p in probes if p.rate > lo and not p.passes(slo, error_budget)]
        return lo, min(failing, default=None)

    saturation = max(float(saturation_rps), min_rate)
    out: dict[str, dict] = {}
    for slo in sorted({float(s) for s in slos_ms}, reverse=True):
        lo, hi = bounds(slo)
        if hi is None and lo < round(saturation, 1) and len(probes) < max_probes:
            probe(saturation)
            lo, hi = bounds(slo)
        while hi is not None and hi - lo > resolution * hi and len(probes) < max_probes:
            mid = (lo + hi) / 2.0
            if mid < min_rate or round(mid, 1) in cache:
                break
            probe(mid)
            lo, hi = bounds(slo)
        converged = hi is None or hi - lo <= resolution * hi
        out[f"{slo:g}"] = {"rps": lo if lo > 0 else None, "lower": lo, "upper": hi, "converged": converged}
    ordered = {f"{float(s):g}": out[f"{float(s):g}"] for s in sorted({float(s) for s in slos_ms})}
    return {"slos": ordered, "probes": [p.to_dict() for p in probes],
            "saturation_rps": saturation_rps, "error_budget": error_budget,
            "max_probes": max_probes, "resolution": resolution}
