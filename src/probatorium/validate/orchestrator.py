"""The validation orchestrator: iterate the cells of a run and checkpoint the run document.

A matrix is a list of cells run one after another with budget = total / cells,
each with a fresh target (:class:`~.cell.CellRunner` runs one). The backing
services the cells need are started once for the run. The run document is
checkpointed while cells run, so an interrupted run leaves a valid document
marked ``partial: true``.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .. import __version__
from ..errors import ProbatoriumError
from ..progress import reporter_of
from ..results.schema import ValidateDocument, ValidationResults, host_arch_pair, normalize_arch, utc_now_iso
from ..results.store import Checkpointer
from .baseline import Entry, apply_baseline
from .cell import CellRunner
from .plan import CellPlan, ValidateOptions
from .schedule import cell_budget


class Orchestrator:
    """Runs a list of cells into one run folder."""

    def __init__(self, plans: list[CellPlan], options: ValidateOptions, run_dir: Path, *, kind: str,
                 command: list[str], stop_event: threading.Event | None = None,
                 baseline: list[Entry] | None = None, baseline_source: str = "") -> None:
        self.plans = plans
        self.baseline, self.baseline_source = baseline, baseline_source
        self.opts = options
        self.run_dir = run_dir
        self.stop_event = stop_event or threading.Event()
        for i, p in enumerate(plans, 1):
            p.index = i
        self.document = ValidateDocument(
            host_arch_pair=host_arch_pair(), kind=kind, probatorium_version=__version__, command=command,
            partial=True,
            validation_results=ValidationResults(started_at=utc_now_iso(), seed=options.seed,
                                                 duration_s=options.duration_s),
        )
        self.checkpointer = Checkpointer(run_dir, self.document)
        self.cells = CellRunner(run_dir, options, self.checkpointer, normalize_arch(), self.stop_event, self._say)

    def _say(self, msg: str) -> None:
        if callable(self.opts.progress):
            self.opts.progress(msg)

    def run(self) -> ValidateDocument:
        """Run every cell; always leave a valid document behind."""
        budget = cell_budget(self.opts.duration_s, len(self.plans))
        self.checkpointer.checkpoint()
        manager, missing = self._start_services()
        self.cells.services = manager  # each cell's TargetControl can fault the services too
        progress = reporter_of(self.opts.progress)
        progress.plan([budget] * len(self.plans), noun="cell")
        try:
            for plan in self.plans:
                if self.stop_event.is_set():
                    break
                reasons = [missing[s] for s in self._needed(plan) if s in missing]
                progress.start(f"{plan.label}/{plan.engine}")
                if reasons:
                    cell = self.cells.not_run(plan, "; ".join(dict.fromkeys(reasons)))
                else:
                    cell = self.cells.run(plan, budget, len(self.plans))
                # a cell that never ran (no service, no start) teaches the ETA nothing
                progress.finish(cell.status, skipped=cell.status == "not_run")
                self.checkpointer.record_cell(cell)
        finally:
            if manager is not None:
                manager.down()
            self._finish()
        return self.document

    def _finish(self) -> None:
        vr = self.document.validation_results
        vr.finished_at = utc_now_iso()
        self.document.incidents = [i for c in vr.cells for i in c.incidents]
        self.document.finalize_back_compat()
        if self.baseline is not None:  # accepted findings: marked, and the cells re-judged
            apply_baseline(self.document, self.baseline, self.baseline_source)
            for cell in vr.cells:
                if cell.folder:
                    self.checkpointer.write_cell(cell)
        if self.stop_event.is_set() or len(vr.cells) < len(self.plans):
            self.checkpointer.checkpoint()
        else:
            self.checkpointer.finish()

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

        # Tier 3 kills services and expects durable ones to keep acknowledged writes (SPEC.md §9)
        manager = ServiceManager(durable=self.opts.tiers is None or 3 in self.opts.tiers)
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
