"""``probatorium soak``: a long validation as a series of checkpointed rounds, resumable after a kill.

A soak of D seconds is a series of rounds; each round is one ``probatorium validate`` run of
the target(s) lasting the checkpoint interval (the last one shortened to what is left), run as
a child process into ``<soak>/round-NNN/`` (its own schema 5.1 document, checkpointed by
validate itself). After each round, and every few seconds while one runs (a heartbeat),
``<soak>/soak.json`` (the soak's state) and ``<soak>/validate-results.json`` (schema 5.1: the
cells of every round, each incident once) are rewritten atomically.

``--resume SOAK_DIR`` reads soak.json, keeps the finished rounds, keeps what the killed round
had checkpointed (its cells and incidents; the time it ran counts, up to its last heartbeat or
checkpoint) and runs new rounds for the time left. Incidents are keyed by their dossier path
under the soak folder, so none is lost or counted twice.

Soak time: every round has a ``soak_offset_s`` (soak seconds spent before it started); a wall
clock moment inside a round maps to ``soak_offset_s + (moment - round start)``. The hourly
summary rows and the longest clean stretch are in soak time, so a resume gap does not count.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ProbatoriumError, UsageError
from ..results.schema import (Cell, Incident, ValidateDocument, ValidationResults, host_arch_pair,
                              utc_now_iso)
from ..results.store import DOCUMENT_NAME, load_document, parse_iso, sanitize_name, write_json_atomic
from ..seeds import derive_seed

SOAK_SCHEMA = "soak/1"
STATE_NAME = "soak.json"
#: A round shorter than this measures too little: the time left below it ends the soak.
MIN_ROUND_S = 5.0
#: soak.json's heartbeat while a round runs (the time a SIGKILL can lose, at most).
HEARTBEAT_S = 1.0
#: Flags soak sets on each round itself: given after `soak` they are refused.
RESERVED = ("--duration", "-d", "--out", "--force", "--results-dir", "--json", "--seed", "--junit",
            "--sarif", "--baseline-update")
LEAK_PREDICATES = ("I-MEM-1", "I-FD-1", "I-TASK-1")


class SoakError(ProbatoriumError):
    """A soak that cannot go on (a round that wrote no document, a broken soak.json): exit 2."""


# ---------------------------------------------------------------------------------------------
# Time


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _between(a: str | None, b: str | None) -> float:
    start, end = parse_iso(a), parse_iso(b)
    return max(0.0, (end - start).total_seconds()) if start and end else 0.0


# ---------------------------------------------------------------------------------------------
# The state (soak.json)


def new_state(duration_s: float, checkpoint_s: float, seed: int, validate_args: Sequence[str],
              cells: Sequence[tuple[str, str]] | None = None) -> dict[str, Any]:
    """A new soak's state; ``cells`` (refapp, engine): --parallel's matrix cells, one child each."""
    if duration_s <= 0:
        raise UsageError("soak --duration must be positive")
    if checkpoint_s < MIN_ROUND_S:
        raise UsageError(f"--checkpoint-every must be at least {MIN_ROUND_S:.0f}s")
    return {"schema": SOAK_SCHEMA, "probatorium_version": __version__, "host_arch_pair": host_arch_pair(),
            "duration_s": float(duration_s), "checkpoint_every_s": float(checkpoint_s), "seed": f"{seed:#x}",
            "validate_args": list(validate_args), "parallel": bool(cells),
            "cells": [list(c) for c in cells or []], "started_at": utc_now_iso(),
            "finished_at": "", "finished": False, "resumes": 0, "spent_s": 0.0, "rounds": [],
            "summary": {}}


def load_state(soak_dir: Path) -> dict[str, Any]:
    path = soak_dir / STATE_NAME
    if not path.is_file():
        raise UsageError(f"--resume {soak_dir}: no {STATE_NAME} there (not a soak folder)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"--resume {soak_dir}: unreadable {STATE_NAME}: {' '.join(str(e).split())}") from None
    if not isinstance(state, dict) or state.get("schema") != SOAK_SCHEMA or not isinstance(state.get("rounds"), list):
        raise UsageError(f"--resume {soak_dir}: {STATE_NAME} is not a {SOAK_SCHEMA} soak state")
    return state


def spent_s(state: dict[str, Any]) -> float:
    """Soak seconds spent: the sum of every round's wall seconds (finished, killed or running);
    a round's start-up and settle count, the gap between a kill and its resume does not."""
    return round(sum(float(r.get("seconds") or 0.0) for r in state["rounds"]), 3)


def round_overhead_s(state: dict[str, Any]) -> float:
    """What a round takes beyond its validate budget (start-up, settle, judging): the median over
    the rounds that ran to their end (0 before the first)."""
    extra = sorted(max(0.0, float(r["seconds"]) - float(r["planned_s"]))
                   for r in state["rounds"] if r.get("status") == "done")
    if not extra:
        return 0.0
    mid = len(extra) // 2
    return extra[mid] if len(extra) % 2 else (extra[mid - 1] + extra[mid]) / 2


def next_round_s(state: dict[str, Any]) -> float:
    """The next round's validate budget: the checkpoint interval, the last one shortened to what is
    left less a round's overhead (so the soak ends near its duration); 0 when done."""
    left = float(state["duration_s"]) - spent_s(state)
    overhead = round_overhead_s(state)
    budget = max(MIN_ROUND_S, left - overhead)
    # one more round only when it ends nearer the asked duration than stopping now
    if left < MIN_ROUND_S or abs(left - budget - overhead) >= left:
        return 0.0
    return round(min(float(state["checkpoint_every_s"]), budget), 3)


def killed_round_seconds(rnd: dict[str, Any], doc_mtime: float | None) -> float:
    """The time a killed round ran: up to its last heartbeat or its document's last checkpoint,
    whichever is later, never more than a round may last (planned × 1.5 + 180 s)."""
    ends = [parse_iso(rnd.get("last_seen"))]
    if doc_mtime is not None:
        ends.append(datetime.fromtimestamp(doc_mtime, timezone.utc))
    start = parse_iso(rnd.get("started_at"))
    latest = max((e for e in ends if e is not None), default=None)
    if start is None or latest is None:
        return 0.0
    return round(min(max(0.0, (latest - start).total_seconds()), round_limit_s(float(rnd.get("planned_s") or 0.0))), 3)


def round_limit_s(planned_s: float) -> float:
    """The wall time a round may take (validate's start-up and settle included) before SIGTERM."""
    return planned_s * 1.5 + 180.0


def adopt_killed_rounds(state: dict[str, Any], soak_dir: Path) -> list[dict[str, Any]]:
    """On --resume: every round still marked running was killed; its time counts up to its last
    heartbeat/checkpoint and its partial document is kept as it is."""
    adopted = []
    for rnd in state["rounds"]:
        if rnd.get("status") != "running":
            continue
        docs = [soak_dir / v["folder"] / DOCUMENT_NAME for v in round_views(rnd)]
        mtimes = [d.stat().st_mtime for d in docs if d.is_file()]
        rnd["seconds"] = killed_round_seconds(rnd, max(mtimes) if mtimes else None)
        rnd["status"], rnd["exit_code"] = "killed", None
        adopted.append(rnd)
    state["spent_s"] = spent_s(state)
    return adopted


def check_resumable(state: dict[str, Any]) -> None:
    if state.get("finished"):
        raise UsageError("--resume: this soak already finished "
                         f"({state.get('spent_s', 0):.0f}s of {state.get('duration_s', 0):.0f}s)")


# ---------------------------------------------------------------------------------------------
# The combined document


def _prefixed(path: str, folder: str) -> str:
    return f"{folder}/{path}" if path else path


def round_views(rnd: dict[str, Any]) -> list[dict[str, Any]]:
    """A round as the validate run folders it holds: itself, or with --parallel one per cell
    (``parts``: ``round-NNN/part-KK-<refapp>-<engine>/``), each with the round's index and status."""
    parts = rnd.get("parts") or []
    return [{**rnd, "folder": f"{rnd['folder']}/{p}"} for p in parts] if parts else [rnd]


def round_document(soak_dir: Path, rnd: dict[str, Any]) -> ValidateDocument | None:
    file = soak_dir / rnd["folder"] / DOCUMENT_NAME
    if not file.is_file():
        return None
    try:
        return load_document(file)
    except UsageError:
        return None


def orphan_dossiers(soak_dir: Path, folder: str, seen: set[str]) -> list[Incident]:
    """Incidents of a killed round whose dossier was written but that no checkpoint recorded
    (dossier paths relative to the soak folder)."""
    out = []
    for file in sorted((soak_dir / folder).glob("cell-*/incidents/*/incident.json")):
        dossier = file.parent.relative_to(soak_dir).as_posix()
        if dossier in seen:
            continue
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
            # incident.json's "seed" is the cell's (an int), not a Tier 3 seed: not copied
            fields = {k: raw[k] for k in Incident.model_fields if k in raw and k != "seed"}
            inc = Incident.model_validate(fields)
        except (OSError, ValueError, TypeError):
            continue
        out.append(inc.model_copy(update={"cell": _prefixed(inc.cell, folder), "dossier": dossier}))
    return out


def _cell_names(name: str, incidents: Sequence[Incident]) -> tuple[str, str, str]:
    """(refapp, engine, arch) of a cell folder ``cell-NN-<refapp>-<engine>`` nobody checkpointed."""
    if incidents:
        return incidents[0].refapp, incidents[0].engine, incidents[0].arch
    from ..results.schema import normalize_arch
    from ..targets.engines import ENGINES

    rest = name.split("-", 2)[2] if name.count("-") >= 2 else name
    for engine in sorted(ENGINES, key=len, reverse=True):
        if rest.endswith("-" + engine):
            return rest[: -len(engine) - 1], engine, normalize_arch()
    refapp, _, engine = rest.rpartition("-")
    return refapp or rest, engine, normalize_arch()


def _killed_round_extras(soak_dir: Path, rnd: dict[str, Any], cells: list[Cell], seen: set[str]) -> list[Incident]:
    """What a killed round left on disk beyond its last checkpoint: dossiers no checkpoint listed
    (added to their cell) and cell folders it never checkpointed (a partial cell each)."""
    folder = rnd["folder"]
    orphans = orphan_dossiers(soak_dir, folder, seen)
    mine = {c.folder: c for c in cells if getattr(c, "round", None) == rnd["index"]}
    for cell_dir in sorted((soak_dir / folder).glob("cell-*")):
        key = f"{folder}/{cell_dir.name}"
        its = [i for i in orphans if i.cell == key]
        if key not in mine:
            refapp, engine, arch = _cell_names(cell_dir.name, its)
            high = sorted({i.predicate for i in its if i.severity == "HIGH"})
            c = Cell(refapp=refapp, engine=engine, arch=arch, status="failed" if high else "not_run",
                     reason=("HIGH: " + ", ".join(high) + "; " if high else "")
                     + "soak round killed before the cell's first checkpoint", started_at=rnd.get("started_at", ""),
                     finished_at=rnd.get("last_seen", ""), folder=key, partial=True)
            setattr(c, "round", rnd["index"])
            cells.append(c)
            mine[key] = c
        mine[key].incidents.extend(its)
    return orphans


def merge_rounds(state: dict[str, Any], docs: Sequence[tuple[dict[str, Any], ValidateDocument | None]],
                 soak_dir: Path | None = None) -> ValidateDocument:
    """One schema 5.1 document over the rounds: every round's cells (folders relative to the soak
    folder, ``round`` set), every incident once (keyed by its dossier under the soak folder).
    With ``soak_dir``, a killed round's dossiers and cells written after its last checkpoint are
    taken from disk."""
    cells: list[Cell] = []
    incidents: list[Incident] = []
    seen: set[str] = set()
    for rnd, doc in docs:
        folder = rnd["folder"]

        def moved(inc: Incident) -> Incident:
            repro = inc.reproducer.replace(f" {inc.cell}/", f" {folder}/{inc.cell}/") if inc.reproducer else ""
            return inc.model_copy(update={"cell": _prefixed(inc.cell, folder),
                                          "dossier": _prefixed(inc.dossier, folder), "reproducer": repro})

        for cell in doc.validation_results.cells if doc is not None else []:
            c = cell.model_copy(update={"folder": _prefixed(cell.folder, folder),
                                        "incidents": [moved(i) for i in cell.incidents]})
            setattr(c, "round", rnd["index"])
            cells.append(c)
        # the run's own list holds the same incidents as its cells (plus any not in a cell)
        run_incidents = [] if doc is None else [i for c in doc.validation_results.cells for i in c.incidents] + \
            list(doc.incidents)
        for inc in run_incidents:
            m = moved(inc)
            key = m.dossier or f"{m.cell}|{m.predicate}|{m.first_seen}"
            if key not in seen:
                seen.add(key)
                incidents.append(m)
        if soak_dir is not None and rnd.get("status") == "killed":
            for inc in _killed_round_extras(soak_dir, rnd, cells, seen):
                seen.add(inc.dossier)
                incidents.append(inc)
    vr = ValidationResults(started_at=state["started_at"], finished_at=state.get("finished_at", ""),
                           duration_s=spent_s(state), seed=int(state["seed"], 16), cells=cells)
    out = ValidateDocument(host_arch_pair=state.get("host_arch_pair") or host_arch_pair(), kind="matrix",
                           probatorium_version=__version__, command=list(state.get("command", [])),
                           partial=not state.get("finished"), validation_results=vr, incidents=incidents)
    setattr(out, "soak", {"state": STATE_NAME, "rounds": len(state["rounds"]), "spent_s": spent_s(state),
                          "duration_s": state["duration_s"]})
    return out.finalize_back_compat()


# ---------------------------------------------------------------------------------------------
# Summary: hourly rows and the longest clean stretch


def soak_time(state: dict[str, Any], moment: str) -> float | None:
    """A wall-clock moment as soak seconds (None when it falls in no round)."""
    t = parse_iso(moment)
    if t is None:
        return None
    for rnd in state["rounds"]:
        start = parse_iso(rnd.get("started_at"))
        if start is None:
            continue
        into = (t - start).total_seconds()
        if -1.0 <= into <= float(rnd.get("seconds") or 0.0) + 5.0:  # a dossier written while the round stopped
            return round(float(rnd["soak_offset_s"]) + min(max(into, 0.0), float(rnd.get("seconds") or 0.0)), 3)
    return None


def _round_of(state: dict[str, Any], index: int) -> dict[str, Any] | None:
    return next((r for r in state["rounds"] if r["index"] == index), None)


def incident_times(state: dict[str, Any], doc: ValidateDocument) -> list[tuple[float, Incident]]:
    """Each incident with its soak time (an incident outside every round: its round's start)."""
    out = []
    for inc in doc.incidents:
        t = soak_time(state, inc.first_seen)
        if t is None:
            rnd = _round_of(state, _round_index(inc.cell))
            t = float(rnd["soak_offset_s"]) if rnd else 0.0
        out.append((t, inc))
    return sorted(out, key=lambda p: p[0])


def _round_index(folder: str) -> int:
    head = folder.split("/", 1)[0]
    try:
        return int(head.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def clean_stretch(spent: float, high_times: Sequence[float]) -> dict[str, float]:
    """The longest span of soak time [start, end] with no HIGH incident inside it."""
    edges = [0.0, *sorted(min(max(t, 0.0), spent) for t in high_times), spent]
    best = (0.0, 0.0)
    for a, b in zip(edges, edges[1:]):
        if b - a > best[1] - best[0]:
            best = (a, b)
    return {"start_s": round(best[0], 3), "end_s": round(best[1], 3), "seconds": round(best[1] - best[0], 3),
            "high_incidents": len(high_times)}


def cell_requests(cell: Cell) -> int:
    t1 = cell.tier_1.get("requests_sent") or 0
    t2 = cell.tier_2.get("requests") or 0
    return int(t1 if isinstance(t1, int) else 0) + int(t2 if isinstance(t2, int) else 0)


def _median(values: Sequence[float]) -> float | None:
    v = sorted(values)
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def series_slopes(samples: Sequence[dict[str, Any]], max_points: int = 80) -> dict[str, float]:
    """Per leak predicate, the Theil–Sen slope (per minute) of one round's resource series: its
    last restart segment, the leak judges' warm-up dropped, at most ``max_points`` samples (evenly
    picked). A description of the trend, not a verdict (the verdicts are the cells' properties)."""
    from .resources import FIELDS, PREDICATES, theil_sen, warmup_for

    if not samples:
        return {}
    last = samples[-1].get("segment", 0)
    seg = [x for x in samples if x.get("segment", 0) == last and isinstance(x.get("t"), (int, float))]
    if len(seg) < 3:
        return {}
    t0 = float(seg[0]["t"])
    kept = [x for x in seg if float(x["t"]) - t0 >= warmup_for(float(seg[-1]["t"]) - t0)]
    seg = kept if len(kept) >= 3 else seg
    if len(seg) > max_points:
        step = (len(seg) - 1) / (max_points - 1)
        seg = [seg[round(i * step)] for i in range(max_points)]
    out = {}
    for kind, key in FIELDS.items():
        pts = [(float(x["t"]), float(x[key])) for x in seg if isinstance(x.get(key), (int, float))]
        if len(pts) >= 3:
            out[PREDICATES[kind]] = round(theil_sen(pts)[0] * 60.0, 6)
    return out


def round_slopes(soak_dir: Path, cell: Cell) -> dict[str, float]:
    """:func:`series_slopes` of one round's cell, from its resources.json ({} without one)."""
    series = soak_dir / cell.folder / "resources.json"
    if not series.is_file():
        return {}
    try:
        samples = json.loads(series.read_text(encoding="utf-8")).get("samples") or []
        return series_slopes(samples)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def summarize(state: dict[str, Any], doc: ValidateDocument, soak_dir: Path) -> dict[str, Any]:
    """Hourly rows (requests, new incidents by severity, leak slopes so far), the longest clean
    stretch, and the totals."""
    spent = spent_s(state)
    rounds = {r["index"]: r for r in state["rounds"]}
    # per cell of each round: requests and slopes, placed in soak time
    per_cell = []
    for cell in doc.validation_results.cells:
        rnd = rounds.get(getattr(cell, "round", -1))
        if rnd is None:
            continue
        a = float(rnd["soak_offset_s"])
        b = a + float(rnd.get("seconds") or 0.0)
        per_cell.append((a, b, f"{cell.refapp}/{cell.engine}", cell_requests(cell), round_slopes(soak_dir, cell)))
    timed = incident_times(state, doc)
    hours = max(1, math.ceil(spent / 3600.0 - 1e-9)) if spent > 0 else 0
    rows = []
    for h in range(hours):
        lo, hi = h * 3600.0, min((h + 1) * 3600.0, spent)
        requests = 0.0
        for a, b, _, n, _ in per_cell:
            span = b - a
            overlap = max(0.0, min(b, hi) - max(a, lo))
            requests += n * (overlap / span if span > 0 else (1.0 if lo <= a < hi or (a == hi == spent) else 0.0))
        new: dict[str, int] = {"HIGH": 0, "MED": 0, "LOW": 0}
        for t, inc in timed:
            if lo <= t < hi or (h == hours - 1 and t >= hi):
                new[inc.severity] = new.get(inc.severity, 0) + 1
        slopes: dict[str, dict[str, Any]] = {}
        for a, b, name, _, s in per_cell:
            if b > hi + 1e-6:  # only rounds over by the end of this hour
                continue
            for pred, v in s.items():
                slopes.setdefault(name, {}).setdefault(pred, []).append(v)
        rows.append({"hour": h, "from_s": round(lo, 3), "to_s": round(hi, 3), "requests": int(round(requests)),
                     "incidents": new,
                     "leak_slopes_per_min": {name: {p: {"median": _median(v), "rounds": len(v), "last": v[-1]}
                                                    for p, v in preds.items()} for name, preds in slopes.items()}})
    highs = [t for t, inc in timed if inc.severity == "HIGH" and not inc.accepted]
    by_sev: dict[str, int] = {}
    for _, inc in timed:
        by_sev[inc.severity] = by_sev.get(inc.severity, 0) + 1
    return {"spent_s": spent, "duration_s": state["duration_s"], "rounds": len(state["rounds"]),
            "cells": len(doc.validation_results.cells), "requests": sum(p[3] for p in per_cell),
            "incidents": len(doc.incidents), "incidents_by_severity": by_sev,
            "hourly": rows, "longest_clean_stretch": clean_stretch(spent, highs)}


def soak_exit_code(state: dict[str, Any], doc: ValidateDocument, interrupted: bool) -> int:
    """1: any HIGH incident (not accepted) or failed cell in any round; 2: a round that could not
    run (usage/infrastructure) or an interrupted soak; 0 otherwise."""
    if any(i.severity == "HIGH" and not i.accepted for i in doc.incidents) or \
            any(c.status == "failed" for c in doc.validation_results.cells):
        return 1
    if interrupted or not state.get("finished") or any(r.get("exit_code") == 2 for r in state["rounds"]):
        return 2
    return 0


def write_all(state: dict[str, Any], soak_dir: Path) -> ValidateDocument:
    """Rewrite validate-results.json (combined) and soak.json (with the summary), atomically."""
    state["spent_s"] = spent_s(state)
    docs = [(v, round_document(soak_dir, v)) for r in state["rounds"] for v in round_views(r)]
    doc = merge_rounds(state, docs, soak_dir)
    state["summary"] = summarize(state, doc, soak_dir)
    write_json_atomic(soak_dir / DOCUMENT_NAME, doc)
    write_json_atomic(soak_dir / STATE_NAME, state)
    return doc


# ---------------------------------------------------------------------------------------------
# Running


def soak_folder(results_dir: Path) -> Path:
    """results/<ts>-soak-<version>/ (-2, -3 … on collision)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    base = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-soak-{__version__}"
    for attempt in range(1, 1000):
        candidate = results_dir / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise UsageError(f"{results_dir}: cannot create a soak folder")


def parallel_cells(plans: Sequence[Any], args: Sequence[str]) -> list[tuple[str, str]]:
    """--parallel's cells: the (refapp, engine) pairs of a refapp matrix. Refused (one line) for
    other targets and for backing services (every child would start its own set)."""
    if any(p.spec.kind != "refapp" for p in plans):
        raise UsageError("soak --parallel runs the cells of a refapp matrix (--matrix/--refapps/--engines/--cells) "
                         "concurrently; an --app/--cmd/--url target is one cell: drop --parallel")
    if "--services" in [a.split("=", 1)[0] for a in args] or any(p.services for p in plans):
        raise UsageError("soak --parallel with backing services is not supported (each cell's run would start "
                         "its own services); drop --parallel or the refapps that need services")
    return [(p.label, p.engine) for p in plans]


def check_validate_args(args: Sequence[str]) -> None:
    for i, a in enumerate(args):
        name = a.split("=", 1)[0]
        if name in RESERVED:
            raise UsageError(f"soak sets {name} on every round itself; give the soak's own "
                             "--duration/--out/--seed/--json before the target flags")
        if name in ("--driver", "--inventory", "--target-host"):
            value = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
            if name != "--driver" or value != "local":
                raise UsageError(f"soak rounds run on this machine: a soak over the multi-host drivers "
                                 f"({name} {value}) is not built; run validate --driver … per host instead")
    driver = os.environ.get("PROBATORIUM_VALIDATE_DRIVER") or "local"
    if driver != "local":
        raise UsageError(f"soak rounds run on this machine: PROBATORIUM_VALIDATE_DRIVER={driver} is not "
                         "supported by soak (a multi-host soak is not built)")


def lock_soak_dir(soak_dir: Path) -> int:
    soak_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(soak_dir / ".probatorium.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"{soak_dir}: another probatorium run is writing this folder") from None
    return fd


@dataclass
class SoakRunner:
    soak_dir: Path
    state: dict[str, Any]
    say: Callable[[str], None] = print
    stop_event: threading.Event | None = None
    python: str = sys.executable

    def round_argvs(self, rnd: dict[str, Any]) -> list[tuple[str, list[str]]]:
        """(run folder relative to the soak, validate argv) of each child of the round: one, or with
        --parallel one per matrix cell (``--cells REFAPP:ENGINE``, the whole round's budget each)."""
        base = int(self.state["seed"], 16)
        out = []
        for view in round_views(rnd):
            part = view["folder"].split("/", 1)[1] if "/" in view["folder"] else ""
            seed = derive_seed(base, "soak-round", str(rnd["index"]), part) & ((1 << 63) - 1)
            args = list(self.state["validate_args"])
            if part:
                refapp, engine = self.state["cells"][rnd["parts"].index(part)]
                args = strip_matrix_flags(args) + ["--cells", f"{refapp}:{engine}"]
            out.append((view["folder"], [self.python, "-m", "probatorium.cli", "validate", *args,
                                         "--duration", f"{rnd['planned_s']:g}s", "--seed", f"{seed:#x}",
                                         "--out", str(self.soak_dir / view["folder"])]))
        return out

    def run(self) -> ValidateDocument:
        stop = self.stop_event or threading.Event()
        doc = write_all(self.state, self.soak_dir)
        limit = int(float(self.state["duration_s"]) / MIN_ROUND_S) + 2  # bounded: every round is ≥ MIN_ROUND_S
        for _ in range(limit):
            secs = next_round_s(self.state)
            if secs <= 0 or stop.is_set():
                break
            index = max((r["index"] for r in self.state["rounds"]), default=0) + 1
            rnd = {"index": index, "folder": f"round-{index:03d}", "status": "running", "planned_s": secs,
                   "soak_offset_s": spent_s(self.state), "started_at": utc_now_iso(), "last_seen": "",
                   "seconds": 0.0, "exit_code": None}
            if self.state.get("parallel"):
                rnd["parts"] = [f"part-{i:02d}-{sanitize_name(r)}-{sanitize_name(e)}"
                                for i, (r, e) in enumerate(self.state["cells"], 1)]
            self.state["rounds"].append(rnd)
            write_all(self.state, self.soak_dir)
            self.say(f"soak: round {index} ({rnd['folder']}): {secs:.0f}s, soak time "
                     f"{rnd['soak_offset_s']:.0f}s of {float(self.state['duration_s']):.0f}s"
                     + (f", {len(rnd['parts'])} cells in parallel" if rnd.get("parts") else ""))
            code = self._run_round(rnd, stop)
            rnd["exit_code"] = code
            rnd["seconds"] = round(_between(rnd["started_at"], utc_now_iso()), 3)
            rnd["status"] = "interrupted" if stop.is_set() else ("done" if code in (0, 1) else "failed")
            rnd["finished_at"] = utc_now_iso()
            doc = write_all(self.state, self.soak_dir)
            if code not in (0, 1) and all(round_document(self.soak_dir, v) is None for v in round_views(rnd)):
                raise SoakError(f"soak: round {index} wrote no document (validate exit {code}); see the lines above")
        if next_round_s(self.state) <= 0:
            self.state["finished"], self.state["finished_at"] = True, utc_now_iso()
        return write_all(self.state, self.soak_dir)

    def _run_round(self, rnd: dict[str, Any], stop: threading.Event) -> int:
        """Run the round's validate children, heartbeat soak.json every second; one SIGTERM each on
        a stop or past the round's limit (validate writes its partial document), SIGKILL 60 s later.
        Each child runs in its own session armed with PDEATHSIG=SIGKILL: it dies with the soak."""
        from ..procs import spawn

        deadline = time.monotonic() + round_limit_s(float(rnd["planned_s"]))
        procs: list[subprocess.Popen] = []
        outs = []
        try:
            for folder, argv in self.round_argvs(rnd):
                (self.soak_dir / folder).mkdir(parents=True, exist_ok=True)
                outs.append(open(self.soak_dir / folder / "validate.stdout", "wb"))
                procs.append(spawn(argv, death_signal=signal.SIGKILL, stdout=outs[-1], env={**os.environ}).popen)
            termed = False
            while any(p.poll() is None for p in procs):
                time.sleep(HEARTBEAT_S)
                rnd["last_seen"] = utc_now_iso()
                rnd["seconds"] = round(_between(rnd["started_at"], rnd["last_seen"]), 3)
                self.state["spent_s"] = spent_s(self.state)
                write_json_atomic(self.soak_dir / STATE_NAME, self.state)  # heartbeat
                if (stop.is_set() or time.monotonic() > deadline) and not termed:
                    for p in procs:
                        if p.poll() is None:
                            p.send_signal(signal.SIGTERM)
                    termed, deadline = True, time.monotonic() + 60.0
                elif termed and time.monotonic() > deadline:
                    for p in procs:
                        if p.poll() is None:
                            p.kill()
                            p.wait()
            return combine_exit_codes([p.wait() for p in procs])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for f in outs:
                f.close()


def combine_exit_codes(codes: Sequence[int]) -> int:
    """A round's exit from its children's: 1 when any gate failed, else 2 when any child could not
    run (or died), else 0."""
    if any(c == 1 for c in codes):
        return 1
    return 0 if codes and all(c == 0 for c in codes) else 2


_MATRIX_VALUED = ("--refapps", "--engines", "--cells")


def strip_matrix_flags(args: Sequence[str]) -> list[str]:
    """validate's flags without the matrix selection (a --parallel child gets its one --cells)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in ("--matrix", "--no-matrix"):
            continue
        if name in _MATRIX_VALUED:
            skip = "=" not in a
            continue
        out.append(a)
    return out


# ---------------------------------------------------------------------------------------------
# Printing


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


HOURLY_COLUMNS = ("hour", "soak time", "requests", "HIGH", "MED", "LOW", "leak slopes /min (median of rounds so far)")


def hourly_rows(state: dict[str, Any]) -> list[tuple[str, ...]]:
    """The hourly summary as table rows (columns: HOURLY_COLUMNS)."""
    out = []
    for r in (state.get("summary") or {}).get("hourly", []):
        inc = r["incidents"]
        slopes = "; ".join(f"{name} " + ", ".join(f"{p} {v['median']:.3g} ({v['rounds']})" for p, v in preds.items())
                           for name, preds in r["leak_slopes_per_min"].items()) or "-"
        out.append((str(r["hour"]), f"{_fmt_s(r['from_s'])}–{_fmt_s(r['to_s'])}", str(r["requests"]),
                    str(inc.get("HIGH", 0)), str(inc.get("MED", 0)), str(inc.get("LOW", 0)), slopes))
    return out


def summary_lines(state: dict[str, Any]) -> list[str]:
    """The totals and the longest clean stretch, one line each."""
    s = state.get("summary") or {}
    lines = [f"soak: {_fmt_s(s.get('spent_s', 0))} of {_fmt_s(s.get('duration_s', 0))} in {s.get('rounds', 0)} "
             f"round(s), {s.get('cells', 0)} cell(s), {s.get('requests', 0)} requests, {s.get('incidents', 0)} "
             f"incident(s) {s.get('incidents_by_severity', {})}"]
    c = s.get("longest_clean_stretch") or {}
    if c:
        lines.append(f"longest clean stretch (no HIGH incident): {_fmt_s(c['seconds'])} "
                     f"from {_fmt_s(c['start_s'])} to {_fmt_s(c['end_s'])} of soak time "
                     f"({c['high_incidents']} HIGH incident(s) in the soak)")
    return lines
