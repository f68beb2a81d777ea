"""Command functions of the bench tier (the typer wiring lives in probatorium.cli).

Flags default to the seed README's environment knobs: BENCH_TARGET,
BENCH_COMPETITORS, BENCH_DURATION, BENCH_WARMUP, BENCH_RUNS, BENCH_CELLS,
CELERIS_VERSION (version label), BASELINE_VERSION, REGRESSION_THRESHOLD;
PROBATORIUM_RESULTS is the results root. BENCH_TARGET takes both of its
meanings: server host names (``server-a``, ``all``: the seed's, for
``--driver netns``) and competitor names (the competitor under test, measured
first); the two sets of names never overlap.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from probatorium.bench.cells import select_cells
from probatorium.bench.competitors import select_competitors
from probatorium.bench.ratesearch import DEFAULT_SLOS_MS
from probatorium.bench.runner import BenchOptions, broken_thresholds, format_table, parse_cpus, run_bench
from probatorium.bench.since import bench_since, since_result
from probatorium.errors import ProbatoriumError, UsageError, error_line
from probatorium.hosts.netns import SERVER_HOSTS
from probatorium.jsonsummary import print_json
from probatorium.progress import make_progress
from probatorium.loadgen.thresholds import parse_thresholds

DEFAULT_DURATION = 2.0
DEFAULT_WARMUP = 1.0
DEFAULT_RUNS = 1


def _seconds(text: str | float | None, default: float) -> float:
    if text is None or text == "":
        return default
    if isinstance(text, (int, float)):
        return float(text)
    t = text.strip().lower()
    try:
        if t.endswith("ms"):
            return float(t[:-2]) / 1000
        if t.endswith("m"):
            return float(t[:-1]) * 60
        return float(t.rstrip("s"))
    except ValueError:
        raise UsageError(f"bad duration {text!r} (e.g. 15s, 2m, 500ms)") from None


def results_root() -> Path:
    return Path(os.environ.get("PROBATORIUM_RESULTS", "results"))


def split_bench_target(value: str | None) -> tuple[str | None, list[str]]:
    """BENCH_TARGET's words: (the server hosts it names, csv or None; the competitors it names)."""
    words = [w.strip() for w in (value or "").split(",") if w.strip()]
    hosts = [w for w in words if w in SERVER_HOSTS or w == "all"]
    return (",".join(hosts) or None), [w for w in words if w not in hosts]


def bench_target_hosts() -> str | None:
    """The server hosts BENCH_TARGET names (the seed's meaning), or None."""
    return split_bench_target(os.environ.get("BENCH_TARGET"))[0]


def resolve_bench(competitors: str | None = None, cells: str | None = None, runs: int | None = None,
                  duration: float | str | None = None, warmup: float | str | None = None,
                  out: Path | None = None, server_cpus: str | list[int] | None = None,
                  client_cpus: str | list[int] | None = None, max_probes: int = 5,
                  thresholds: list[str] | tuple[str, ...] = ()) -> tuple[list, list, BenchOptions]:
    """(competitors, cells, options) from the flags, each falling back to its environment knob."""
    judged = parse_thresholds(thresholds)
    comp_spec = competitors or os.environ.get("BENCH_COMPETITORS") or "default"
    # BENCH_TARGET naming a competitor: the competitor under test, always measured (first) besides the others
    comps = select_competitors(comp_spec)
    for target in reversed(split_bench_target(os.environ.get("BENCH_TARGET"))[1]):
        if target not in [c.name for c in comps]:
            comps = select_competitors(target) + comps
    cell_list = select_cells(cells or os.environ.get("BENCH_CELLS") or "default")
    n_runs = runs if runs is not None else int(os.environ.get("BENCH_RUNS") or DEFAULT_RUNS)
    dur = _seconds(duration if duration is not None else os.environ.get("BENCH_DURATION"), DEFAULT_DURATION)
    wu = _seconds(warmup if warmup is not None else os.environ.get("BENCH_WARMUP"), DEFAULT_WARMUP)
    if n_runs < 1 or dur <= 0 or wu < 0:
        raise UsageError("bench: runs >= 1, duration > 0, warmup >= 0")
    s_cpus = parse_cpus(server_cpus) if isinstance(server_cpus, str) else server_cpus
    c_cpus = parse_cpus(client_cpus) if isinstance(client_cpus, str) else client_cpus
    version = os.environ.get("PROBATORIUM_TARGET_VERSION") or os.environ.get("CELERIS_VERSION") or "dev"
    opts = BenchOptions(runs=n_runs, duration=dur, warmup=wu, out_dir=out, server_cpus=s_cpus,
                        client_cpus=c_cpus, slos=DEFAULT_SLOS_MS, results_root=results_root(),
                        version=version, max_probes=max_probes, thresholds=judged)
    return comps, cell_list, opts


def bench_command(competitors: str | None = None, cells: str | None = None, runs: int | None = None,
                  duration: float | str | None = None, warmup: float | str | None = None,
                  out: Path | None = None, server_cpus: str | list[int] | None = None,
                  client_cpus: str | list[int] | None = None, max_probes: int = 5,
                  thresholds: list[str] | tuple[str, ...] = (), json_out: bool = False, quiet: bool = False) -> int:
    """`probatorium bench`: 0 when every applicable cell measured ok, 1 when a cell was
    invalid or failed or a threshold broke on a cell, 2 on a usage/infrastructure error.
    Prints the table and the results path. ``thresholds`` (k6-style, ``"p99<50ms"``) are
    judged per competitor x cell on its saturation result and recorded in results.json.
    ``json_out``: the summary object (docs/json.md) instead of the table; ``quiet``: no progress."""
    progress = make_progress("bench", quiet)
    try:
        comps, cell_list, opts = resolve_bench(competitors, cells, runs, duration, warmup, out, server_cpus,
                                               client_cpus, max_probes, thresholds)
        with progress:
            doc = run_bench(comps, cell_list, opts, echo=progress, progress=progress)
    except ProbatoriumError as exc:
        print(error_line(f"bench: {exc}"), file=sys.stderr)
        return 2
    bad = [c for c in doc.cells if c.status in ("invalid", "failed")]
    code = 1 if bad or broken_thresholds(doc) else 0
    if json_out:
        return print_json("bench", code, bench_json(doc))
    print(format_table(doc))
    print(f"\nresults: {doc.path}")
    return code


def bench_json(doc) -> dict:
    """`bench --json`: the results path and one entry per competitor x cell (what the table shows)."""
    cells = []
    for c in doc.cells:
        sat = c.saturation
        lat = sat.latency_us if sat is not None else {}
        cells.append({**({"host": c.host} if c.host else {}),
                      "competitor": c.competitor, "cell": c.cell, "status": c.status, "reason": c.reason,
                      "saturation_rps": sat.rps if sat is not None else None,
                      "client_bound": sat.client_bound if sat is not None else None,
                      "p50_ms": lat["p50"] / 1000 if lat else None, "p99_ms": lat["p99"] / 1000 if lat else None,
                      "latency_at_slo": c.latency_at_slo, "thresholds": c.thresholds})
    broken = [{**({"host": c.host} if c.host else {}), "competitor": c.competitor, "cell": c.cell,
               "threshold": v["threshold"], "detail": v["detail"]} for c, v in broken_thresholds(doc)]
    return {"results": doc.path, "version": doc.version, "partial": doc.partial, "cells": cells,
            "thresholds_broken": broken}


def bench_since_command(baseline: str | None = None, threshold: float | None = None,
                        results_dir: Path | None = None, json_out: bool = False) -> int:
    """`probatorium bench-since --baseline VERSION --threshold 0.05`: exit 0/1/2, table on stdout
    (``json_out``: the summary object with the regressions, docs/json.md)."""
    base = baseline or os.environ.get("BASELINE_VERSION")
    if not base:
        print(error_line("bench-since: --baseline VERSION (or BASELINE_VERSION) is required"), file=sys.stderr)
        return 2
    try:
        thr = threshold if threshold is not None else float(os.environ.get("REGRESSION_THRESHOLD") or 0.05)
    except ValueError:
        print(error_line(f"bench-since: REGRESSION_THRESHOLD must be a number, got "
                         f"{os.environ.get('REGRESSION_THRESHOLD')!r}"), file=sys.stderr)
        return 2
    root = results_dir if results_dir is not None else results_root()
    if not root.is_dir():
        print(error_line(f"bench-since: results folder {root} does not exist (--results-dir or PROBATORIUM_RESULTS)"),
              file=sys.stderr)
        return 2
    if json_out:
        code, fields = since_result(root, base, thr)
        if code == 2:
            print(error_line(fields["error"]), file=sys.stderr)
            return 2
        return print_json("bench-since", code, fields)
    code, text = bench_since(root, base, thr)
    print(error_line(text) if code == 2 else text, file=sys.stderr if code == 2 else sys.stdout)
    return code


def bench_list() -> str:
    """`probatorium bench --list`: the competitors and cells `--competitors` / `--cells` accept."""
    from probatorium.bench.cells import CELLS, DEFAULT_CELLS
    from probatorium.bench.competitors import DEFAULT_COMPETITORS, REGISTRY

    width = max(len(n) for n in (*REGISTRY, *CELLS))
    lines = ["competitors (--competitors all | python-only | default | a,b; * = default):"]
    for c in REGISTRY.values():
        mark = "*" if c.name in DEFAULT_COMPETITORS else " "
        lines.append(f"  {mark} {c.name:<{width}}  {c.group:<8}  {c.description}")
    lines.append("cells (--cells all | default | a,b; * = default):")
    for cell in CELLS.values():
        mark = "*" if cell.name in DEFAULT_CELLS else " "
        what = cell.description or f"{cell.method} {cell.path}"
        lines.append(f"  {mark} {cell.name:<{width}}  {cell.kind:<8}  {what}")
    return "\n".join(lines)


def bench_list_json() -> dict:
    """`bench --list --json`: the competitors and cells, with which are the defaults."""
    from probatorium.bench.cells import CELLS, DEFAULT_CELLS
    from probatorium.bench.competitors import DEFAULT_COMPETITORS, REGISTRY

    return {"competitors": [{"name": c.name, "group": c.group, "description": c.description,
                             "default": c.name in DEFAULT_COMPETITORS} for c in REGISTRY.values()],
            "cells": [{"name": c.name, "kind": c.kind, "description": c.description or f"{c.method} {c.path}",
                       "default": c.name in DEFAULT_CELLS} for c in CELLS.values()]}
