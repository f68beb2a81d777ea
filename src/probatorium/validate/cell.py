"""One cell: start the target → observers → tiers → settle → judge.

A cell is one fresh target, watched by the watchdog and the observers, driven
by the tiers that apply for the schedule's budget, then judged by the
invariant catalogue. Whatever happens inside (a target that never starts, a
bug in a slice, Ctrl-C), the cell comes back as a :class:`Cell` with a status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ProbatoriumError
from ..progress import NullProgress, reporter_of
from ..results.schema import Cell, utc_now_iso
from ..results.store import Checkpointer, cell_folder_name, write_json_atomic
from ..seeds import derive_seed
from ..targets.control import TargetControl
from ..targets.launcher import RunningTarget, start_target
from ..targets.watchdog import Watchdog
from .gate import cell_status, provisional_status
from .incidents import Evidence, IncidentRecorder
from .invariants import Observed, judge_cell, severity
from .liveness import Liveness
from .observers import LeakObserver, MetricsObserver
from .plan import CellPlan, ValidateOptions, declares, refapp_versions
from .schedule import Schedule, schedule_cell
from .tier1.base import ContractPaths
from .tier1.held import HeldStreams
from .tier_api import Tier, TierEnv
from .tiers import TIERS, choose_tiers


PROGRESS_SAMPLE_S = 2.0  # how often the progress line samples the tiers' counters


def live_requests(key: str, tallies: dict[str, Any]) -> int:
    """The requests a tier's tallies count so far (Tier 1: requests_sent; Tiers 2 and 3: requests)."""
    value = tallies.get("requests_sent" if key == "tier_1" else "requests", 0)
    return value if isinstance(value, int) else 0


@dataclass
class LiveCell:
    """Everything one running cell holds."""

    cell: Cell
    plan: CellPlan
    target: RunningTarget
    recorder: IncidentRecorder
    watchdog: Watchdog
    liveness: Liveness
    schedule: Schedule
    tiers: list[Tier] = field(default_factory=list)
    leaks: LeakObserver | None = None
    metrics: MetricsObserver | None = None
    control: TargetControl | None = None

    @property
    def dir(self) -> Path:
        return self.recorder.run_dir / self.cell.folder


class CellRunner:
    """Runs cells of one run folder; ``checkpoint`` records a snapshot of the running cell."""

    def __init__(self, run_dir: Path, opts: ValidateOptions, checkpointer: Checkpointer, arch: str,
                 stop_event: threading.Event, say: Callable[[str], None]) -> None:
        self.run_dir, self.opts, self.checkpointer, self.arch = run_dir, opts, checkpointer, arch
        self.stop_event, self.say = stop_event, say
        #: The run's ServiceManager (or None): each cell's TargetControl can fault its services too.
        self.services: Any = None
        self.paths = ContractPaths(echo=opts.echo_path, health=opts.health_path, debug=opts.debug_path,
                                   ws=opts.ws_path, sse=opts.sse_path)

    # ---- the cell ------------------------------------------------------------------------
    def not_run(self, plan: CellPlan, reason: str) -> Cell:
        now = utc_now_iso()
        return Cell(refapp=plan.label, engine=plan.engine, arch=self.arch, status="not_run", reason=reason,
                    started_at=now, finished_at=now, folder=cell_folder_name(plan.index, plan.label, plan.engine),
                    target={"describe": plan.spec.describe()})

    def run(self, plan: CellPlan, budget_s: float, of: int) -> Cell:
        """Start the target, drive the tiers for budget_s, stop it, judge."""
        folder = cell_folder_name(plan.index, plan.label, plan.engine)
        cell_seed = derive_seed(self.opts.seed, "cell", plan.label, plan.engine) & ((1 << 63) - 1)
        cell = Cell(refapp=plan.label, engine=plan.engine, arch=self.arch, status="not_run",
                    started_at=utc_now_iso(), seed=cell_seed, folder=folder, partial=True,
                    target={"describe": plan.spec.describe(),
                            **{k: v for k, v in dataclasses.asdict(plan.spec).items() if k != "env"}})
        cell_dir = self.run_dir / folder
        cell_dir.mkdir(parents=True, exist_ok=True)
        self.say(f"cell {plan.index}/{of}: {plan.spec.describe()} for {budget_s:.0f}s")
        try:
            target = start_target(plan.spec, cell_dir, progress=self.say)
        except ProbatoriumError as e:
            cell.reason, cell.finished_at, cell.partial = str(e), utc_now_iso(), False
            self.say(f"  not_run: {e}")
            return cell
        cell.versions = {"probatorium": __version__, **target.versions, **refapp_versions(plan.spec)}
        cell.target.update({"address": f"{target.host}:{target.port}", "pid": target.pid})
        live = self._observe(cell, plan, target, budget_s)
        error = ""
        try:
            error = asyncio.run(self._drive(live))
        except Exception as e:  # a bug in a slice must not lose the cell
            error = f"internal error while driving the cell: {type(e).__name__}: {e}"
        finally:
            self._settle_and_stop(live)
        self._judge(live, error)
        return cell

    def _observe(self, cell: Cell, plan: CellPlan, target: RunningTarget, budget_s: float) -> LiveCell:
        """The recorder, the watchdog, crash attribution and the resource sampler of a started target."""
        recorder = IncidentRecorder(
            self.run_dir, cell.folder, refapp=plan.label, engine=plan.engine, arch=self.arch,
            versions=cell.versions, pid_getter=lambda: target.pid if target.alive() else None,
            stderr_tail=lambda: target.stderr_tail(200),
            on_incident=lambda inc: inc.severity != "LOW" and self.say(
                f"  incident {inc.severity} {inc.predicate}: {inc.detail}"[:200]))
        control = TargetControl(target, self.services)  # the only way to pause, kill or restart anything
        watchdog = Watchdog(target, health_path=self.opts.health_path, on_event=lambda ev: recorder.record(
            Evidence(predicate=ev.predicate, detail=ev.detail, seed=cell.seed)), faults=control.windows)
        watchdog.start()
        liveness = Liveness(target, recorder, cell_seed=cell.seed or 0, tally=cell.tier_1,
                            dossier_dir=self.run_dir / cell.folder, restart=control.restart, pause=watchdog.pause,
                            resume=watchdog.resume, stop=self.stop_event.is_set, say=self.say, control=control)
        applying = [t.number for t in choose_tiers(self.opts.tiers, plan.openapi, self.opts.tier_options)[0]]
        tier_shares = {t: TIERS[t].share for t in (applying or [1])}  # the tiers that apply share the budget
        schedule = schedule_cell(budget_s, self.opts.concurrency, self.opts.slices, tier_shares)
        live = LiveCell(cell, plan, target, recorder, watchdog, liveness, schedule, control=control)
        if target.pid is not None:
            live.leaks = LeakObserver(lambda: target.pid if target.alive() else None,
                                      lambda: f"http://{target.host}:{target.port}{self.opts.debug_path}",
                                      recorder, cell_seed=cell.seed or 0, say=self.say,
                                      faults=control.windows).start()
        if declares(plan.openapi, "GET", "/metrics"):
            live.metrics = MetricsObserver(target, recorder, cell.seed or 0)
        return live

    async def _drive(self, live: LiveCell) -> str:
        """Run the tiers one after another; return why any of them measured less than asked, or ''."""
        tiers, skipped = choose_tiers(self.opts.tiers, live.plan.openapi, self.opts.tier_options)
        live.tiers = tiers
        live.cell.tier_1["walkers"] = live.schedule.walkers  # type: ignore[assignment]
        if skipped and self.opts.tiers is None:
            live.cell.target["tiers_not_run"] = {str(t): why for t, why in skipped.items()}
        env = TierEnv(address=live.liveness.address, cell_seed=live.cell.seed or 0, schedule=live.schedule,
                      stop=self.stop_event.is_set, paths=self.paths, report=live.recorder.record,
                      alive=live.liveness.alive, recover=live.liveness.recover, quiet_timeout=self.opts.quiet_timeout,
                      openapi=live.plan.openapi, markov=live.plan.markov, crashlog=live.liveness.crashlog,
                      streams=HeldStreams(self.opts.sse_path), control=live.control, say=self.say,
                      options=self.opts, run_dir=self.run_dir,
                      services=tuple(dict.fromkeys([*self.opts.services, *live.plan.services])),
                      durable=live.plan.durable)
        loops = [asyncio.create_task(self._checkpoint_loop(live))]
        loops += [asyncio.create_task(o.watch()) for o in (live.leaks, live.metrics) if o is not None]
        loops.append(asyncio.create_task(self._progress_loop(live)))
        try:
            for tier in tiers:
                if self.stop_event.is_set():
                    break
                reporter_of(self.opts.progress).sub(f"tier {tier.number}")
                await tier.run(env, live.schedule.budget(tier.number))
            await live.liveness.finish()
        finally:
            for t in loops:
                t.cancel()
                try:
                    await t
                except asyncio.CancelledError:
                    pass
        return "; ".join(r for r in (t.stopped_reason() for t in tiers) if r)

    def _settle_and_stop(self, live: LiveCell) -> None:
        """Quiet settle window (pile-ups that drain after traffic stops are not leaks), the leak
        verdicts while the target is still up, a death in the last moments, then stop."""
        if live.leaks is not None:
            live.leaks.traffic_ended()
            if live.schedule.judges_leaks and not self.stop_event.is_set():
                self.stop_event.wait(live.schedule.leak_settle_s)
            live.leaks.finish(live.dir / "resources.json")
        target, recorder = live.target, live.recorder
        # The watchdog polls every 2 s: a target that died in the last moments is caught here.
        if target.pid is not None and not target.alive() and not recorder.seen("I-LIVENESS") \
                and not live.liveness.planned_down():
            recorder.record(Evidence(predicate="I-LIVENESS", seed=live.cell.seed,
                                     detail=f"the target exited (status {target.exit_code()}) during the cell"))
        live.watchdog.pause()
        live.watchdog.stop()
        target.stop()

    # ---- tallies, checkpoints, judging -------------------------------------------------------
    def _fill_tallies(self, live: LiveCell) -> None:
        for tier in live.tiers:
            getattr(live.cell, tier.key).update(tier.tallies())

    def observed(self, live: LiveCell) -> Observed:
        """What the catalogue's judges read: tallies, reasons, evidence, incidents."""
        evidence: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        for tier in live.tiers:
            evidence.update(tier.evidence())
            reasons.update(tier.reasons())
        if live.leaks is not None and live.leaks.verdicts is not None:
            evidence["leaks"] = live.leaks.verdicts
        if live.leaks is not None:
            checks = live.leaks.self_checks()  # the refapp self-check properties' judges read these
            if checks is not None:
                evidence["self_checks"] = checks
        if live.leaks is None or live.leaks.verdicts is None:
            evidence["leaks"] = getattr(live.target, "no_process_reason", None) or "url target: no local process to sample"
        if live.metrics is not None:
            evidence["metrics"] = live.metrics.evidence()
        wd = live.watchdog
        has_process = live.target.pid is not None or getattr(live.target, "remote_liveness", False)
        evidence["watchdog"] = {"has_process": has_process, "health_checks": wd.health_checks,
                                "no_process_reason": getattr(live.target, "no_process_reason", None),
                                "events": sorted({e.predicate for e in wd.events})}
        incidents = frozenset(i.predicate for i in live.recorder.incidents)
        return Observed(tallies=live.cell.tier_1, reasons=reasons, evidence=evidence, incidents=incidents)

    async def _checkpoint_loop(self, live: LiveCell) -> None:
        while True:
            await asyncio.sleep(self.opts.checkpoint_interval)
            self._fill_tallies(live)
            snapshot = live.cell.model_copy(deep=True)
            snapshot.incidents = list(live.recorder.incidents)
            snapshot.status, snapshot.reason = provisional_status(snapshot)
            await asyncio.to_thread(self.checkpointer.record_cell, snapshot)

    async def _progress_loop(self, live: LiveCell) -> None:
        """Sample what the tiers already count (requests, incidents) for the progress line, every 2 s."""
        rep = reporter_of(self.opts.progress)
        if isinstance(rep, NullProgress):
            return
        while True:
            await asyncio.sleep(PROGRESS_SAMPLE_S)
            rep.counts(requests=sum(live_requests(t.key, t.tallies()) for t in live.tiers),
                       incidents=len(live.recorder.incidents))

    def _judge(self, live: LiveCell, error: str) -> None:
        cell = live.cell
        self._fill_tallies(live)
        cell.incidents = list(live.recorder.incidents)
        first: dict[str, str] = {}
        for inc in cell.incidents:
            if inc.severity == severity(inc.predicate):  # a lesser form (MED I-API-SCHEMA) is its judge's
                first.setdefault(inc.predicate, inc.detail)
        observed = self.observed(live)
        if "self_checks" in observed.evidence:
            cell.target["self_checks"] = observed.evidence["self_checks"]
        cell.properties = judge_cell(observed, first)
        cell.finished_at = utc_now_iso()
        interrupted = self.stop_event.is_set()
        cell.partial = interrupted
        cell.status, cell.reason = cell_status(cell.properties, cell.incidents, error, interrupted=interrupted,
                                               traffic_sent=bool(cell.tier_1.get("requests_sent")
                                                                 or cell.tier_2.get("requests")))
        wd = live.watchdog
        if wd.crash_markers:
            cell.tier_1["crash_markers"] = len(wd.crash_markers)
            write_json_atomic(live.dir / "crash_markers.json", wd.crash_markers)
        internal = [e for t in live.tiers for e in t.internal_errors()]
        if internal:
            write_json_atomic(live.dir / "internal_errors.json", internal)
        for tier in live.tiers:
            write_json_atomic(live.dir / tier.sidecar, tier.detail())
