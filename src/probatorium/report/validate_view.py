"""The validation view: the matrix as a grid (refapp × engine, coloured by status), a drill-down
per cell (properties with evaluations and reasons, tallies, per-case verdicts, Tier 2 coverage,
Tier 3 seed outcomes) and every incident with its reproducer command."""

from __future__ import annotations

from collections import Counter
from typing import Any

from probatorium.report.markup import badge, details, e, flatten, kv, table
from probatorium.report.sources import Run
from probatorium.results.schema import Cell, Incident, ValidateDocument

CASE_SLICES = ("adversarial", "ws", "h2c")
SEVERITIES = ("HIGH", "MED", "LOW")


def severity_counts(incidents: list[Incident]) -> dict[str, int]:
    """HIGH/MED/LOW counts of the findings that are not accepted by a baseline."""
    c = Counter(i.severity for i in incidents if not i.accepted)
    return {s: c.get(s, 0) for s in SEVERITIES}


def _column(cell: Cell, multi_arch: bool) -> str:
    return f"{cell.engine}@{cell.arch}" if multi_arch else cell.engine


def grid(doc: ValidateDocument, prefix: str) -> str:
    """The refapp × engine grid; each cell is a button that opens its drill-down."""
    cells = doc.validation_results.cells
    multi_arch = len({c.arch for c in cells}) > 1
    refapps = list(dict.fromkeys(c.refapp for c in cells))
    columns = list(dict.fromkeys(_column(c, multi_arch) for c in cells))
    at = {(c.refapp, _column(c, multi_arch)): (i, c) for i, c in enumerate(cells)}
    head = "".join(f"<th>{e(col)}</th>" for col in columns)
    rows = []
    for r in refapps:
        tds = []
        for col in columns:
            if (r, col) not in at:
                tds.append('<td class="empty">–</td>')
                continue
            i, c = at[(r, col)]
            sev = severity_counts(c.incidents)
            counts = " ".join(f'<span class="sev {s}">{s[0]}{n}</span>' for s, n in sev.items() if n)
            tds.append(f'<td><button type="button" class="gridcell {badge_class(c.status)}" '
                       f'data-detail="{prefix}-cell-{i}" title="{e(c.reason)}">'
                       f'<b>{e(c.status)}</b><br>{counts or "no findings"}</button></td>')
        rows.append(f"<tr><th>{e(r)}</th>{''.join(tds)}</tr>")
    return (f'<table class="matrix"><thead><tr><th>refapp \\ engine</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def badge_class(status: str) -> str:
    """The colour class of a cell status."""
    return {"ok": "ok", "failed": "bad"}.get(status, "na")


def incidents_table(incidents: list[Incident], run_path: str) -> str:
    """Every incident, HIGH first, with what replays it (the command runs from the run folder)."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    rows = []
    for inc in sorted(incidents, key=lambda i: (rank.get(i.severity, 9), i.first_seen)):
        repro = (f'<code title="dossier {e(inc.dossier)}">cd {e(run_path)} &amp;&amp; {e(inc.reproducer)}</code>'
                 if inc.reproducer else f'<span class="muted">no reproducer; dossier {e(inc.dossier)}</span>')
        what = inc.case or inc.operation or (f"seed {inc.seed}" if inc.seed else "")
        acc = " " + badge("accepted", "not_judged") + " " + e(inc.accepted_reason) if inc.accepted else ""
        rows.append([badge(inc.severity), e(inc.predicate), e(f"{inc.refapp}/{inc.engine}/{inc.arch}"),
                     e(what), e(inc.detail) + acc, repro])
    return table(("severity", "predicate", "cell", "case / operation / seed", "detail", "reproducer"),
                 rows, "incidents", raw=True)


def _properties(cell: Cell) -> str:
    rows = [[e(pid), badge(p.status), e(p.evaluations), e(p.reason)] for pid, p in sorted(cell.properties.items())]
    return table(("property", "status", "evaluations", "reason"), rows, "props", raw=True)


def _case_verdicts(t1: Any) -> str:
    if not isinstance(t1, dict):
        return '<p class="muted">no tier1_tally.json</p>'
    rows = []
    for sl in CASE_SLICES:
        cases = (t1.get(sl) or {}).get("cases") if isinstance(t1.get(sl), dict) else None
        for name, c in (cases or {}).items():
            if isinstance(c, dict):
                rows.append([e(sl), e(name), badge(str(c.get("verdict", "")), _verdict_kind(c.get("verdict"))),
                             e(c.get("level", "")), e(c.get("clause", "")), e(c.get("expect", ""))])
    return table(("slice", "case", "verdict", "level", "clause", "expected"), rows, "cases", raw=True)


def _verdict_kind(verdict: Any) -> str:
    v = str(verdict)
    if v in ("wrong_accepted", "crash", "refused_valid"):
        return "failed"
    if v in ("hang_until_timeout", "lenient_accepted"):
        return "errored"
    if v in ("served_ok", "well_rejected"):
        return "ok"
    return "not_run"


def tier2_coverage(t2: Any) -> str:
    """Tier 2: each operation's statuses seen (a 2xx marks it covered), then the unreached and why."""
    if not isinstance(t2, dict) or not t2.get("coverage") and not t2.get("unreached"):
        return '<p class="muted">Tier 2 did not run in this cell</p>'
    rows = []
    for op, statuses in sorted((t2.get("coverage") or {}).items()):
        ok = any(str(s).startswith("2") for s in statuses)
        rows.append([e(op), badge("covered" if ok else "no 2xx", "ok" if ok else "errored"),
                     e(", ".join(f"{s}×{n}" for s, n in sorted(statuses.items())))])
    rows += [[e(op), badge("unreached", "not_run"), e(why)] for op, why in sorted((t2.get("unreached") or {}).items())]
    tally = t2.get("tally") or {}
    head = (f'<p>{e(tally.get("operations_covered", "?"))}/{e(tally.get("operations_total", "?"))} operations '
            f'with a 2xx, {e(tally.get("pairs_seen", "?"))} (operation, status) pairs, '
            f'{e(tally.get("sequences", "?"))} sequences, {e(tally.get("requests", "?"))} requests</p>')
    return head + table(("operation", "coverage", "statuses"), rows, "coverage", raw=True)


def tier3_seeds(t3: Any) -> str:
    """Tier 3: one row per seed with its outcome and each predicate's evaluations/violations."""
    seeds = t3.get("seeds") if isinstance(t3, dict) else None
    if not seeds:
        return '<p class="muted">Tier 3 ran no seed in this cell</p>'
    rows = []
    for s in seeds:
        preds = s.get("predicates") or {}
        judged = "; ".join(f"{p}: {v.get('evaluations', 0)} ev, {len(v.get('violations') or [])} viol"
                           for p, v in preds.items() if isinstance(v, dict))
        out = str(s.get("outcome", ""))
        faults = ", ".join(str(f.get("kind", f)) if isinstance(f, dict) else str(f) for f in s.get("faults") or [])
        rows.append([f"<code>{e(s.get('seed'))}</code>", badge(out, {"passed": "ok"}.get(out, "failed")),
                     e(faults), e(", ".join(map(str, s.get("failed") or []))), e(s.get("error", "")), e(judged)])
    skipped = t3.get("fault_kinds_skipped") or {}
    note = "".join(f"<li>{e(k)}: {e(v)}</li>" for k, v in skipped.items())
    return (table(("seed", "outcome", "faults", "failed", "error", "predicates"), rows, "seeds", raw=True)
            + (f'<p>fault kinds skipped:</p><ul>{note}</ul>' if note else ""))


def cell_detail(run: Run, i: int, cell: Cell, prefix: str) -> str:
    """The drill-down of one cell (hidden until its grid button is pressed)."""
    side = run.extra.get(cell.folder, {})
    tallies = {"tier_1": cell.tier_1, "tier_2": cell.tier_2, "tier_3": cell.tier_3}
    tally_rows = [(k, v) for name, t in tallies.items() for k, v in flatten(t, name + ".")]
    info = kv([("status", cell.status), ("reason", cell.reason or "–"), ("seed", hex(cell.seed)),
               ("started", cell.started_at), ("finished", cell.finished_at or "–"),
               ("target", cell.target.get("describe", "")), ("folder", cell.folder),
               ("versions", ", ".join(f"{k} {v}" for k, v in cell.versions.items()))])
    return (f'<section class="celldetail" id="{prefix}-cell-{i}" hidden>'
            f'<h3>{e(cell.refapp)} on {e(cell.engine)} ({e(cell.arch)}) {badge(cell.status)}</h3>{info}'
            f'<h4>Properties</h4>{_properties(cell)}'
            f'<h4>Incidents</h4>{incidents_table(cell.incidents, str(run.path.resolve()))}'
            + details("Tallies", table(("counter", "value"), tally_rows, "tallies"))
            + details("Per-case verdicts (Tier 1)", _case_verdicts(side.get("tier1_tally.json")))
            + details("Tier 2 coverage", tier2_coverage(side.get("tier2_tally.json")))
            + details("Tier 3 seed outcomes", tier3_seeds(side.get("tier3_tally.json")))
            + "</section>")


def render(run: Run, prefix: str) -> str:
    """The whole validation view of one run."""
    doc: ValidateDocument = run.document
    vr = doc.validation_results
    status = Counter(c.status for c in vr.cells)
    sev = severity_counts(doc.incidents)
    head = kv([("run", str(run.path)), ("host", doc.host_arch_pair), ("kind", doc.kind),
               ("probatorium", doc.probatorium_version), ("command", " ".join(doc.command)),
               ("started", vr.started_at), ("finished", vr.finished_at or "–"), ("duration", f"{vr.duration_s:g} s"),
               ("seed", hex(vr.seed)), ("partial", "yes" if doc.partial else "no")])
    summary = (" ".join(badge(f"{n} {s}", s) for s, n in sorted(status.items()))
               + " " + " ".join(badge(f"{n} {s}", s) for s, n in sev.items()))
    cells = "".join(cell_detail(run, i, c, prefix) for i, c in enumerate(vr.cells))
    return (f'<h2>Validation: {e(run.label)}</h2>{head}<p class="summary">{summary}</p>'
            f'<h3>Matrix</h3><p class="muted">Press a cell for its properties, tallies, per-case verdicts, '
            f'Tier 2 coverage and Tier 3 seeds.</p>{grid(doc, prefix)}{cells}'
            f'<h3>Incidents ({len(doc.incidents)})</h3>{incidents_table(doc.incidents, str(run.path.resolve()))}')
