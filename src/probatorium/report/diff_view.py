"""The validate-diff view: its severity summary, every divergence, what was not compared, notes."""

from __future__ import annotations

from typing import Any

from probatorium.report.markup import badge, e, kv, table
from probatorium.report.sources import Run


def _side(entry: Any, finding: dict) -> str:
    if isinstance(entry, str):  # per-case findings name engines (or arches), verdicts beside
        return f"{entry}={finding.get('verdicts', {}).get(entry, '?')}"
    counters = entry.get("counters") or {}
    value = sum(v for v in counters.values() if isinstance(v, int) and v > 0) or entry.get("property") or 0
    return f"{entry.get('label', '?')}={value}"


def render(run: Run, prefix: str) -> str:
    """The whole diff view of one validate-diff output folder."""
    d: dict = run.document
    summary = d.get("summary") or {}
    docs = [[x.get("host_arch_pair", ""), x.get("kind", ""), x.get("cells", ""), x.get("started_at", ""),
             x.get("path", "")] for x in d.get("documents") or []]
    rows = []
    for f in d.get("findings") or []:
        what = f.get("predicate") or f.get("case") or ""
        rows.append([badge(str(f.get("severity", ""))), e(f.get("kind")), e(what),
                     e(f.get("slice", "") or f.get("counter", "")), e(f.get("clause", "")), e(f.get("refapp")),
                     e(f.get("arch")), e(", ".join(_side(b, f) for b in f.get("bad") or [])),
                     e(", ".join(_side(g, f) for g in f.get("good") or []))])
    filters = "".join(f'<label><input type="checkbox" class="sevfilter" data-sev="{s}" checked> {s} '
                      f'({summary.get(s, 0)})</label> ' for s in ("HIGH", "MED", "LOW"))
    nc = [[x.get("kind", ""), x.get("refapp", ""), x.get("engine", ""), x.get("arch", ""), x.get("reason", "")]
          for x in d.get("not_compared") or []]
    notes = "".join(f"<li>{e(n)}</li>" for n in d.get("notes") or [])
    return (f'<h2>validate-diff: {e(run.label)}</h2>'
            + kv([("folder", str(run.path)), ("generated", d.get("generated_at", ""))])
            + f'<p class="summary">{" ".join(badge(f"{summary.get(s, 0)} {s}", s) for s in ("HIGH", "MED", "LOW"))}</p>'
            f'<h3>Documents compared</h3>{table(("host", "kind", "cells", "started", "path"), docs)}'
            f'<h3>Divergences ({len(rows)})</h3><p class="filters">{filters}</p>'
            + table(("severity", "kind", "predicate / case", "slice / counter", "clause", "refapp", "arch", "bad", "good"),
                    rows, "diff", raw=True)
            + f'<h3>Not compared ({len(nc)})</h3>{table(("kind", "refapp", "engine", "arch", "reason"), nc)}'
            f'<h3>Notes</h3><ul>{notes}</ul>')
