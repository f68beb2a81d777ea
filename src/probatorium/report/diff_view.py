"""The validate-diff view: its severity summary, every divergence, what was not compared, notes."""

from __future__ import annotations

from probatorium.report.markup import badge, e, kv, table
from probatorium.report.sources import Run
from probatorium.validate.diff import _side_text


def sides(f: dict) -> tuple[str, str]:
    """The bad and the good side of a finding, as diff.txt writes them (one rule: validate.diff's)."""
    bad, good = f.get("bad") or [], f.get("good") or []
    if str(f.get("kind", "")).startswith("case") and not bad and not good:
        bad = sorted(f.get("verdicts") or {})  # same-rank verdicts: show them all
    return (", ".join(_side_text(x, f) for x in bad) or "-", ", ".join(_side_text(x, f) for x in good) or "-")


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
                     e(f.get("arch")), *map(e, sides(f))])
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
