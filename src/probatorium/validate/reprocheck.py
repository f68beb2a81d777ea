"""Re-run the reproducers of a finished run against fresh targets.

A finding whose repro.py does not reproduce it is a bug in probatorium, so
this is how a run's findings are audited: for every cell with incidents that
carry a repro.py, start the same target again (same refapp/app/cmd and
engine), run each reproducer against it, and report REPRODUCED or not.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ProbatoriumError
from ..results.store import load_document
from ..targets.launcher import TargetSpec, start_target


@dataclass
class ReproResult:
    cell: str
    engine: str
    predicate: str
    case: str
    outcome: str  # REPRODUCED | NOT REPRODUCED | ERROR: ...
    dossier: str


def repro_outcome(returncode: int, stdout: str) -> str:
    """What a repro.py run says, from its exit code (validate.repro: 1 reproduced, 0 not, 2 the
    target is unreachable) checked against its last line."""
    last = (stdout.strip().splitlines() or [""])[-1].strip()
    want = {1: "REPRODUCED", 0: "NOT REPRODUCED"}.get(returncode)
    if want is not None and last == want:
        return want
    if returncode == 2:
        return f"ERROR: {last or 'target not reachable (exit 2)'}"
    return f"ERROR: no verdict (exit {returncode}): {last[:200]}"


def check_reproducers(run_dir: Path, severities: tuple[str, ...] = ("HIGH", "MED"),
                      timeout: float = 60.0, log_dir: Path | None = None) -> list[ReproResult]:
    """Run every incident's repro.py (of the given severities) against a fresh target of its cell."""
    doc = load_document(run_dir)
    root = run_dir if run_dir.is_dir() else run_dir.parent
    results: list[ReproResult] = []
    from ..services import ServiceManager
    from ..targets.refapps import refapp_services

    # Targets that need backing services (driver refapps) get fresh ones, as validate gave them.
    needed = sorted({s for c in doc.validation_results.cells if c.target.get("kind") == "refapp"
                     for s in refapp_services(c.target.get("refapp") or c.refapp)})
    with ServiceManager() as services:
        if needed:
            services.up([s for s in needed if s not in services.unavailable(needed)])
        env = services.env()
        _check_cells(doc, root, severities, timeout, log_dir, env, results)
    return results


def _check_cells(doc, root: Path, severities, timeout: float, log_dir: Path | None, env: dict,
                 results: list[ReproResult]) -> None:
    for cell in doc.validation_results.cells:
        incidents = [i for i in cell.incidents if i.severity in severities and (root / i.dossier / "repro.py").is_file()]
        if not incidents:
            continue
        fields = {k: v for k, v in cell.target.items() if k in TargetSpec.__dataclass_fields__}
        if not fields.get("kind"):
            results += [ReproResult(cell.folder, cell.engine, i.predicate, i.case, "ERROR: cell has no target spec",
                                    i.dossier) for i in incidents]
            continue
        spec = TargetSpec(**fields)
        spec.env = {**spec.env, **env}
        try:
            target = start_target(spec, (log_dir or root / "repro-check") / cell.folder)
        except ProbatoriumError as e:
            results += [ReproResult(cell.folder, cell.engine, i.predicate, i.case, f"ERROR: {e}", i.dossier)
                        for i in incidents]
            continue
        try:
            addr = f"{target.host}:{target.port}"
            for inc in incidents:
                repro = root / inc.dossier / "repro.py"
                try:
                    res = subprocess.run([sys.executable, str(repro), addr], capture_output=True, text=True,
                                         timeout=timeout)
                    outcome = repro_outcome(res.returncode, res.stdout)
                except subprocess.TimeoutExpired:
                    outcome = "ERROR: repro.py timed out"
                results.append(ReproResult(cell.folder, cell.engine, inc.predicate, inc.case, outcome, inc.dossier))
                if not target.alive():
                    target.restart()
        finally:
            target.stop()
