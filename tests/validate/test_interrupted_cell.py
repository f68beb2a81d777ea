"""An interrupted cell keeps partial: true and a status from what was judged, never not_run (SPEC §9)."""

from __future__ import annotations

from probatorium.results.schema import Cell, Incident, PropertyResult
from probatorium.validate.gate import cell_status, provisional_status

CANCELLED = "internal error while driving the cell: CancelledError: "
JUDGED = {"I-RFC-1": PropertyResult(status="passed", evaluations=5)}


def _incident(severity: str) -> Incident:
    return Incident(predicate="I-X", severity=severity, refapp="r", engine="e", arch="amd64",
                    cell="cell-01-r-e", first_seen="2026-01-01T00:00:00Z", dossier="d")


def test_provisional_status_of_a_running_cell():
    cell = Cell(refapp="r", engine="e", arch="amd64", status="not_run", tier_1={"requests_sent": 3})
    assert provisional_status(cell)[0] == "ok"
    cell.incidents = [_incident("MED")]
    assert provisional_status(cell)[0] == "ok"
    cell.incidents.append(_incident("HIGH"))
    assert provisional_status(cell)[0] == "failed"


def test_interrupted_cell_with_traffic_keeps_a_judged_status():
    status, reason = cell_status(JUDGED, [], CANCELLED, interrupted=True, traffic_sent=True)
    assert status == "ok" and "interrupted" in reason
    assert cell_status(JUDGED, [_incident("HIGH")], CANCELLED, interrupted=True)[0] == "failed"


def test_internal_error_without_interruption_is_still_not_run():
    assert cell_status(JUDGED, [], CANCELLED, interrupted=False)[0] == "not_run"
