"""The schedule of a run: cell budgets, the tiers' shares, the walker split, phases and fault windows.

A :class:`Schedule` is a value computed before a cell starts (Hypothesis's
engine owns its phases and budget the same way): the cell runner and the
tiers read it and never compute budgets of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError
from ..targets.control import FaultWindow  # one type: a planned fault here, a recorded one in TargetControl
from .tier1.registry import SLICES

LEAK_SETTLE_S = 10.0  # quiet seconds sampled after traffic stops, before the leak judges run
LEAK_MIN_CELL_S = 55.0  # below this, the leak judges have too few buckets (not_judged)


def allocate_walkers(concurrency: int, slices: list[str] | None) -> dict[str, int]:
    """Split C walkers over the slices (SPEC.md §5).

    Without an explicit list, a slice joins once C reaches its activation
    threshold. With `--slices`, exactly the listed slices run, each with at
    least one walker, in the registry's proportions.
    """
    c = max(1, concurrency)
    for s in slices or ():
        if s not in SLICES:
            raise UsageError(f"unknown slice {s!r}; slices are {','.join(SLICES)}")
    active = list(slices) if slices else [s for s, info in SLICES.items() if c >= info.activates_at]
    total_share = sum(SLICES[s].share for s in active)
    alloc = {s: max(1, int(c * SLICES[s].share / total_share)) for s in active}
    # Hand out what rounding left over to the biggest shares first.
    left = c - sum(alloc.values())
    for s in sorted(active, key=lambda s: -SLICES[s].share):
        if left <= 0:
            break
        alloc[s] += 1
        left -= 1
    return alloc


@dataclass(frozen=True)
class Phase:
    """A stretch of a cell: traffic, settle (quiet sampling), shrink (reproducer minimisation)."""

    name: str
    start_s: float  # seconds after the cell's traffic starts
    duration_s: float


@dataclass(frozen=True)
class Schedule:
    """Budgets and phases of one cell."""

    cell_budget_s: float
    tier_budgets: dict[int, float]  # tier number → seconds of traffic
    walkers: dict[str, int]  # slice → walkers (Tier 1)
    phases: tuple[Phase, ...]
    faults: tuple[FaultWindow, ...] = field(default=())

    @property
    def leak_settle_s(self) -> float:
        return sum(p.duration_s for p in self.phases if p.name == "settle")

    @property
    def judges_leaks(self) -> bool:
        """Whether the cell is long enough for the leak judges (else they are not_judged)."""
        return self.cell_budget_s >= LEAK_MIN_CELL_S

    def budget(self, tier: int) -> float:
        return self.tier_budgets.get(tier, 0.0)

    def faults_during(self, start_s: float, end_s: float) -> list[FaultWindow]:
        """Planned faults that overlap [start_s, end_s)."""
        return [f for f in self.faults if f.start_s < end_s and (f.end_s is None or f.end_s > start_s)]


def cell_budget(total_s: float, cells: int) -> float:
    """A matrix splits its budget evenly (SPEC.md §5: total / len(cells))."""
    return total_s / max(1, cells)


def split_budget(budget_s: float, shares: dict[int, float]) -> dict[int, float]:
    """The tiers that apply share the cell's budget by their shares (Tier 1 the largest)."""
    total = sum(shares.values())
    if total <= 0:
        return {}
    return {t: budget_s * s / total for t, s in shares.items()}


def schedule_cell(budget_s: float, concurrency: int, slices: list[str] | None,
                  tier_shares: dict[int, float], faults: tuple[FaultWindow, ...] = ()) -> Schedule:
    """The schedule of one cell: tiers run one after another (Tier 3 restarts the target), then
    the settle phase when the cell is long enough for the leak judges."""
    budgets = split_budget(budget_s, tier_shares)
    walkers = allocate_walkers(concurrency, slices) if 1 in budgets else {}
    phases = [Phase("traffic", 0.0, budget_s)]
    if budget_s >= LEAK_MIN_CELL_S:
        phases.append(Phase("settle", budget_s, LEAK_SETTLE_S))
    return Schedule(cell_budget_s=budget_s, tier_budgets=budgets, walkers=walkers, phases=tuple(phases),
                    faults=faults)
