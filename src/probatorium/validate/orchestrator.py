"""The validation orchestrator: run cells (target × slices for a budget) and judge them.

One cell = one fresh target, watched by the watchdog, driven by the slice
walkers until its budget ends, then judged against the invariant catalogue.
A matrix is a list of cells run one after another with budget = total / cells.
The run document is checkpointed while cells run, so an interrupted run
leaves a valid document marked `partial: true`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import ProbatoriumError, UsageError
from ..rawclient import can_connect
from ..results.schema import Cell, Incident, PropertyResult, ValidateDocument, ValidationResults, \
    host_arch_pair, normalize_arch, utc_now_iso
from ..results.store import Checkpointer, cell_folder_name, write_json_atomic
from ..targets.launcher import RunningTarget, TargetSpec, start_target
from ..targets.watchdog import Watchdog
from .crash import MAX_CONFIRM_RESTARTS, CrashAttributor, CrashLog, crash_repro
from .incidents import Evidence, IncidentRecorder
from .invariants import severity
from .tier1.adversarial.runner import AdversarialSlice, derive_seed
from .tier1.markov.slice import MarkovSlice

# SPEC.md §5: slice → (share of the walkers, concurrency at which it activates).
SLICE_BUDGET: dict[str, tuple[float, int]] = {
    "markov": (0.60, 1),
    "adversarial": (0.20, 1),
    "h2c": (0.10, 10),
    "ws": (0.05, 20),
    "sse": (0.05, 20),
}
IMPLEMENTED_SLICES = ("markov", "adversarial", "h2c", "ws", "sse")
MAX_RESTARTS_PER_CELL = 3
LEAK_SETTLE_S = 10.0  # quiet seconds sampled after traffic stops, before the leak judges run
LEAK_MIN_CELL_S = 55.0  # below this, the leak judges have too few buckets (not_judged)
LEAK_CHECK_FROM_S = 40.0  # mid-run leak checks start here (a strong leak is caught within a minute)
#: Buckets a mid-run check needs (the end-of-cell judgment needs the judges' own 8): a mid-run
#: failure is only a signal that dates the incident, the end of the cell confirms it.
LEAK_SIGNAL_MIN_BUCKETS = 6


def allocate_walkers(concurrency: int, slices: list[str] | None) -> dict[str, int]:
    """Split C walkers over the slices (SPEC.md §5).

    Without an explicit list, a slice joins once C reaches its activation
    threshold. With `--slices`, exactly the listed slices run, each with at
    least one walker, in the catalogue's proportions.
    """
    c = max(1, concurrency)
    active = list(slices) if slices else [s for s, (_, at) in SLICE_BUDGET.items() if c >= at]
    total_share = sum(SLICE_BUDGET[s][0] for s in active)
    alloc = {s: max(1, int(c * SLICE_BUDGET[s][0] / total_share)) for s in active}
    # Hand out what rounding left over to the biggest shares first.
    left = c - sum(alloc.values())
    for s in sorted(active, key=lambda s: -SLICE_BUDGET[s][0]):
        if left <= 0:
            break
        alloc[s] += 1
        left -= 1
    return alloc


@dataclass
class ValidateOptions:
    """Everything a validation run needs besides the targets."""

    duration_s: float
    concurrency: int
    seed: int
    slices: list[str] | None  # None: activation thresholds decide
    echo_path: str = "/echo"
    health_path: str = "/healthz"
    debug_path: str = "/debug/vars"
    ws_path: str = "/ws"
    sse_path: str = "/events"
    quiet_timeout: float = 3.0
    checkpoint_interval: float = 10.0
    services: list[str] = field(default_factory=list)  # backing services every target gets
    progress: object = None  # callable(str) for one-line progress messages


@dataclass
class CellPlan:
    """One cell to run: what to start and how to name it."""

    label: str  # refapp slug or --label
    spec: TargetSpec
    index: int = 0
    openapi: Path | None = None  # the target's OpenAPI document (a refapp's own, or --spec)
    markov: Path | None = None  # the Markov session model (a refapp's own markov.yaml, or --markov)
    services: list[str] = field(default_factory=list)  # backing services this target needs

    @property
    def engine(self) -> str:
        return self.spec.cell_engine()


@dataclass
class CellRun:
    """Live state of the running cell (for checkpoints)."""

    cell: Cell
    plan: CellPlan
    slice: AdversarialSlice | None = None
    markov: MarkovSlice | None = None
    others: dict = field(default_factory=dict)  # ws / h2c / sse slices by name
    sampler: object = None  # ResourceSampler of the target's process tree
    metrics: object = None  # MetricsScraper when the target declares GET /metrics
    started: float = 0.0
    recorder: IncidentRecorder | None = None
    watchdog: Watchdog | None = None
    extra_tally: dict = field(default_factory=dict)
    crash: CrashAttributor | None = None  # crash attribution of the I-LIVENESS deaths
    #: leak predicates flagged by a mid-run check: predicate -> (ISO time, seconds into the cell, reason)
    leak_signals: dict = field(default_factory=dict)
    leak_props: dict | None = None  # the end-of-cell leak verdicts (judged while the target is up)
    traffic_end_t: float | None = None  # sampler time when the slices stopped (the settle window follows)


class Orchestrator:
    """Runs a list of cells into one run folder."""

    def __init__(self, plans: list[CellPlan], options: ValidateOptions, run_dir: Path, *, kind: str,
                 command: list[str], stop_event: threading.Event | None = None) -> None:
        self.plans = plans
        self.opts = options
        self.run_dir = run_dir
        self.stop_event = stop_event or threading.Event()
        self.arch = normalize_arch()
        for i, p in enumerate(plans, 1):
            p.index = i
        self.document = ValidateDocument(
            host_arch_pair=host_arch_pair(), kind=kind, probatorium_version=__version__, command=command,
            partial=True,
            validation_results=ValidationResults(started_at=utc_now_iso(), seed=options.seed,
                                                 duration_s=options.duration_s),
        )
        self.checkpointer = Checkpointer(run_dir, self.document)
        self.current: CellRun | None = None

    def _say(self, msg: str) -> None:
        if callable(self.opts.progress):
            self.opts.progress(msg)

    # ---- the run ---------------------------------------------------------------------
    def run(self) -> ValidateDocument:
        """Run every cell; always leave a valid document behind."""
        budget = self.opts.duration_s / max(1, len(self.plans))
        self.checkpointer.checkpoint()
        manager, missing = self._start_services()
        try:
            for plan in self.plans:
                if self.stop_event.is_set():
                    break
                reasons = [missing[s] for s in self._needed(plan) if s in missing]
                if reasons:
                    cell = self._not_run_cell(plan, "; ".join(dict.fromkeys(reasons)))
                else:
                    cell = self.run_cell(plan, budget)
                self.checkpointer.record_cell(cell)
        finally:
            if manager is not None:
                manager.down()
            vr = self.document.validation_results
            vr.finished_at = utc_now_iso()
            self.document.incidents = [i for c in vr.cells for i in c.incidents]
            self.document.finalize_back_compat()
            interrupted = self.stop_event.is_set() or len(vr.cells) < len(self.plans)
            if interrupted:
                self.checkpointer.checkpoint()
            else:
                self.checkpointer.finish()
        return self.document

    def _needed(self, plan: CellPlan) -> list[str]:
        return list(dict.fromkeys([*self.opts.services, *plan.services]))

    def _start_services(self):
        """Start every backing service any cell needs, once for the run; addresses go into the
        targets' env. Returns (manager, {service: reason it is unavailable}): cells that need an
        unavailable service are not_run with that reason, never a traceback."""
        needed = list(dict.fromkeys(s for plan in self.plans for s in self._needed(plan)))
        if not needed:
            return None, {}
        from ..services import ServiceManager

        manager = ServiceManager()
        missing = dict(manager.unavailable(needed))
        available = [s for s in needed if s not in missing]
        if available:
            try:
                manager.up(available)
            except ProbatoriumError as e:
                manager.down()
                return None, {s: str(e) for s in needed}
        env = manager.env()
        # Schema models keep extra fields: the run document records where the services were.
        setattr(self.document.validation_results, "services", dict(env))
        for plan in self.plans:
            plan.spec.env.update(env)
        if env:
            self._say("services: " + ", ".join(f"{k}={v}" for k, v in env.items()))
        for s, why in missing.items():
            self._say(f"services: {s} unavailable: {why}")
        return manager, missing

    def _not_run_cell(self, plan: CellPlan, reason: str) -> Cell:
        folder = cell_folder_name(plan.index, plan.label, plan.engine)
        now = utc_now_iso()
        return Cell(refapp=plan.label, engine=plan.engine, arch=self.arch, status="not_run", reason=reason,
                    started_at=now, finished_at=now, folder=folder,
                    target={"describe": plan.spec.describe()})

    def run_cell(self, plan: CellPlan, budget_s: float) -> Cell:
        """Start the target, drive the slices for budget_s, stop it, judge."""
        folder = cell_folder_name(plan.index, plan.label, plan.engine)
        cell_seed = derive_seed(self.opts.seed, "cell", plan.label, plan.engine) & ((1 << 63) - 1)
        cell = Cell(refapp=plan.label, engine=plan.engine, arch=self.arch, status="not_run",
                    started_at=utc_now_iso(), seed=cell_seed, folder=folder, partial=True,
                    target={"describe": plan.spec.describe(),
                            **{k: v for k, v in dataclasses.asdict(plan.spec).items() if k != "env"}})
        cell_dir = self.run_dir / folder
        cell_dir.mkdir(parents=True, exist_ok=True)
        self._say(f"cell {plan.index}/{len(self.plans)}: {plan.spec.describe()} for {budget_s:.0f}s")
        try:
            target = start_target(plan.spec, cell_dir)
        except ProbatoriumError as e:
            cell.reason = str(e)
            cell.finished_at = utc_now_iso()
            cell.partial = False
            self._say(f"  not_run: {e}")
            return cell
        cell.versions = {"probatorium": __version__, **target.versions, **_refapp_versions(plan.spec)}
        cell.target.update({"address": f"{target.host}:{target.port}", "pid": target.pid})
        run = CellRun(cell=cell, plan=plan)
        self.current = run
        recorder = IncidentRecorder(
            self.run_dir, folder, refapp=plan.label, engine=plan.engine, arch=self.arch,
            versions=cell.versions, pid_getter=lambda: target.pid if target.alive() else None,
            stderr_tail=lambda: target.stderr_tail(200),
            on_incident=lambda inc: inc.severity != "LOW" and self._say(
                f"  incident {inc.severity} {inc.predicate}: {inc.detail}"[:200]),
        )
        run.recorder = recorder
        watchdog = Watchdog(
            target, health_path=self.opts.health_path,
            on_event=lambda ev: recorder.record(Evidence(predicate=ev.predicate, detail=ev.detail,
                                                         seed=cell_seed)),
        )
        run.watchdog = watchdog
        watchdog.start()
        from .resources import ResourceSampler

        # 1 Hz samples of the target's process tree (RSS, fds, threads, asyncio tasks) for the leak judges.
        run.sampler = ResourceSampler(
            lambda: target.pid if target.alive() else None,
            debug_url=lambda: f"http://{target.host}:{target.port}{self.opts.debug_path}",
        ).start() if target.pid is not None else None
        run.started = time.monotonic()
        error = ""
        try:
            error = asyncio.run(self._drive(run, target, cell_seed, budget_s))
        except Exception as e:  # a bug in a slice must not lose the cell
            error = f"internal error while driving the cell: {type(e).__name__}: {e}"
        finally:
            if run.sampler is not None:
                # Quiet settle window: pile-ups that drain after traffic stops are not leaks. Cells too
                # short for the leak judges (< ~55 s of samples) skip it; they are not_judged anyway.
                samples = run.sampler.samples
                run.traffic_end_t = samples[-1]["t"] if samples else 0.0
                if budget_s >= LEAK_MIN_CELL_S and not self.stop_event.is_set():
                    self.stop_event.wait(LEAK_SETTLE_S)
                run.sampler.stop()
                run.sampler.write_series(cell_dir / "resources.json")
                # Judged while the target is still up: a confirmed leak's forensics see the leak.
                try:
                    run.leak_props = self._check_leaks(run, final=True)
                except Exception as e:  # a judge bug must not lose the cell
                    reason = f"internal error in the leak judges: {type(e).__name__}: {e}"
                    run.leak_props = {p: PropertyResult(status="not_judged", reason=reason)
                                      for p in ("I-MEM-1", "I-FD-1", "I-TASK-1")}
            # The watchdog polls every 2 s: a target that died in the last moments is caught here.
            if target.pid is not None and not target.alive() and not recorder.seen("I-LIVENESS"):
                recorder.record(Evidence(predicate="I-LIVENESS", seed=cell_seed,
                                         detail=f"the target exited (status {target.exit_code()}) during the cell"))
            watchdog.pause()
            watchdog.stop()
            target.stop()
        self._judge(run, target, error)
        self.current = None
        return cell

    async def _drive(self, run: CellRun, target: RunningTarget, cell_seed: int, budget_s: float) -> str:
        """Run the slices' walkers until the budget ends; return an error text or ''."""
        restarts = 0
        restart_lock = asyncio.Lock()

        async def alive() -> bool:
            if target.pid is not None and not target.alive():
                return False
            for _ in range(3):
                if await can_connect(target.host, target.port, 1.0):
                    return True
                await asyncio.sleep(0.3)
            return False

        def follow_port() -> None:
            for sl in (adv, mk, *run.others.values()):
                if sl is not None:
                    sl.port = target.port

        # Crash attribution (crash.py): walkers register what they send; a death is snapshotted
        # here, the suspects replayed alone after the restart, the I-LIVENESS incident amended.
        crashlog = CrashLog() if target.pid is not None else None
        attributor = None
        last_dead = None
        if crashlog is not None:
            async def crash_changed(att: CrashAttributor) -> None:
                follow_port()
                await asyncio.to_thread(self._attach_crash_reproducer, run, att)

            attributor = CrashAttributor(
                crashlog, target, on_change=crash_changed,
                pause=run.watchdog.pause if run.watchdog else (lambda: None),
                resume=run.watchdog.resume if run.watchdog else (lambda: None), stop=self.stop_event.is_set)
            run.crash = attributor

        def note_death() -> None:
            """The process is gone: snapshot the suspects, make sure I-LIVENESS is recorded (the
            watchdog polls every 2 s; a walker may notice and restart first)."""
            nonlocal last_dead
            if attributor is None or target.alive() or target.process is last_dead:
                return  # alive, or this exit was already snapshotted (several walkers notice one death)
            last_dead = target.process
            attributor.record_death()
            if run.recorder is not None and not run.recorder.seen("I-LIVENESS"):
                run.recorder.record(Evidence(
                    predicate="I-LIVENESS", seed=cell_seed,
                    detail=f"{target.spec.describe()} (pid {target.pid}) exited (status {target.exit_code()}) "
                           "while wanted up (noticed by a walker)"))

        async def recover() -> bool:
            nonlocal restarts
            async with restart_lock:
                if await alive():
                    return True
                note_death()
                if target.pid is None or restarts >= MAX_RESTARTS_PER_CELL:
                    if attributor is not None and attributor.deaths:
                        await crash_changed(attributor)  # unconfirmed: the suspects still go in the dossier
                    return False
                restarts += 1
                run.cell.tier_1["target_restarts"] = restarts
                self._say(f"  target died: restarting ({restarts}/{MAX_RESTARTS_PER_CELL})")
                if run.watchdog:
                    run.watchdog.pause()
                try:
                    await asyncio.to_thread(target.restart)
                except ProbatoriumError:
                    return False
                finally:
                    if run.watchdog:
                        run.watchdog.resume()
                follow_port()
                if attributor is not None:
                    crashlog.restart_window()
                    if attributor.deaths and await alive():
                        await attributor.confirm()  # bounded; restarts the target if a replay kills it
                        run.cell.tier_1["crash_confirm_restarts"] = attributor.confirm_restarts
                return await alive()

        alloc = allocate_walkers(self.opts.concurrency, self.opts.slices)
        run.cell.tier_1["walkers"] = alloc  # type: ignore[assignment]
        adv = None
        mk = None
        tasks = []
        deadline = time.monotonic() + budget_s
        stop = self.stop_event.is_set
        if "adversarial" in alloc:
            adv = AdversarialSlice(
                target.host, target.port, echo_path=self.opts.echo_path, health_path=self.opts.health_path,
                seed=derive_seed(cell_seed, "adversarial"), quiet_timeout=self.opts.quiet_timeout,
                report=run.recorder.record if run.recorder else None, alive=alive, recover=recover,
                sweep=sweep_targets(run.plan.openapi, self.opts), crashlog=crashlog,
            )
            run.slice = adv
            try:
                cal = await adv.calibrate()
                run.extra_tally["adversarial_calibration"] = cal.__dict__
                self._say(f"  adversarial: {cal.reason}")
                tasks += [adv.walker(i, deadline, stop) for i in range(alloc["adversarial"])]
            except (RuntimeError, OSError) as e:
                adv.stopped_reason = f"calibration failed: {e}"
                run.extra_tally["adversarial_calibration"] = {"error": str(e)}
        if "markov" in alloc:
            openapi = run.plan.openapi if run.plan.openapi is not None and run.plan.openapi.is_file() else None
            try:
                mk = MarkovSlice(
                    target.host, target.port, openapi=openapi, markov=run.plan.markov,
                    seed=derive_seed(cell_seed, "markov"), report=run.recorder.record if run.recorder else None,
                    alive=alive, recover=recover, crashlog=crashlog,
                )
            except UsageError as e:  # checked up front by the CLI; a library caller may still pass a bad file
                run.extra_tally["markov"] = {"error": str(e)}
                self._say(f"  markov: {e}")
            else:
                run.markov = mk
                run.extra_tally["markov"] = {"model": mk.model.describe(), "notes": mk.notes}
                self._say(f"  markov: {mk.model.describe()}")
                if mk.model.states or mk.kv is not None:
                    tasks += [mk.walker(i, deadline, stop) for i in range(alloc["markov"])]
                else:
                    mk.stopped_reason = "nothing to walk: no markov.yaml and no session operation in the OpenAPI"
        if "ws" in alloc:
            from .tier1.ws.slice import WsTortureSlice

            ws = WsTortureSlice(target.host, target.port, ws_path=self.opts.ws_path, seed=derive_seed(cell_seed, "ws"),
                                report=run.recorder.record if run.recorder else None, alive=alive, recover=recover)
            run.others["ws"] = ws
            tasks += [ws.walker(i, deadline, stop) for i in range(alloc["ws"])]
        if "h2c" in alloc:
            from .tier1.h2c.runner import H2cChurnSlice

            h2c = H2cChurnSlice(target.host, target.port, echo_path=self.opts.echo_path,
                                seed=derive_seed(cell_seed, "h2c"), report=run.recorder.record if run.recorder else None,
                                alive=alive, recover=recover, timeout=self.opts.quiet_timeout)
            run.others["h2c"] = h2c
            tasks += [h2c.walker(i, deadline, stop) for i in range(alloc["h2c"])]
        if "sse" in alloc:
            from .tier1.sse.runner import SseKillSlice

            sse = SseKillSlice(target.host, target.port, sse_path=self.opts.sse_path, debug_path=self.opts.debug_path,
                               seed=derive_seed(cell_seed, "sse"), report=run.recorder.record if run.recorder else None,
                               alive=alive, recover=recover)
            run.others["sse"] = sse
            tasks += [sse.walker(i, deadline, stop) for i in range(alloc["sse"])]
        if _declares(run.plan.openapi, "GET", "/metrics"):
            from .metrics import MetricsScraper

            run.metrics = MetricsScraper(target.host, target.port)
        checkpoint_task = asyncio.create_task(self._checkpoint_loop(run, target))
        leak_task = asyncio.create_task(self._leak_loop(run))
        metrics_task = asyncio.create_task(self._metrics_loop(run, target))
        try:
            if tasks:
                await asyncio.gather(*tasks)
            if "sse" in run.others and not self.stop_event.is_set():
                await run.others["sse"].settle()  # I-CONN-2 is judged after the settle window
            if attributor is not None:
                await self._attribute_final_death(run, target, attributor, note_death, alive)
        finally:
            for t in (checkpoint_task, leak_task, metrics_task):
                t.cancel()
                try:
                    await t
                except asyncio.CancelledError:
                    pass
        reasons = [adv.stopped_reason if adv else "", mk.stopped_reason if mk else ""]
        reasons += [f"{name}: {sl.stopped_reason}" for name, sl in run.others.items() if sl.stopped_reason]
        return "; ".join(r for r in reasons if r)

    async def _attribute_final_death(self, run: CellRun, target: RunningTarget, att: CrashAttributor,
                                     note_death, alive) -> None:
        """After the walkers: a target dead now (died in the last moments, or left down after the
        last restart) is snapshotted; an unconfirmed death gets one bounded confirmation round on a
        restarted target (counted in the confirmation restarts, never the walkers')."""
        if not target.alive():
            note_death()
            if (att.confirmed is None and att.suspects() and not self.stop_event.is_set()
                    and att.confirm_restarts < MAX_CONFIRM_RESTARTS):
                att.confirm_restarts += 1
                self._say("  crash attribution: restarting the target to replay the suspects")
                if run.watchdog:
                    run.watchdog.pause()
                try:
                    await asyncio.to_thread(target.restart)
                except ProbatoriumError as e:
                    att.notes.append(f"restart for the final confirmation failed: {e}")
                finally:
                    if run.watchdog:
                        run.watchdog.resume()
                if await alive():
                    await att.confirm()
                run.cell.tier_1["crash_confirm_restarts"] = att.confirm_restarts
        if att.deaths:
            await asyncio.to_thread(self._attach_crash_reproducer, run, att)

    def _attach_crash_reproducer(self, run: CellRun, att: CrashAttributor) -> None:
        """Write what crash attribution knows into the cell's I-LIVENESS incident (once it exists)."""
        if run.recorder is None or not att.deaths:
            return
        requests = att.repro_requests()
        target = run.cell.target.get("address", "127.0.0.1:8000")
        status = att.summary()
        repro = crash_repro(requests, status=status, addr=target, version=__version__) if requests else None
        sent = requests[0].raw_bytes() if att.confirmed is not None and requests else None
        inc = run.recorder.amend("I-LIVENESS", reproducer=status, details=att.to_json(), repro=repro, sent=sent)
        if inc is not None and att.confirmed is not None and att.confirmed.request is not None \
                and "killed by" not in inc.detail:
            inc.detail += f"; killed by {att.confirmed.request.request} (confirmed by replay)"
        write_json_atomic(self.run_dir / run.cell.folder / "crash_attribution.json", att.to_json())

    def _check_leaks(self, run: CellRun, final: bool) -> dict[str, PropertyResult]:
        """Judge I-MEM-1 / I-FD-1 / I-TASK-1 on the samples so far.

        A mid-run failure is a provisional SIGNAL (its time is kept); the incident is recorded
        when the end-of-cell judgment confirms it, with first_seen = the signal's time. Judging
        every 2 s is many looks at one series: a pile-up under load (connections a slice holds,
        a start-up ramp) can look like a leak for a while, then drain or level off; a leak does
        neither. The end-of-cell judgment fits the samples taken under traffic, then looks at
        the quiet settle window: fds or tasks back at their early floor once traffic stopped
        were held by the load, not leaked (docs/leaks.md).
        """
        from .resources import drained_after_traffic, judge_all

        samples = run.sampler.samples
        settle: list[dict] = []
        if final and run.traffic_end_t is not None:
            settle = [x for x in samples if x["t"] > run.traffic_end_t]
            samples = [x for x in samples if x["t"] <= run.traffic_end_t]
        out: dict[str, PropertyResult] = {}
        now_s = time.monotonic() - run.started
        kwargs = {} if final else {"min_buckets": LEAK_SIGNAL_MIN_BUCKETS}
        for pred, v in judge_all(samples, **kwargs).items():
            res = out[pred] = PropertyResult(status=v.status, evaluations=v.evaluations, reason=v.reason)
            if v.status != "failed" or run.recorder is None or run.recorder.seen(pred):
                continue
            if not final:
                if pred not in run.leak_signals:
                    run.leak_signals[pred] = (utc_now_iso(), now_s, v.reason)
                    self._say(f"  {pred} signal at {now_s:.0f} s: {v.reason[:100]} "
                              f"(an incident if the end of the cell confirms it)")
                continue
            drained = drained_after_traffic(pred, samples, settle)
            if drained:
                res.status, res.reason = "passed", f"{v.reason}; but {drained}: held by the load, not leaked"
                continue
            signal = run.leak_signals.get(pred)
            when = f", first flagged mid-run at {signal[1]:.0f} s into the cell" if signal else ""
            run.recorder.record(Evidence(
                predicate=pred, seed=run.cell.seed, first_seen=signal[0] if signal else None,
                detail=f"{v.reason} (slope {v.slope_per_min:.3g}/min){when}; confirmed at the end of the cell",
                extra={"evidence": v.evidence, "series": run.sampler.samples[-600:],
                       "mid_run_signal": signal and {"at": signal[0], "cell_s": round(signal[1], 1),
                                                     "reason": signal[2]}}))
        if final:
            for pred, (_at, cell_s, reason) in run.leak_signals.items():
                res = out.get(pred)
                if res is not None and res.status != "failed":
                    res.reason = (f"{res.reason}; a mid-run check flagged it at {cell_s:.0f} s ({reason[:160]}) "
                                  f"but the end of the cell does not confirm it: retracted")
        return out

    async def _metrics_loop(self, run: CellRun, target: RunningTarget) -> None:
        """Scrape /metrics every 2 s: cumulative series must never decrease (I-OBS-1 from outside)."""
        sc = run.metrics
        pid = target.pid
        while sc is not None:
            await asyncio.sleep(2.0)
            if target.pid != pid:  # restarted: its counters legitimately start again
                sc.reset()
                pid = target.pid
            sc.port = target.port
            bad = await asyncio.to_thread(sc.check)
            if bad and run.recorder is not None:
                run.recorder.record(Evidence(predicate="I-OBS-1", seed=run.cell.seed,
                                             detail=f"/metrics scraped from outside: {bad[0]}",
                                             extra={"violations": bad[:50]}))

    async def _leak_loop(self, run: CellRun) -> None:
        """Judge the leak properties every 2 s once enough samples exist: a strong leak is an
        incident within a minute of the cell starting, not at its end."""
        while run.sampler is not None:
            await asyncio.sleep(2.0)
            if time.monotonic() - run.started >= LEAK_CHECK_FROM_S:
                await asyncio.to_thread(self._check_leaks, run, False)

    async def _checkpoint_loop(self, run: CellRun, target: RunningTarget) -> None:
        while True:
            await asyncio.sleep(self.opts.checkpoint_interval)
            self._fill_tallies(run)
            snapshot = run.cell.model_copy(deep=True)
            snapshot.incidents = list(run.recorder.incidents) if run.recorder else []
            snapshot.status, snapshot.partial = provisional_status(snapshot.incidents), True
            await asyncio.to_thread(self.checkpointer.record_cell, snapshot)

    # ---- judging -----------------------------------------------------------------------
    @staticmethod
    def _rfc(run: CellRun) -> dict[str, int]:
        """Framing checks of every slice that reads responses, summed."""
        total: dict[str, int] = {}
        for sl in (run.slice, run.markov, *run.others.values()):
            for k, v in (sl.rfc if sl is not None else {}).items():
                total[k] = total.get(k, 0) + v
        return total

    def _fill_tallies(self, run: CellRun) -> None:
        t1 = run.cell.tier_1
        sent = 0
        if run.slice is not None:
            adv = run.slice.counters()
            t1["adversarial"] = adv
            sent += adv.get("adv_sent", 0)
        if run.markov is not None:
            mk = run.markov.counters()
            t1["markov"] = mk
            sent += mk.get("requests", 0)
        for name, key in (("ws", "ws_torture"), ("h2c", "h2c_churn"), ("sse", "sse_kill")):
            if name in run.others:
                t1[key] = run.others[name].counters()
                sent += t1[key].get(f"{name}_sent", 0)
        if run.slice is not None or run.markov is not None or run.others:
            t1["rfc"] = self._rfc(run)
            t1["requests_sent"] = sent

    def _judge(self, run: CellRun, target: RunningTarget, error: str) -> None:
        cell = run.cell
        self._fill_tallies(run)
        props: dict[str, PropertyResult] = {}
        adv = run.slice
        if adv is not None:
            judged = adv.tally.get("adv_sent", 0)
            why = adv.stopped_reason or "no adversarial case was judged"
            for pid, key in (("I-ADV-ACCEPTED", "adv_wrong_accepted"), ("I-ADV-HANG", "adv_hang_until_timeout"),
                             ("I-ADV-LENIENT", "adv_lenient_accepted")):
                props[pid] = _counted(judged, adv.tally.get(key, 0), why)
        mk = run.markov
        ws = run.others.get("ws")
        if ws is not None:
            props.update(_ws_properties(ws))
        h2c = run.others.get("h2c")
        if h2c is not None:
            c = h2c.counters()
            why = h2c.stopped_reason or "no h2c preamble was judged"
            n = c.get("h2c_sent", 0)
            props["I-H2C-UPGRADE"] = _counted(n, c.get("h2c_bad_upgrade_accepted", 0), why)
            props["I-H2C-HANG"] = _counted(n, c.get("h2c_hang", 0), why)
            props["I-H2C-CRASHED"] = _counted(n, c.get("h2c_crashed", 0), why)
            # A body lost on a valid upgrade request is the adversarial predicate (SPEC §5).
            prev = props.get("I-ADV-ACCEPTED")
            evals = (prev.evaluations if prev else 0) + c.get("h2c_body_checked", 0)
            bad = (1 if prev and prev.status == "failed" else 0) + c.get("h2c_body_mismatch", 0)
            props["I-ADV-ACCEPTED"] = _counted(evals, bad, prev.reason if prev else why)
        sse = run.others.get("sse")
        if sse is not None:
            status, evaluations, reason = sse.judge_conn2()
            props["I-CONN-2"] = PropertyResult(status=status, evaluations=evaluations, reason=reason)
        if adv is not None or mk is not None or run.others:
            rfc = self._rfc(run)
            checked = rfc.get("responses_checked", 0)
            props["I-RFC-1"] = _counted(checked, rfc.get("rfc1_violations", 0), "no response was read")
            props["I-RFC-2"] = _counted(checked, rfc.get("rfc2_violations", 0), "no response was read")
        if mk is not None:
            if mk.kv is None:
                props["I-DRV-1"] = PropertyResult(
                    status="not_judged", reason="the OpenAPI document offers no PUT/GET/DELETE /kv/{key} "
                                                "(key/value contract); refapp self-checks still report it")
            else:
                props["I-DRV-1"] = _counted(mk.tally.get("drv_checks", 0),
                                            mk.tally.get("drv_read_after_write_mismatch", 0),
                                            mk.stopped_reason or "no acknowledged write was read back")
        if run.metrics is not None:
            sc = run.metrics
            if sc.violations:
                props["I-OBS-1"] = PropertyResult(status="failed", evaluations=sc.comparisons)
            elif sc.comparisons:
                props["I-OBS-1"] = PropertyResult(status="passed", evaluations=sc.comparisons)
            else:
                props["I-OBS-1"] = PropertyResult(status="not_judged",
                                                  reason=sc.absent_reason or "fewer than two /metrics scrapes")
        if run.leak_props is not None:
            props.update(run.leak_props)
        else:
            for pred in ("I-MEM-1", "I-FD-1", "I-TASK-1"):
                props[pred] = PropertyResult(status="not_judged", reason="url target: no local process to sample")
        wd = run.watchdog
        events = {e.predicate for e in (wd.events if wd else [])}
        recorded = {i.predicate for i in (run.recorder.incidents if run.recorder else [])}
        if target.pid is None:
            props["I-LIVENESS"] = PropertyResult(status="not_judged", reason="url target: no process to watch")
        else:
            dead = "I-LIVENESS" in events or "I-LIVENESS" in recorded
            props["I-LIVENESS"] = PropertyResult(status="failed" if dead else "passed",
                                                 evaluations=max(1, wd.health_checks if wd else 1))
        checks = wd.health_checks if wd else 0
        if "I-HANG" in events:
            props["I-HANG"] = PropertyResult(status="failed", evaluations=checks)
        elif checks:
            props["I-HANG"] = PropertyResult(status="passed", evaluations=checks)
        else:
            props["I-HANG"] = PropertyResult(status="not_judged", reason="no health check ran")
        if wd and wd.crash_markers:
            cell.tier_1["crash_markers"] = len(wd.crash_markers)
            write_json_atomic(self.run_dir / cell.folder / "crash_markers.json", wd.crash_markers)
        cell.incidents = list(run.recorder.incidents) if run.recorder else []
        # A predicate with an incident failed, whoever saw it (a slice, the watchdog, or the target
        # itself through an x-invariant 5xx): its property must say so.
        for inc in cell.incidents:
            prev = props.get(inc.predicate)
            if prev is None or prev.status != "failed":
                props[inc.predicate] = PropertyResult(
                    status="failed", evaluations=max(1, prev.evaluations if prev else 0),
                    reason=f"incident: {inc.detail}"[:300])
        cell.properties = props
        cell.finished_at = utc_now_iso()
        cell.partial = self.stop_event.is_set()
        high_failed = [p for p, r in props.items() if r.status == "failed" and severity(p) == "HIGH"]
        judged_any = any(r.status != "not_judged" for p, r in props.items() if p not in ("I-LIVENESS", "I-HANG"))
        internal = [e for sl in (adv, mk, *run.others.values()) if sl is not None for e in sl.internal_errors]
        if internal:
            write_json_atomic(self.run_dir / cell.folder / "internal_errors.json", internal)
        if high_failed or any(i.severity == "HIGH" for i in cell.incidents):
            cell.status = "failed"
            cell.reason = "HIGH: " + ", ".join(sorted(set(high_failed) | {i.predicate for i in cell.incidents
                                                                          if i.severity == "HIGH"}))
        elif error.startswith("internal error") and not (self.stop_event.is_set() and t1_sent(cell)):
            # probatorium's own failure: never reported as a pass. An interrupted cell that sent
            # traffic keeps the status of what was judged (SPEC §9), with partial: true.
            cell.status = "not_run"
            cell.reason = error
        elif not judged_any:
            cell.status = "failed"
            cell.reason = "measured nothing: " + (error or "every predicate is not_judged")
        else:
            cell.status = "ok"
            cell.reason = error
        if self.stop_event.is_set():
            cell.reason = (cell.reason + "; " if cell.reason else "") + "interrupted"
        sidecar = {"adversarial": {"calibration": run.extra_tally.get("adversarial_calibration"),
                                   "cases": adv.case_breakdown() if adv else {}},
                   "markov": {**run.extra_tally.get("markov", {}),
                              "per_operation": mk.per_operation() if mk else {}}}
        if ws is not None:
            sidecar["ws"] = {"stopped_reason": ws.stopped_reason, "cases": ws.case_breakdown()}
        if h2c is not None:
            sidecar["h2c"] = {"stopped_reason": h2c.stopped_reason, "cases": h2c.case_breakdown()}
        if sse is not None:
            sidecar["sse"] = {"stopped_reason": sse.stopped_reason, "endpoint_absent": sse.endpoint_absent}
        write_json_atomic(self.run_dir / cell.folder / "tier1_tally.json", sidecar)


def _declares(openapi: Path | None, method: str, path: str) -> bool:
    """Whether the target's OpenAPI document declares this operation."""
    if openapi is None or not openapi.is_file():
        return False
    from .openapi import load_operations

    return any(op.method == method and op.path == path for op in load_operations(openapi))


def sweep_targets(openapi: Path | None, opts: ValidateOptions) -> list[tuple[str, str]]:
    """(method, path) pairs whose responses the adversarial slice checks for framing each round:
    the contract paths, and from the OpenAPI document every GET (also as HEAD) and every
    operation that declares a 204 or 304 (path parameters filled with 1)."""
    out = [("GET", "/"), ("HEAD", "/"), ("GET", opts.health_path), ("HEAD", opts.health_path),
           ("GET", opts.debug_path), ("HEAD", opts.echo_path), ("OPTIONS", opts.echo_path)]
    if openapi is not None and openapi.is_file():
        from .openapi import load_operations

        for op in load_operations(openapi):
            path = op.concrete_path()
            bodiless = any(code in ("204", "304") for code in op.responses)
            if op.method == "GET":
                out += [("GET", path), ("HEAD", path)]
            elif bodiless and op.method in ("DELETE", "PUT", "POST", "PATCH", "OPTIONS"):
                out.append((op.method, path))
    return list(dict.fromkeys(out))


def _refapp_versions(spec: TargetSpec) -> dict[str, str]:
    """Versions of the packages a refapp lists in its requirements.in (the stack under test)."""
    if spec.kind != "refapp" or not spec.refapp:
        return {}
    from importlib import metadata

    from ..targets.refapps import refapp_dir

    out: dict[str, str] = {}
    req = refapp_dir(spec.refapp) / "requirements.in"
    if req.is_file():
        for line in req.read_text().splitlines():
            name = re.split(r"[<>=\[;\s]", line.strip(), maxsplit=1)[0]
            if name and not name.startswith("#"):
                try:
                    out[name] = metadata.version(name)
                except metadata.PackageNotFoundError:
                    out[name] = "not installed"
    return out


def _ws_properties(ws) -> dict[str, PropertyResult]:
    """I-WS-ACCEPTED / I-WS-HANG (HIGH) and I-WS-CLOSE (MED) from the WebSocket torture counters;
    nothing is passed unless a real handshake succeeded (an absent endpoint is not_judged)."""
    c = ws.counters()
    upgraded = c.get("ws_upgraded", 0)
    if not upgraded or getattr(ws, "endpoint_absent", False):
        why = ws.stopped_reason or "no WebSocket handshake succeeded"
        return {p: PropertyResult(status="not_judged", reason=why) for p in ("I-WS-ACCEPTED", "I-WS-HANG", "I-WS-CLOSE")}
    sent = c.get("ws_sent", 0)
    return {
        "I-WS-ACCEPTED": _counted(sent, c.get("ws_accepted_bad_frame", 0), ""),
        "I-WS-HANG": _counted(sent, c.get("ws_hang_no_close", 0), ""),
        "I-WS-CLOSE": _counted(sent, c.get("ws_wrong_close", 0) + c.get("ws_unclean_close", 0), ""),
    }


def provisional_status(incidents: list[Incident]) -> str:
    """A running cell's status in a checkpoint: failed once a HIGH incident is recorded, else ok."""
    return "failed" if any(i.severity == "HIGH" for i in incidents) else "ok"


def t1_sent(cell: Cell) -> bool:
    """Whether the cell's slices sent any traffic (requests_sent in its Tier 1 tallies)."""
    return bool(cell.tier_1.get("requests_sent"))


def _counted(evaluations: int, violations: int, why_not: str) -> PropertyResult:
    if violations:
        return PropertyResult(status="failed", evaluations=evaluations)
    if evaluations:
        return PropertyResult(status="passed", evaluations=evaluations)
    return PropertyResult(status="not_judged", reason=why_not)


def gate_exit_code(doc: ValidateDocument, interrupted: bool = False) -> int:
    """SPEC.md §3: 1 = release gate failed (wins); 2 = not_run cell / infra / interrupted; else 0."""
    cells = doc.validation_results.cells
    if any(i.severity == "HIGH" for i in doc.incidents) or any(c.status == "failed" for c in cells):
        return 1
    if interrupted or any(c.status == "not_run" for c in cells) or not cells:
        return 2
    return 0


def random_seed() -> int:
    return random.SystemRandom().getrandbits(63)


def incidents_summary(incidents: list[Incident]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in incidents:
        out[i.severity] = out.get(i.severity, 0) + 1
    return out
