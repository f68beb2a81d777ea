"""``probatorium replay``: re-run one Tier 3 seed (or a plan file) against a fresh target, the
same way the run did (one :class:`~.tier3.session.Session`), and say honestly how often it
reproduced ("reproduced k of n"). Exit 1 when any attempt fails.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import UsageError
from ..faults import SERVICE_KINDS
from ..progress import reporter_of
from ..targets.control import TargetControl
from ..targets.launcher import start_target
from .plan import CellPlan, TargetArgs, plan_cells
from .tier3.plan import Plan
from .tier3.profile import build_profile
from .tier3.session import SeedResult, Session, Tier3Options, static_kinds


@dataclass
class ReplayRequest:
    args: TargetArgs
    opts: Tier3Options
    seed: int | None = None
    plan_file: Path | None = None
    services: tuple[str, ...] = ()
    attempts: int = 1


def _cell(req: ReplayRequest) -> CellPlan:
    cells = plan_cells(req.args, None)
    if len(cells) != 1:
        raise UsageError("replay runs one target: drop --matrix")
    return cells[0]


def dry_run_plan(req: ReplayRequest) -> Plan:
    """The plan a replay would run, built without starting anything."""
    if req.plan_file is not None:
        return Plan.from_json(req.plan_file.read_text())
    cell = _cell(req)
    services = tuple(dict.fromkeys([*req.services, *cell.services]))
    kinds = static_kinds(req.opts.faults, local_process=cell.spec.kind != "url", services=services)
    from ..faults import durable

    dur = tuple(s for s in services if durable(s)) if any(k in SERVICE_KINDS for k in kinds) else ()
    profile = build_profile(cell.openapi, kinds, durable=req.opts.durable or cell.durable, services=services,
                            durable_services=dur)
    assert req.seed is not None
    return Plan.from_seed(req.seed, profile)


def replay(req: ReplayRequest, say: Callable[[str], None]) -> tuple[int, list[SeedResult]]:
    """Start the target (and services), run the seed ``attempts`` times; (exit status, results)."""
    cell = _cell(req)
    services = tuple(dict.fromkeys([*req.services, *cell.services]))
    manager = None
    if services:
        from ..services import ServiceManager

        manager = ServiceManager(durable=True)
        manager.up(list(services))
        cell.spec.env.update(manager.env())
    logs = Path(tempfile.mkdtemp(prefix="probatorium-replay-"))
    target = start_target(cell.spec, logs)
    try:
        control = TargetControl(target, manager)
        results = asyncio.run(_attempts(req, cell, control, services, say))
    finally:
        target.stop()
        if manager is not None:
            manager.down()
    bad = [r for r in results if r.outcome != "passed"]
    say(f"reproduced {sum(1 for r in results if r.failed)} of {len(results)}"
        + (f" ({sum(1 for r in results if r.error)} errored)" if any(r.error for r in results) else "")
        + f"; target logs in {logs}")
    return (1 if bad else 0), results


async def _attempts(req: ReplayRequest, cell: CellPlan, control: TargetControl, services: tuple[str, ...],
                    say: Callable[[str], None]) -> list[SeedResult]:
    target = control.target
    opts = replace(req.opts, durable=req.opts.durable or cell.durable)  # --durable, or the refapp declares it
    session = Session(lambda: (target.host, target.port), control, opts, services=services,
                      health_path=cell.spec.health_path)
    await session.start()
    try:
        if req.plan_file is not None:
            plan = Plan.from_json(req.plan_file.read_text())
        else:
            assert req.seed is not None
            plan = Plan.from_seed(req.seed, session.profile(cell.openapi))
        say(f"replay seed {plan.seed:#x}: plan {plan.digest()[:16]}, faults {','.join(plan.kinds()) or 'none'}, "
            f"{len(plan.steps)} steps, {req.attempts} attempt(s)")
        out = []
        progress = reporter_of(say)  # the CLI's say is a progress reporter: attempt i/n with ETA
        progress.plan([None] * req.attempts, noun="attempt")
        for n in range(req.attempts):
            progress.start(f"seed {plan.seed:#x}")
            res = await session.run(plan)
            out.append(res)
            line = res.error or "; ".join(f"{p}: {res.verdicts[p]['violations'][0]}" for p in res.failed)
            progress.finish(res.outcome, announce=False)  # the attempt line below is its end line
            say(f"  attempt {n + 1}: {res.outcome}" + (f" — {line}"[:400] if line else ""))
        return out
    finally:
        await session.close()
