"""`probatorium ci-tier pr|nightly|weekend`: the release ladder's tiers as one local command.

A tier is a wall-time budget and a plan of `validate` runs ("phases") that together judge every
property of the catalogue somewhere, then a coverage table saying, per property, in how many
cells it was judged and why it was not judged in the others. The CI workflows
(.github/workflows/matrix-*-tier.yml) run exactly this command, so a tier runs the same on a
laptop as on a runner.

The plans (docs/ci.md):
- ``pr`` (10 min): a *breadth* phase, every refapp once, each on an engine that rotates with the
  rotation number (refapp i on engine (i + r) mod E), in cells short enough to fit; and a *depth*
  phase of two rotating (refapp, engine) pairs in cells long enough for the leak judges
  (``LEAK_CELL_S``), one of them a refapp offering WebSocket and SSE, so I-MEM-1/I-FD-1/I-TASK-1
  and the ws/sse properties are judged in every PR run, on a different pair each day.
- ``nightly`` (1 h) and ``weekend`` (24 h): every refapp × engine cell, each at least
  ``LEAK_CELL_S`` long (the budget split evenly).

The wall-time model (``CELL_OVERHEAD_S`` per cell, ``START_S`` per phase) comes from measured
runs; the command records the real wall time of each phase beside the estimate.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UsageError

#: The leak judges need a 15 s warm-up and at least 8 full buckets of 5 s (validate/resources.py):
#: a 60 s cell gives them 9 (and the nightly tier fits 48 such cells into its hour).
LEAK_CELL_S = 60.0
#: The PR tier's plan fills this share of its budget: the rest absorbs what the model does not
#: see (a busy machine, a slow engine). The long tiers plan with 2 % slack.
PLAN_SHARE = 0.90
#: Start, ready probe, settle, judge and stop of one cell, beyond its budget (measured: a 40-cell
#: matrix of 15 s cells took 774 s of wall time, ~4.4 s a cell; the PR tier on a busy 2-core
#: machine took 8-50 s over each 42 s cell, daphne's the longest, 16 s on average).
CELL_OVERHEAD_S = 12.0
#: One `validate` process: imports, plan checks, backing services once per run.
START_S = 15.0
#: The breadth cells of the PR tier stay within these bounds (below: nothing but Tier 1 has time).
BREADTH_MIN_S, BREADTH_MAX_S = 20.0, 60.0


@dataclass(frozen=True)
class TierDef:
    name: str
    budget_s: float
    summary: str
    every_cell: bool  # nightly/weekend: the whole matrix; pr: breadth + depth
    share: float = PLAN_SHARE  # of the budget the plan fills


TIERS: dict[str, TierDef] = {
    "pr": TierDef("pr", 600.0, "every refapp once on a rotating engine, plus two rotating cells long enough "
                  "for the leak and stream judges", every_cell=False),
    "nightly": TierDef("nightly", 3600.0, "every refapp × engine cell, each long enough for the leak judges",
                       every_cell=True, share=0.98),
    "weekend": TierDef("weekend", 86400.0, "every refapp × engine cell with the 24 h budget split evenly",
                       every_cell=True, share=0.98),
}


@dataclass
class Phase:
    """One `validate --cells …` run of a tier."""

    name: str
    cells: list[tuple[str, str]]
    cell_s: float
    why: str
    run_dir: str = ""
    exit_code: int | None = None
    wall_s: float = 0.0

    def estimate_s(self) -> float:
        return START_S + len(self.cells) * (self.cell_s + CELL_OVERHEAD_S)

    def argv(self, out: Path, seed: int, python: str = sys.executable) -> list[str]:
        cells = ",".join(f"{r}:{e}" for r, e in self.cells)
        return [python, "-m", "probatorium.cli", "validate", "--cells", cells,
                "--duration", f"{self.cell_s * len(self.cells):.0f}s", "--seed", f"{seed:#x}",
                "--out", str(out), "--force"]


@dataclass
class TierPlan:
    tier: str
    budget_s: float
    rotation: int
    phases: list[Phase] = field(default_factory=list)

    def estimate_s(self) -> float:
        return sum(p.estimate_s() for p in self.phases)


def default_rotation(today: dt.date | None = None) -> int:
    """The day number (UTC): consecutive days judge leaks on different (refapp, engine) pairs."""
    return (today or dt.datetime.now(dt.timezone.utc).date()).toordinal()


def plan_tier(tier: str, refapps: list[str], engines: list[str], *, budget_s: float | None = None,
              rotation: int = 0, streaming: set[str] = frozenset(), leak_cell_s: float = LEAK_CELL_S) -> TierPlan:
    """The phases of `tier` over `refapps` × `engines` (`streaming`: the refapps with ws + sse)."""
    if tier not in TIERS:
        raise UsageError(f"unknown tier {tier!r}: choose {', '.join(TIERS)}")
    if not refapps or not engines:
        raise UsageError("a tier needs at least one refapp and one engine")
    spec = TIERS[tier]
    budget = spec.budget_s if budget_s is None else budget_s
    plan = TierPlan(tier, budget, rotation)
    budget *= spec.share
    if spec.every_cell:
        cells = [(r, e) for r in refapps for e in engines]
        cell_s = (budget - START_S) / len(cells) - CELL_OVERHEAD_S
        _need(cell_s >= leak_cell_s, tier, plan.budget_s,
              (START_S + len(cells) * (leak_cell_s + CELL_OVERHEAD_S)) / spec.share,
              f"{len(cells)} cells of at least {leak_cell_s:.0f}s")
        plan.phases.append(Phase("matrix", cells, math.floor(cell_s * 10) / 10, spec.summary))
        return plan
    depth = _depth_cells(refapps, engines, rotation, streaming)
    depth_phase = Phase("depth", depth, leak_cell_s, "long cells: leak judges (I-MEM-1, I-FD-1, I-TASK-1) and "
                        "the ws/sse properties on rotating pairs")
    breadth = [(r, engines[(i + rotation) % len(engines)]) for i, r in enumerate(refapps)]
    breadth = [c for c in breadth if c not in depth]
    left = budget - depth_phase.estimate_s() - (START_S if breadth else 0)
    cell_s = min(BREADTH_MAX_S, left / len(breadth) - CELL_OVERHEAD_S) if breadth else BREADTH_MIN_S
    need = depth_phase.estimate_s() + START_S + len(breadth) * (BREADTH_MIN_S + CELL_OVERHEAD_S)
    _need(cell_s >= BREADTH_MIN_S, tier, plan.budget_s, need / spec.share,
          f"{len(depth)} depth cells of {leak_cell_s:.0f}s and {len(breadth)} breadth cells of "
          f"{BREADTH_MIN_S:.0f}s")
    if breadth:
        plan.phases.append(Phase("breadth", breadth, math.floor(cell_s * 10) / 10,
                                 "every refapp once, on the engine the rotation gives it"))
    plan.phases.append(depth_phase)
    return plan


def _need(ok: bool, tier: str, budget: float, need: float, what: str) -> None:
    if not ok:
        raise UsageError(f"a {budget:.0f}s budget is too small for the {tier} tier: it needs about "
                         f"{need:.0f}s ({what}); give a larger --budget")


def _depth_cells(refapps: list[str], engines: list[str], rotation: int, streaming: set[str]) -> list[tuple[str, str]]:
    """Two rotating pairs: a refapp with WebSocket + SSE (when there is one), and another refapp."""
    streams = [r for r in refapps if r in streaming]
    first = streams[rotation % len(streams)] if streams else refapps[rotation % len(refapps)]
    cells = [(first, engines[rotation % len(engines)])]
    others = [r for r in refapps if r != first]
    if others:
        cells.append((others[rotation % len(others)], engines[(rotation + 1) % len(engines)]))
    return cells


def streaming_refapps(refapps: list[str]) -> set[str]:
    """The refapps whose OpenAPI document declares the ws and sse paths validate drives (/ws, /events)."""
    from ..targets.refapps import refapp_dir
    from .openapi import load_operations

    out = set()
    for slug in refapps:
        paths = {op.path for op in load_operations(refapp_dir(slug) / "openapi.yaml")}
        if {"/ws", "/events"} <= paths:
            out.add(slug)
    return out


# ---------------------------------------------------------------------------------------------
# Running a plan


def run_plan(plan: TierPlan, tier_dir: Path, seed: int, say=print, env: dict | None = None,
             extra: list[str] = ()) -> None:
    """Run the phases one after another, each bounded (its estimate × 1.5 + 120 s, then SIGTERM,
    then SIGKILL); a phase that fails to start or overruns still leaves the others to run."""
    for phase in plan.phases:
        out = tier_dir / phase.name
        phase.run_dir = str(out)
        argv = phase.argv(out, seed) + list(extra)
        say(f"ci-tier {plan.tier}: phase {phase.name}: {len(phase.cells)} cell(s) × {phase.cell_s:.0f}s "
            f"(estimate {phase.estimate_s():.0f}s)")
        t0 = time.monotonic()
        phase.exit_code = _run_bounded(argv, phase.estimate_s() * 1.5 + 120.0, env)
        phase.wall_s = round(time.monotonic() - t0, 1)
        say(f"ci-tier {plan.tier}: phase {phase.name}: exit {phase.exit_code} after {phase.wall_s:.0f}s")


def _run_bounded(argv: list[str], limit_s: float, env: dict | None) -> int:
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})})
    try:
        return proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the validate run writes its partial document
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 2
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        raise


# ---------------------------------------------------------------------------------------------
# Coverage


@dataclass
class Coverage:
    """One property across the tier's cells."""

    predicate: str
    judged: int = 0
    failed: int = 0
    not_judged: int = 0
    not_applicable: int = 0
    reasons: Counter = field(default_factory=Counter)

    def row(self) -> dict:
        return {"predicate": self.predicate, "judged": self.judged, "failed": self.failed,
                "not_judged": self.not_judged, "not_applicable": self.not_applicable,
                "reasons": dict(self.reasons.most_common())}


def coverage(docs: list[dict], predicates: list[str]) -> list[Coverage]:
    """Per predicate: cells where it was judged (passed/failed), not judged (with the reasons), or
    did not apply (absent from the cell's properties). Cells that never started count as not
    judged with the cell's own reason."""
    rows = {p: Coverage(p) for p in predicates}
    for doc in docs:
        for cell in (doc.get("validation_results") or {}).get("cells") or []:
            props = cell.get("properties") or {}
            for pred, row in rows.items():
                res = props.get(pred)
                if res is None:
                    if cell.get("status") in ("error", "skipped") and not props:
                        row.not_judged += 1
                        row.reasons[f"cell {cell.get('status')}: {cell.get('reason') or '-'}"] += 1
                    else:
                        row.not_applicable += 1
                elif res.get("status") in ("passed", "failed"):
                    row.judged += 1
                    row.failed += res.get("status") == "failed"
                else:
                    row.not_judged += 1
                    row.reasons[res.get("reason") or "no reason recorded"] += 1
    return list(rows.values())


def holes(rows: list[Coverage]) -> list[Coverage]:
    """The properties the tier claims but judged in no cell."""
    return [r for r in rows if r.judged == 0]


def load_docs(plan: TierPlan) -> tuple[list[dict], list[str]]:
    """The phases' documents, and one line per phase whose document is missing or unreadable."""
    docs, problems = [], []
    for phase in plan.phases:
        path = Path(phase.run_dir) / "validate-results.json"
        try:
            docs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            problems.append(f"phase {phase.name}: no readable {path} ({e.__class__.__name__}: {e})")
    return docs, problems


def tier_exit_code(plan: TierPlan, rows: list[Coverage], problems: list[str]) -> int:
    """2 when a phase could not run (infrastructure), else 1 when a gate failed or a property was
    judged nowhere, else 0."""
    codes = [p.exit_code for p in plan.phases]
    if problems or any(c not in (0, 1) for c in codes):
        return 2
    return 1 if any(c == 1 for c in codes) or holes(rows) else 0


def summary(plan: TierPlan, rows: list[Coverage], problems: list[str], code: int, wall_s: float) -> dict:
    """tier.json: the plan, each phase's run folder / exit / wall time, the coverage and the holes."""
    return {"tier": plan.tier, "budget_s": plan.budget_s, "rotation": plan.rotation,
            "estimate_s": round(plan.estimate_s(), 1), "wall_s": round(wall_s, 1), "exit_code": code,
            "phases": [asdict(p) | {"estimate_s": round(p.estimate_s(), 1)} for p in plan.phases],
            "coverage": [r.row() for r in rows], "holes": [r.predicate for r in holes(rows)],
            "problems": problems}
