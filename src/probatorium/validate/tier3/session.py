"""One Tier 3 session on a started target: the fault proxy, the Injector, the profile, and
running, judging and shrinking seeds. The tier (:mod:`.tier`) and ``probatorium replay`` both
drive a session, so a replay runs a seed exactly as the run did.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ...faults import FAULT_KINDS, SERVICE_KINDS, FaultProxy, Injector, durable
from ...shrink import ddmin
from .client import Conn
from .judges import DEFAULT_GRACE_S, DEFAULT_RECOVERY_DEADLINE_S, failed, judge_timeline
from .plan import Plan
from .profile import TargetProfile, build_profile
from .runner import RunContext, run_plan

import os

SHRINK_REPLAYS = 20
SHRINK_S = 120.0


def _shrink_bounds() -> tuple[int, float]:
    """PROBATORIUM_TIER3_SHRINK="REPLAYS,SECONDS" lowers the shrink bounds (short CI runs, tests)."""
    text = os.environ.get("PROBATORIUM_TIER3_SHRINK", "")
    try:
        n, s = text.split(",")
        return min(SHRINK_REPLAYS, int(n)), min(SHRINK_S, float(s))
    except ValueError:
        return SHRINK_REPLAYS, SHRINK_S


@dataclass
class Tier3Options:
    """The Tier 3 flags of ``validate`` and ``replay``."""

    seeds: str | None = None  # "N" (the first N corpus seeds) or "0xA,0xB"; None: as many as fit
    faults: tuple[str, ...] | None = None  # None: every kind that applies
    durable: bool = False
    recovery_deadline_s: float = DEFAULT_RECOVERY_DEADLINE_S
    grace_s: float = DEFAULT_GRACE_S
    shrink_replays: int = field(default_factory=lambda: _shrink_bounds()[0])
    shrink_s: float = field(default_factory=lambda: _shrink_bounds()[1])
    replay_command: str = ""  # "probatorium replay <target flags>" (the seed is appended)


def parse_faults(text: str | None) -> tuple[str, ...] | None:
    """--faults a,b → the kinds (checked against FAULT_KINDS); None/empty → None (every kind)."""
    kinds = tuple(dict.fromkeys(k.strip() for k in (text or "").split(",") if k.strip()))
    for k in kinds:
        if k not in FAULT_KINDS:
            raise UsageError(f"unknown fault kind {k!r}; kinds are {','.join(FAULT_KINDS)}")
    return kinds or None


def static_kinds(asked: tuple[str, ...] | None, *, local_process: bool, services: tuple[str, ...]) -> tuple[str, ...]:
    """The kinds :meth:`Session.kinds` allows, decided without a running target (``replay --dry-run``):
    the same rules as ``Injector.applies`` (a test holds the two together)."""
    from ...faults import PROXY_KINDS

    out = []
    for kind in asked or FAULT_KINDS:
        if kind in PROXY_KINDS:
            out.append(kind)
        elif kind == "net-netem":
            continue  # netem is never applied to the host's own loopback (Injector.applies says why)
        elif kind in SERVICE_KINDS:
            if services:
                out.append(kind)
        elif local_process:
            out.append(kind)
    return tuple(k for k in FAULT_KINDS if k in out)


@dataclass
class SeedResult:
    """One seed's run: its plan, what happened, and the verdicts."""

    plan: Plan
    timeline: dict[str, Any] = field(default_factory=dict)
    verdicts: dict[str, Any] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def outcome(self) -> str:
        return "errored" if self.error else ("failed" if self.failed else "passed")

    def as_dict(self) -> dict[str, Any]:
        return {"seed": f"{self.plan.seed:#x}", "plan_digest": self.plan.digest(), "outcome": self.outcome,
                "error": self.error, "failed": self.failed, "predicates": self.verdicts, "faults": self.plan.kinds(),
                "timeline": self.timeline}


class Session:
    """Tier 3 on one target (``control`` is its TargetControl; ``services`` the backing service names)."""

    def __init__(self, address: Callable[[], tuple[str, int]], control: Any, opts: Tier3Options, *,
                 services: tuple[str, ...] = (), health_path: str = "/healthz") -> None:
        self.address, self.control, self.opts = address, control, opts
        self.services, self.health_path = services, health_path
        self.proxy = FaultProxy()
        self.injector = Injector(control, self.proxy, services)
        self.proxy_address: tuple[str, int] | None = None
        self.restarts_before_seed = 0

    async def start(self) -> None:
        self.proxy_address = await self.proxy.start(self.address)

    async def close(self) -> None:
        await self.proxy.close()

    # ---- what applies ------------------------------------------------------------------------
    def kinds(self) -> tuple[tuple[str, ...], dict[str, str]]:
        """(the fault kinds a plan may draw, {kind: why not} for the others)."""
        asked = self.opts.faults or FAULT_KINDS
        allowed, skipped = [], {}
        for kind in asked:
            why = self.injector.applies(kind)
            if why:
                skipped[kind] = why
            else:
                allowed.append(kind)
        return tuple(k for k in FAULT_KINDS if k in allowed), skipped

    def profile(self, openapi: Path | None) -> TargetProfile:
        kinds, skipped = self.kinds()
        if not kinds:
            why = "; ".join(f"{k}: {r}" for k, r in skipped.items())
            raise UsageError(f"no asked fault kind applies to this target ({why})")
        manager = getattr(self.control, "services", None)
        dur = tuple(s for s in self.services if durable(s, manager)) if any(k in SERVICE_KINDS for k in kinds) else ()
        return build_profile(openapi, kinds, durable=self.opts.durable, services=self.services,
                             durable_services=dur)

    # ---- seeds -------------------------------------------------------------------------------
    async def healthy(self, timeout_s: float = 2.0) -> bool:
        conn = Conn(self.address, time.monotonic, timeout_s=timeout_s)
        try:
            ans = await conn.request("GET", self.health_path)
            return ans.status is not None and ans.status < 500
        finally:
            await conn.close()

    async def ensure_up(self) -> None:
        """A known state before each seed: a target a previous seed left unhealthy is restarted
        (a planned restart: TargetControl records its window)."""
        if await self.healthy():
            return
        self.restarts_before_seed += 1
        await asyncio.to_thread(self.control.restart)

    async def run(self, plan: Plan) -> SeedResult:
        """Run and judge one plan."""
        res = SeedResult(plan)
        try:
            await self.ensure_up()
            address = (lambda: self.proxy_address) if plan.uses_proxy() else self.address
            ctx = RunContext(address=address, target_address=self.address, injector=self.injector,
                             clock=self.control.windows.now, health_path=self.health_path,
                             recovery_deadline_s=self.opts.recovery_deadline_s,
                             grace_s=self.opts.grace_s,
                             # a request waits at most 5 s, less with a short recovery deadline (never
                             # under 2.5 s: a stop or a stall of the plan lasts up to 1.5 s)
                             request_timeout_s=min(5.0, max(2.5, self.opts.recovery_deadline_s)))
            res.timeline = await run_plan(plan, ctx)
        except Exception as e:  # noqa: BLE001 - a seed that could not run is errored, not a crash of the tier
            res.error = f"{type(e).__name__}: {e}"
            return res
        res.verdicts = judge_timeline(res.timeline, durable=plan.profile.durable,
                                      durable_services=plan.profile.durable_services, grace_s=self.opts.grace_s)
        res.failed = failed(res.verdicts)
        return res

    async def shrink(self, plan: Plan, predicate: str) -> tuple[Plan, dict[str, Any]]:
        """ddmin over the fault schedule, then over the workload, every candidate replayed; bounded
        by ``shrink_replays`` replays and ``shrink_s`` seconds in all."""
        deadline = time.monotonic() + self.opts.shrink_s

        async def fails(candidate: Plan) -> bool:
            return predicate in (await self.run(candidate)).failed

        async def test_faults(keep: list[int]) -> int | None:
            return len(keep) - 1 if await fails(plan.with_faults(keep)) else None

        phases = [p.index for p in plan.phases if p.fault is not None]
        r1 = await ddmin(phases, test_faults, max_tests=self.opts.shrink_replays, deadline=deadline)
        smaller = plan.with_faults(r1.sequence)

        async def test_steps(steps: list) -> int | None:
            return len(steps) - 1 if await fails(smaller.with_steps(steps)) else None

        left = max(0, self.opts.shrink_replays - r1.tests)
        r2 = await ddmin(list(smaller.steps), test_steps, max_tests=left, deadline=deadline) if left else None
        minimal = smaller.with_steps(r2.sequence) if r2 is not None else smaller
        info = {"predicate": predicate, "replays": r1.tests + (r2.tests if r2 else 0),
                "faults": {"from": len(phases), "to": len(r1.sequence), "complete": r1.complete, "reason": r1.reason},
                "steps": {"from": len(plan.steps), "to": len(minimal.steps),
                          "complete": bool(r2 and r2.complete), "reason": r2.reason if r2 else "no replay left"},
                "plan_digest": minimal.digest()}
        return minimal, info
