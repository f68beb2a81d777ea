"""An incident of an earlier run as a bisect check: its dossier's repro.py, and the target its
cell served (refapp or app, and the engine), read from the run folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError


@dataclass(frozen=True)
class RunIncident:
    dossier: Path
    predicate: str
    engine: str
    refapp: str | None
    app: str | None
    app_dir: str | None


def find_incident(run_dir: Path, incident: str) -> RunIncident:
    """The dossier `incident` names in `run_dir` (its folder name, or a unique part of it, e.g.
    ``002`` or the case name) and the target of its cell; one UsageError line otherwise."""
    run_dir = Path(run_dir)
    if not (run_dir / "validate-results.json").is_file():
        raise UsageError(f"--from-run {run_dir}: not a run folder (no validate-results.json)")
    dossiers = sorted(p for p in run_dir.glob("*/incidents/*") if (p / "incident.json").is_file())
    exact = [p for p in dossiers if p.name == incident]
    found = exact or [p for p in dossiers if incident and incident in p.name]
    if len(found) != 1:
        names = ", ".join(p.name for p in (found or dossiers)[:6]) or "none"
        what = "matches several incidents" if found else "matches no incident"
        raise UsageError(f"--incident {incident!r} {what} in {run_dir}: {names}")
    dossier = found[0]
    if not (dossier / "repro.py").is_file():
        raise UsageError(f"incident {dossier.name} has no repro.py: nothing to replay against each release")
    info = json.loads((dossier / "incident.json").read_text())
    target = _cell_target(dossier.parent.parent)
    if target.get("kind") not in ("refapp", "app"):
        raise UsageError(f"incident {dossier.name} was found on a {target.get('kind')} target: bisect can only "
                         "serve a refapp or an --app itself; use --cmd-check with its repro.py")
    return RunIncident(dossier, str(info.get("predicate", "")), str(target.get("engine") or "auto"),
                       target.get("refapp"), target.get("app"), target.get("app_dir"))


def _cell_target(cell_dir: Path) -> dict:
    """The target record of the cell in `cell_dir` (its validate-results.json)."""
    try:
        doc = json.loads((cell_dir / "validate-results.json").read_text())
        cells = doc["validation_results"]["cells"]
        return next(c["target"] for c in cells if c.get("folder") in (cell_dir.name, None)) \
            if len(cells) > 1 else cells[0]["target"]
    except (OSError, ValueError, KeyError, IndexError, StopIteration, TypeError):
        raise UsageError(f"{cell_dir}/validate-results.json does not say which target the cell served") from None
