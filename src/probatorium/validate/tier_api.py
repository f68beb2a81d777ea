"""The protocol every tier implements, and what the cell runner hands a tier.

A tier declares whether it applies to a target (and why not), takes its share
of the cell's budget from the :class:`~.schedule.Schedule`, and leaves behind
counters, evidence for the catalogue's judges, and detail for its sidecar
file. The registry of tiers is :mod:`.tiers`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .schedule import Schedule
from .tier1.base import ContractPaths


@dataclass
class TierEnv:
    """What the cell runner gives a tier."""

    address: Callable[[], tuple[str, int]]  # the target's current (host, port); follows restarts
    cell_seed: int
    schedule: Schedule
    stop: Callable[[], bool]  # the run was interrupted
    paths: ContractPaths = field(default_factory=ContractPaths)
    report: Callable[[Any], Any] = lambda ev: None  # Evidence → Incident | None
    alive: Callable[[], Awaitable[bool]] | None = None
    recover: Callable[[], Awaitable[bool]] | None = None
    quiet_timeout: float = 3.0
    openapi: Path | None = None
    markov: Path | None = None
    crashlog: Any = None
    streams: Any = None
    control: Any = None  # targets.control.TargetControl, for tiers that inject planned faults
    say: Callable[[str], None] = lambda msg: None
    options: Any = None  # the run's ValidateOptions
    run_dir: Path | None = None  # where incidents' dossiers live (Tier 3 adds plan.json, timeline.json)
    services: tuple[str, ...] = ()  # the backing services this cell's target uses
    durable: bool = False  # the target declares it keeps acknowledged writes across its own SIGKILL


class Tier(Protocol):
    """One tier of the validation (see the module docstring)."""

    number: int
    key: str  # its tally in a cell: "tier_1", "tier_2", "tier_3"
    sidecar: str  # its per-cell detail file: "tier1_tally.json", ...

    def applies(self, openapi: Path | None) -> str | None: ...
    async def run(self, env: TierEnv, budget_s: float) -> None: ...
    def tallies(self) -> dict[str, Any]: ...
    def reasons(self) -> dict[str, str]: ...
    def evidence(self) -> dict[str, Any]: ...
    def detail(self) -> dict[str, Any]: ...
    def stopped_reason(self) -> str: ...
    def internal_errors(self) -> list[str]: ...
