"""CI outputs of a run document: JUnit XML (`--junit FILE`) and SARIF 2.1.0 (`--sarif FILE`).

JUnit: one <testsuite> per cell, one <testcase> per judged property (classname = the cell's
label, name = the predicate); a failed property is a <failure> (message = its first incident's
detail, type = severity, text = every incident's detail, reproducer command and dossier); a
not_judged property is <skipped> with its reason; a failure whose every incident a baseline
accepted is <skipped> with "accepted by the baseline: <reason>" (it does not fail the gate).
The tests validate the output against the JUnit 10 XSD (tests/data/schemas/).

SARIF: one run, a rule per predicate (catalogue text and severity), a result per incident
(ruleId = predicate, level HIGH→error, MED→warning, LOW→note, message = detail, a logical
location cell / operation / case, and the dossier's incident.json as physical location relative
to the run folder, uriBaseId RUNDIR). An accepted incident carries an external suppression
(status accepted, justification = the baseline's reason). docs/gate.md describes both.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..results.schema import Cell, Incident, ValidateDocument
from ..errors import UsageError
from ..results.store import write_text_atomic
from .baseline import Entry, update_baseline
from .gate import incidents_summary, unaccepted_high
from .invariants import CATALOGUE, severity

SARIF_LEVEL = {"HIGH": "error", "MED": "warning", "LOW": "note"}
SARIF_SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"


def cell_label(cell: Cell) -> str:
    """How a cell is named in CI outputs: refapp/engine/arch."""
    return f"{cell.refapp}/{cell.engine}/{cell.arch}"


def _seconds(started: str, finished: str) -> str:
    try:
        a = datetime.fromisoformat(started.replace("Z", "+00:00"))
        b = datetime.fromisoformat(finished.replace("Z", "+00:00"))
    except ValueError:
        return "0.000"
    return f"{max(0.0, (b - a).total_seconds()):.3f}"


def _incident_text(inc: Incident, run_dir: Path) -> str:
    where = f"case {inc.case}" if inc.case else "no case"
    lines = [f"{inc.severity} {inc.predicate} ({where}): {inc.detail}"]
    if inc.accepted:
        lines.append(f"  accepted by the baseline: {inc.accepted_reason}")
    if inc.reproducer:
        lines.append(f"  reproducer: cd {run_dir} && {inc.reproducer}")
    lines.append(f"  dossier: {run_dir / inc.dossier}")
    return "\n".join(lines)


def _testcase(suite: ET.Element, label: str, pred: str, status: str, reason: str,
              incidents: list[Incident], run_dir: Path) -> str:
    """Add one <testcase>; return its outcome (passed, failed, skipped)."""
    case = ET.SubElement(suite, "testcase", classname=label, name=pred)
    mine = [i for i in incidents if i.predicate == pred]
    text = "\n".join(_incident_text(i, run_dir) for i in mine)
    if status == "failed" and mine and all(i.accepted for i in mine):
        why = "; ".join(dict.fromkeys(i.accepted_reason for i in mine))
        ET.SubElement(case, "skipped", message=f"accepted by the baseline: {why}").text = text
        return "skipped"
    if status == "failed":
        message = mine[0].detail if mine else (reason or "failed")
        ET.SubElement(case, "failure", message=message, type=severity(pred)).text = text or reason
        return "failed"
    if status != "passed":
        ET.SubElement(case, "skipped", message=f"{status}: {reason}" if reason else status)
        return "skipped"
    return "passed"


def _suite(root: ET.Element, cell: Cell, run_dir: Path) -> tuple[int, int, int]:
    label = cell_label(cell)
    suite = ET.SubElement(root, "testsuite", name=label)
    cases = {p: (r.status, r.reason) for p, r in cell.properties.items()}
    for inc in cell.incidents:  # a finding whose predicate has no verdict (a lesser form) still shows
        cases.setdefault(inc.predicate, ("failed", ""))
    if cell.status == "not_run":  # nothing was judged: one case says why
        cases = {"cell": ("not_run", cell.reason)}
    outcomes = [_testcase(suite, label, p, st, why, cell.incidents, run_dir) for p, (st, why) in cases.items()]
    tests, failures, skipped = len(outcomes), outcomes.count("failed"), outcomes.count("skipped")
    suite.attrib.update(tests=str(tests), failures=str(failures), errors="0", skipped=str(skipped),
                        time=_seconds(cell.started_at, cell.finished_at), timestamp=cell.started_at)
    ET.SubElement(suite, "system-out").text = f"cell status {cell.status}: {cell.reason}".rstrip(": ")
    return tests, failures, skipped


def junit_xml(doc: ValidateDocument, run_dir: Path) -> str:
    """The JUnit XML text of a run document (`run_dir` makes the reproducers' paths absolute)."""
    root = ET.Element("testsuites", name="probatorium validate")
    totals = [_suite(root, c, run_dir) for c in doc.validation_results.cells]
    root.attrib.update(tests=str(sum(t for t, _, _ in totals)), failures=str(sum(f for _, f, _ in totals)),
                       errors="0", time=f"{doc.validation_results.duration_s:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _sarif_result(inc: Incident, rule_index: dict[str, int]) -> dict[str, Any]:
    logical = [{"name": inc.cell, "kind": "module"}]
    if inc.operation:
        logical.append({"name": inc.operation, "kind": "function", "fullyQualifiedName": f"{inc.cell}/{inc.operation}"})
    if inc.case:
        logical.append({"name": inc.case, "kind": "member", "fullyQualifiedName": f"{inc.cell}/{inc.case}"})
    res: dict[str, Any] = {
        "ruleId": inc.predicate, "ruleIndex": rule_index[inc.predicate], "level": SARIF_LEVEL[inc.severity],
        "message": {"text": inc.detail or inc.predicate},
        "locations": [{
            "physicalLocation": {"artifactLocation": {"uri": f"{inc.dossier}/incident.json", "uriBaseId": "RUNDIR"}},
            "logicalLocations": logical,
        }],
        "partialFingerprints": {"probatorium/v1": f"{inc.predicate}|{inc.engine}|{inc.operation or inc.case}"},
        "properties": {"severity": inc.severity, "refapp": inc.refapp, "engine": inc.engine, "arch": inc.arch,
                       "case": inc.case, "reproducer": inc.reproducer, "dossier": inc.dossier,
                       "first_seen": inc.first_seen},
    }
    if inc.accepted:
        res["suppressions"] = [{"kind": "external", "status": "accepted", "justification": inc.accepted_reason}]
    return res


def sarif_log(doc: ValidateDocument, run_dir: Path) -> dict[str, Any]:
    """The SARIF 2.1.0 log of a run document."""
    preds = sorted({i.predicate for i in doc.incidents})
    rules = []
    for p in preds:
        inv = CATALOGUE.get(p)
        rules.append({"id": p, "shortDescription": {"text": inv.property if inv else p},
                      "defaultConfiguration": {"level": SARIF_LEVEL[severity(p)]},
                      "properties": {"severity": inv.severity if inv else "", "judged_by": inv.judged_by if inv else ""}})
    index = {p: n for n, p in enumerate(preds)}
    run = {
        "tool": {"driver": {"name": "probatorium", "version": __version__, "rules": rules}},
        "originalUriBaseIds": {"RUNDIR": {"uri": run_dir.resolve().as_uri() + "/"}},
        "invocations": [{"executionSuccessful": not doc.partial, "commandLine": " ".join(doc.command),
                         "startTimeUtc": doc.validation_results.started_at or None,
                         "endTimeUtc": doc.validation_results.finished_at or None}],
        "results": [_sarif_result(i, index) for i in doc.incidents],
    }
    for inv in run["invocations"]:
        for k in ("startTimeUtc", "endTimeUtc"):
            if inv[k] is None:
                del inv[k]
    return {"$schema": SARIF_SCHEMA_URI, "version": "2.1.0", "runs": [run]}


def write_junit(path: Path, doc: ValidateDocument, run_dir: Path) -> Path:
    """Write `junit_xml` to `path` atomically."""
    return write_text_atomic(path, junit_xml(doc, run_dir))


def write_sarif(path: Path, doc: ValidateDocument, run_dir: Path) -> Path:
    """Write `sarif_log` to `path` atomically (indented JSON)."""
    return write_text_atomic(path, json.dumps(sarif_log(doc, run_dir), indent=2, ensure_ascii=False) + "\n")


@dataclass
class CiOptions:
    """What the gate flags ask for: --baseline FILE (its entries), --baseline-update, --junit, --sarif."""

    baseline_path: Path | None = None
    baseline: list[Entry] | None = None
    update: bool = False
    junit: Path | None = None
    sarif: Path | None = None

    def check(self) -> None:
        """Refuse, before the run, what could only fail after it (one line, exit 2)."""
        if self.update and self.baseline_path is None:
            raise UsageError("--baseline-update needs --baseline FILE (the file it creates or extends)")
        for flag, path in (("--baseline", self.baseline_path if self.update else None),
                           ("--junit", self.junit), ("--sarif", self.sarif)):
            if path is not None and not path.resolve().parent.is_dir():
                raise UsageError(f"{flag} {path}: the folder {path.resolve().parent} does not exist")


def write_outputs(doc: ValidateDocument, run_dir: Path, ci: CiOptions) -> list[str]:
    """After the run: extend the baseline (--baseline-update), write --junit and --sarif.
    Returns the lines to show the user."""
    lines = []
    summary = getattr(doc, "baseline", None)
    if summary is not None:
        lines.append(f"baseline: {summary['accepted']} incident(s) accepted by {summary['entries']} entr(y/ies); "
                     f"{len(summary['stale'])} stale, {len(summary['not_checked'])} not checked by this run")
        for e in summary["stale"]:
            lines.append(f"baseline: stale (no longer reproduces): {e['predicate']} "
                         f"{'case=' + e['case'] if e.get('case') else 'operation=' + e.get('operation', '')} "
                         f"engine={e['engine']}")
        for inc in doc.incidents:
            if inc.severity == "HIGH" and not inc.accepted:
                lines.append(f"baseline: new HIGH finding (not accepted): {inc.predicate} "
                             f"{'operation=' + inc.operation if inc.operation else 'case=' + inc.case} "
                             f"engine={inc.engine}: {inc.detail[:160]}")
    if ci.update and ci.baseline_path is not None:
        added = update_baseline(ci.baseline_path, doc)
        lines.append(f"baseline: {len(added)} entr(y/ies) added to {ci.baseline_path} (they apply from the next run)")
    if ci.junit is not None:
        lines.append(f"junit: {write_junit(ci.junit, doc, run_dir)}")
    if ci.sarif is not None:
        lines.append(f"sarif: {write_sarif(ci.sarif, doc, run_dir)}")
    return lines


def json_summary(doc: ValidateDocument, run_dir: Path, exit_code: int) -> dict[str, Any]:
    """`--json`: the run's summary as one object (what the console table shows, for machines)."""
    cells = [{"cell": cell_label(c), "folder": c.folder, "status": c.status, "reason": c.reason,
              "high": unaccepted_high(c.properties, c.incidents),
              "accepted": sum(1 for i in c.incidents if i.accepted),
              "properties": {p: r.status for p, r in c.properties.items()}}
             for c in doc.validation_results.cells]
    out = {"results": str(run_dir / "validate-results.json"), "exit_code": exit_code, "partial": doc.partial,
           "seed": f"{doc.validation_results.seed:#x}", "cells": cells,
           "incidents": incidents_summary([i for i in doc.incidents if not i.accepted]),
           "accepted": incidents_summary([i for i in doc.incidents if i.accepted])}
    summary = getattr(doc, "baseline", None)
    if summary is not None:
        out["baseline"] = summary
    return out
