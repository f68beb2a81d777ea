"""Trends across runs: a history file of one JSON summary per run (JSON lines), and its charts.

A line is ``{"kind", "run", "started_at", "host", "version", ...}`` plus, for validate runs,
``cells`` (status → count) and ``findings`` (HIGH/MED/LOW, not accepted); for bench runs
``rps`` ("competitor/cell" → saturation rps); for a validate-diff ``findings``. A run already
in the file (same kind, run path and start time) is not appended twice.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from probatorium.errors import UsageError
from probatorium.report import svg
from probatorium.report.markup import table
from probatorium.report.sources import Run
from probatorium.report.validate_view import severity_counts


SEVERITY_COLOURS = {"HIGH": "#C53030", "MED": "#DD6B20", "LOW": "#718096"}


def summarize(run: Run) -> dict[str, Any]:
    """One history line for ``run``."""
    base = {"kind": run.kind, "run": str(run.path.resolve())}
    if run.kind == "validate":
        doc = run.document
        return base | {"started_at": doc.validation_results.started_at, "host": doc.host_arch_pair,
                       "version": doc.probatorium_version,
                       "cells": dict(Counter(c.status for c in doc.validation_results.cells)),
                       "findings": severity_counts(doc.incidents)}
    if run.kind == "bench":
        doc = run.document
        return base | {"started_at": doc.started_at, "host": doc.host.hostname, "version": doc.version,
                       "rps": {f"{c.competitor}/{c.cell}": c.saturation.rps
                               for c in doc.cells if c.status == "ok" and c.saturation is not None}}
    d = run.document
    return base | {"started_at": d.get("generated_at", ""), "host": "", "version": "",
                   "findings": {s: int((d.get("summary") or {}).get(s, 0)) for s in ("HIGH", "MED", "LOW")}}


def _key(line: dict) -> tuple:
    return line.get("kind"), line.get("run"), line.get("started_at")


def load(path: Path) -> list[dict[str, Any]]:
    """The history's lines ([] when the file does not exist yet); a bad line is a one-line error."""
    if not path.exists():
        return []
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read history: {' '.join(str(exc).split())}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{n}: not a JSON history line: {exc.msg}") from None
        if not isinstance(item, dict) or "kind" not in item:
            raise UsageError(f"{path}:{n}: not a history line (an object with a kind)")
        out.append(item)
    return out


def append(path: Path, runs: list[Run]) -> list[dict[str, Any]]:
    """Append the summaries of ``runs`` not yet in the history; return the whole history."""
    lines = load(path)
    seen = {_key(x) for x in lines}
    new = [s for s in (summarize(r) for r in runs) if _key(s) not in seen]
    if new:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(s, sort_keys=True) + "\n" for s in new)
        except OSError as exc:
            raise UsageError(f"{path}: cannot append to the history: {' '.join(str(exc).split())}") from None
    return lines + new


def render(lines: list[dict[str, Any]]) -> str:
    """The trends view: findings per validate run and diff, saturation rps per bench series."""
    lines = sorted(lines, key=lambda x: str(x.get("started_at", "")))
    out = []
    for kind, title in (("validate", "Validation findings per run"), ("validate-diff", "validate-diff divergences")):
        runs = [x for x in lines if x.get("kind") == kind]
        if runs:
            series = {s: [(i, (x.get("findings") or {}).get(s, 0)) for i, x in enumerate(runs)]
                      for s in ("HIGH", "MED", "LOW")}
            out.append(svg.line_chart(title, series, "run (oldest → newest)", "findings",
                                      xlabels={float(i): str(i + 1) for i in range(len(runs))},
                                      colours=SEVERITY_COLOURS))
    bench = [x for x in lines if x.get("kind") == "bench"]
    if bench:
        names = sorted({k for x in bench for k in (x.get("rps") or {})})
        series = {n: [(i, x["rps"][n]) for i, x in enumerate(bench) if n in (x.get("rps") or {})] for n in names}
        out.append(svg.line_chart("Bench saturation throughput per run", series, "run (oldest → newest)",
                                  "requests/s", xlabels={float(i): str(i + 1) for i in range(len(bench))}))
    rows = [[x.get("kind", ""), x.get("started_at", ""), x.get("host", ""), x.get("version", ""),
             json.dumps(x.get("findings") or x.get("cells") or {}), x.get("run", "")] for x in lines]
    if not lines:
        return '<h2>Trends</h2><p class="muted">the history is empty</p>'
    return (f"<h2>Trends ({len(lines)} runs in the history)</h2>" + "".join(out)
            + table(("kind", "started", "host", "version", "findings / cells", "run"), rows))
