"""The tier registry: which tiers exist, their shares of a cell's budget, which apply.

The protocol a tier implements is :mod:`.tier_api`. Tier 1 is the Tier 1
slices (:mod:`.tier1.tier`), Tier 2 stateful API fuzzing (:mod:`.tier2.tier`); Tier 3
(seed replay with faults) plugs in here the same way, one registration. Tiers
run one after another in a cell, never at once (Tier 3 restarts the target).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .tier_api import Tier


@dataclass(frozen=True)
class TierInfo:
    """One registered tier."""

    number: int
    share: float  # of the cell budget, among the tiers that apply
    build: Callable[[], Tier] | None  # None: not built in this version
    summary: str


def _tier1() -> Tier:
    from .tier1.tier import Tier1

    return Tier1()


def _tier2() -> Tier:
    from .tier2.tier import Tier2

    return Tier2()


def _tier3() -> Tier:
    from .tier3.tier import Tier3

    return Tier3()


TIERS: dict[int, TierInfo] = {
    1: TierInfo(1, 0.6, _tier1, "property stress: the Tier 1 slices"),
    2: TierInfo(2, 0.2, _tier2, "stateful API fuzzing"),
    3: TierInfo(3, 0.2, _tier3, "seed replay with real faults"),
}


def parse_tiers(text: str | None, slices_given: bool) -> list[int] | None:
    """--tiers 1,2,3 → [1, 2, 3]; None = every tier that applies. ``--slices`` without ``--tiers``
    means Tier 1 only (the detection form keeps its whole budget for Tier 1)."""
    if not text:
        return [1] if slices_given else None
    out: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if not part.isdigit() or int(part) not in TIERS:
            raise UsageError(f"unknown tier {part!r}; tiers are {','.join(map(str, TIERS))}")
        info = TIERS[int(part)]
        if info.build is None:
            raise UsageError(f"tier {part} ({info.summary}) cannot be asked for yet; built: "
                             + ",".join(str(t) for t, i in TIERS.items() if i.build is not None))
        out.append(int(part))
    return list(dict.fromkeys(out))


def choose_tiers(asked: list[int] | None, openapi: Path | None,
                 options: dict[int, Any] | None = None) -> tuple[list[Tier], dict[int, str]]:
    """The tiers a cell runs, and for every other tier the reason it does not run. ``options``
    (tier number → options) go to a tier's ``configure`` before it is asked whether it applies."""
    chosen: list[Tier] = []
    skipped: dict[int, str] = {}
    for number, info in TIERS.items():
        if asked is not None and number not in asked:
            skipped[number] = "not asked for (--tiers)"
            continue
        if info.build is None:
            skipped[number] = f"not built in this version ({info.summary})"
            continue
        tier = info.build()
        if (options or {}).get(number) and hasattr(tier, "configure"):
            tier.configure(options[number])  # type: ignore[attr-defined]
        why = tier.applies(openapi)
        if why:
            skipped[number] = why
        else:
            chosen.append(tier)
    return chosen, skipped
