"""bench-since: compare the newest bench run with the newest run of a baseline version.

Compared per (competitor, cell), and per server host for a multi-host roll-up
(``bench --driver netns``: its cells carry ``host``): the saturation rps and the latency_at_slo
rate of every SLO the baseline measured. A drop beyond ``threshold`` (a
fraction: 0.05 = 5 %) in any of them, or a cell the baseline measured (status
ok) that the newest run no longer measures, is a regression: exit 1 with the
table of regressions. Otherwise exit 0. No baseline or no newer run: exit 2.
"""

from __future__ import annotations

import re
from pathlib import Path

from probatorium.bench.runner import DOCUMENT_NAME
from probatorium.results.schema import BenchCell, BenchDocument

_FOLDER = re.compile(r"^(\d{8}T\d{6}Z)-bench-(.+?)(?:-(\d+))?$")


def load_bench_document(path: Path) -> BenchDocument:
    """A bench results.json, read through its schema model (ValueError when it is not one)."""
    doc = BenchDocument.model_validate_json(Path(path).read_bytes())
    doc.path = str(path)
    return doc


def bench_runs(results_root: Path) -> list[tuple[str, str, Path]]:
    """(timestamp, version, document path) of every finished bench run, oldest first."""
    out = []
    root = Path(results_root)
    if not root.is_dir():
        return []
    for folder in root.iterdir():
        m = _FOLDER.match(folder.name)
        doc = folder / DOCUMENT_NAME
        if not m or not doc.is_file():
            continue
        try:
            data = load_bench_document(doc)
        except (OSError, ValueError):
            continue
        if data.partial:
            continue
        version = data.version or m.group(2)
        out.append((m.group(1) + "-" + (m.group(3) or "1").zfill(4), version, doc))
    return sorted(out)


def _metrics(cell: BenchCell) -> dict[str, float | None]:
    out: dict[str, float | None] = {"saturation_rps": cell.saturation.rps if cell.saturation else None}
    for slo, rps in (cell.latency_at_slo or {}).items():
        out[f"latency_at_slo@{slo}ms"] = rps
    return out


def compare(baseline: BenchDocument, current: BenchDocument, threshold: float) -> list[dict]:
    """Regressions of `current` against `baseline` (pure)."""
    now = {(c.host, c.competitor, c.cell): c for c in current.cells}
    regressions = []
    for base in baseline.cells:
        if base.status != "ok":
            continue
        key = (base.host, base.competitor, base.cell)
        where = {**({"host": base.host} if base.host else {}), "competitor": base.competitor, "cell": base.cell}
        cur = now.get(key)
        if cur is None or cur.status != "ok":
            regressions.append({**where, "metric": "cell",
                                "baseline": "ok", "current": "missing" if cur is None else cur.status,
                                "change": None})
            continue
        cur_m = _metrics(cur)
        for metric, old in _metrics(base).items():
            if not old:
                continue
            new = cur_m.get(metric) or 0.0
            change = (new - old) / old
            if change < -threshold:
                regressions.append({**where, "metric": metric, "baseline": old, "current": new,
                                    "change": change})
    return regressions


def format_regressions(regs: list[dict]) -> str:
    hosts = any(r.get("host") for r in regs)
    rows = [(["host"] if hosts else []) + ["competitor", "cell", "metric", "baseline", "current", "change"]]
    for r in regs:
        fmt = (lambda v: f"{v:,.0f}" if isinstance(v, (int, float)) else str(v))
        rows.append([*([r.get("host") or "-"] if hosts else []), r["competitor"], r["cell"], r["metric"],
                     fmt(r["baseline"]), fmt(r["current"]),
                     "-" if r["change"] is None else f"{r['change'] * 100:+.1f}%"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def since_result(results_root: Path, baseline_version: str, threshold: float = 0.05) -> tuple[int, dict]:
    """(exit code, what was compared): 1 with regressions, 0 without, 2 (with ``error``) when nothing to compare."""
    runs = bench_runs(results_root)
    if not runs:
        return 2, {"error": f"bench-since: no finished bench run under {results_root}"}
    newest = runs[-1]
    baselines = [r for r in runs if r[1] == baseline_version and r[2] != newest[2]]
    if not baselines:
        return 2, {"error": f"bench-since: no bench run of baseline version {baseline_version!r} under "
                            f"{results_root} (other than the newest run)"}
    base = baselines[-1]
    regs = compare(load_bench_document(base[2]), load_bench_document(newest[2]), threshold)
    run = lambda r: {"run": r[2].parent.name, "version": r[1], "results": str(r[2])}  # noqa: E731
    return (1 if regs else 0), {"current": run(newest), "baseline": run(base), "threshold": threshold,
                                "regressions": regs}


def bench_since(results_root: Path, baseline_version: str, threshold: float = 0.05) -> tuple[int, str]:
    """(exit code, text): 1 with the regressions table, 0 when none, 2 when nothing to compare."""
    code, r = since_result(results_root, baseline_version, threshold)
    if code == 2:
        return 2, r["error"]
    cur, base, regs = r["current"], r["baseline"], r["regressions"]
    head = (f"bench-since: {cur['run']} (version {cur['version']}) vs baseline "
            f"{base['run']} (version {base['version']}), threshold {threshold * 100:g}%")
    if regs:
        return 1, f"{head}\n{len(regs)} regression(s):\n{format_regressions(regs)}"
    return 0, f"{head}\nno regression"
