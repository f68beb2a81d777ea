"""An interrupted cell keeps partial: true and a status from what was judged, never not_run (SPEC §9)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from probatorium.results.schema import Cell, Incident
from probatorium.targets.launcher import TargetSpec
from probatorium.validate.orchestrator import CellPlan, CellRun, Orchestrator, ValidateOptions, provisional_status


def _incident(severity: str) -> Incident:
    return Incident(predicate="I-X", severity=severity, refapp="r", engine="e", arch="amd64",
                    cell="cell-01-r-e", first_seen="2026-01-01T00:00:00Z", dossier="d")


def test_provisional_status_of_a_running_cell():
    assert provisional_status([]) == "ok"
    assert provisional_status([_incident("MED")]) == "ok"
    assert provisional_status([_incident("MED"), _incident("HIGH")]) == "failed"


def _judged_cell(tmp_path, *, interrupted: bool, sent: int) -> Cell:
    stop = threading.Event()
    if interrupted:
        stop.set()
    plan = CellPlan("r", TargetSpec(kind="url", url="http://127.0.0.1:9"))
    orch = Orchestrator([plan], ValidateOptions(duration_s=1, concurrency=1, seed=1, slices=None), tmp_path,
                        kind="single", command=[], stop_event=stop)
    cell = Cell(refapp="r", engine="url", arch="amd64", status="not_run", folder="cell-01-r-url", partial=True)
    (tmp_path / cell.folder).mkdir()
    run = CellRun(cell=cell, plan=plan)
    # A slice that sent traffic and judged nothing wrong, then the run was interrupted mid-cell.
    run.markov = SimpleNamespace(counters=lambda: {"requests": sent}, rfc={"responses_checked": sent}, kv=None,
                                 tally={}, stopped_reason="", internal_errors=[], per_operation=lambda: {})
    orch._judge(run, SimpleNamespace(pid=None), "internal error while driving the cell: CancelledError: ")
    return cell


def test_interrupted_cell_with_traffic_keeps_a_judged_status(tmp_path):
    cell = _judged_cell(tmp_path, interrupted=True, sent=5)
    assert cell.partial is True
    assert cell.status == "ok"
    assert "interrupted" in cell.reason


def test_internal_error_without_interruption_is_still_not_run(tmp_path):
    cell = _judged_cell(tmp_path, interrupted=False, sent=5)
    assert cell.status == "not_run" and cell.partial is False
