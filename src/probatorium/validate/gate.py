"""The release gate: a cell's status from its judged properties, and the run's exit status.

docs/contracts.md: exit 1 when the gate fails — any HIGH incident, or a cell that ran
but measured nothing — and that wins over everything else; else 2 on usage or
infrastructure errors (a cell that could not start: ``not_run``, an
interrupted run); else 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..results.schema import Cell, Incident, PropertyResult, ValidateDocument
from .invariants import severity

# The watchdog's predicates are judged on every started target: they alone are not a measurement.
WATCHDOG_ONLY = ("I-LIVENESS", "I-HANG")


def cell_status(props: Mapping[str, PropertyResult], incidents: Sequence[Incident], error: str, *,
                interrupted: bool = False, traffic_sent: bool = True) -> tuple[str, str]:
    """(status, reason) of a judged cell.

    failed: a HIGH property failed or a HIGH incident was recorded; failed too when the cell
    ran to its end but measured nothing. not_run: probatorium's own failure (never reported
    as a pass). An interrupted cell keeps the status of what was judged — never not_run once
    traffic was sent — and its reason says it was interrupted.
    """
    high = sorted({p for p, r in props.items() if r.status == "failed" and severity(p) == "HIGH"}
                  | {i.predicate for i in incidents if i.severity == "HIGH"})
    judged_any = any(r.status != "not_judged" for p, r in props.items() if p not in WATCHDOG_ONLY)
    if high:
        status, reason = "failed", "HIGH: " + ", ".join(high)
    elif error.startswith("internal error") and not interrupted:  # Ctrl-C can surface as a cancellation
        status, reason = "not_run", error
    elif interrupted:
        status, reason = ("ok", error) if traffic_sent or judged_any else ("not_run", error)
    elif not judged_any:
        status, reason = "failed", "measured nothing: " + (error or "every predicate is not_judged")
    else:
        status, reason = "ok", error
    if interrupted:
        reason = (reason + "; " if reason else "") + "interrupted"
    return status, reason


def provisional_status(cell: Cell) -> tuple[str, str]:
    """Status of a checkpoint snapshot of a running cell (it is also ``partial``): failed once a
    HIGH incident is recorded, ok once traffic was sent, not_run before."""
    high = sorted({i.predicate for i in cell.incidents if i.severity == "HIGH"})
    if high:
        return "failed", "HIGH: " + ", ".join(high) + " (cell still running)"
    if cell.tier_1.get("requests_sent") or cell.tier_2.get("requests"):
        return "ok", "cell still running"
    return "not_run", "cell still starting"


def unaccepted_high(props: Mapping[str, PropertyResult], incidents: Sequence[Incident]) -> list[str]:
    """The HIGH predicates that fail a cell once the baseline's accepted incidents are set aside:
    each HIGH incident not accepted, and each failed HIGH property unless every incident recorded
    for it is accepted (a failure with no incident at all still counts)."""
    out = {i.predicate for i in incidents if i.severity == "HIGH" and not i.accepted}
    for p, r in props.items():
        if r.status == "failed" and severity(p) == "HIGH":
            mine = [i for i in incidents if i.predicate == p]
            if not mine or not all(i.accepted for i in mine):
                out.add(p)
    return sorted(out)


def rejudge_accepted(cell: Cell) -> None:
    """After a baseline marked incidents accepted: a cell failed only by accepted HIGH findings
    becomes ok (its reason names them), one failed by others names only those."""
    if cell.status != "failed" or not cell.reason.startswith("HIGH: "):
        return  # not failed, or failed for measuring nothing: the baseline does not change that
    suffix = "; interrupted" if cell.reason.endswith("; interrupted") else ""
    still = unaccepted_high(cell.properties, cell.incidents)
    if still:
        cell.reason = "HIGH: " + ", ".join(still) + suffix
        return
    accepted = sorted({i.predicate for i in cell.incidents if i.accepted and i.severity == "HIGH"})
    cell.status, cell.reason = "ok", "HIGH accepted by the baseline: " + ", ".join(accepted) + suffix


def gate_exit_code(doc: ValidateDocument, interrupted: bool = False) -> int:
    """docs/contracts.md: 1 = release gate failed (wins); 2 = not_run cell / infra / interrupted; else 0.
    Incidents a baseline accepted (``accepted: true``) do not fail the gate."""
    cells = doc.validation_results.cells
    if any(i.severity == "HIGH" and not i.accepted for i in doc.incidents) or any(c.status == "failed" for c in cells):
        return 1
    if interrupted or any(c.status == "not_run" for c in cells) or not cells:
        return 2
    return 0


def incidents_summary(incidents: Sequence[Incident]) -> dict[str, int]:
    """Incidents per severity."""
    out: dict[str, int] = {}
    for i in incidents:
        out[i.severity] = out.get(i.severity, 0) + 1
    return out
