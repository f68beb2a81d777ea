"""`probatorium fuzz`: Tier 2 alone, on validate's plan / cell / orchestrator machinery.

The command parses the target flags exactly as ``validate`` does; this module
turns them into Tier 2's options, prints the dependency graph
(``--show-deps``), and replays a dossier (``--replay``) against a target it
starts. The run itself is a one-cell validation run with ``--tiers 2``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import UsageError
from .plan import CellPlan

MODES = ("lean", "full")


def tier2_options(*, mode: str, corpus: Path | None, login_path: str | None, walkers: int,
                  discover: bool, annotations: Path | None = None) -> dict:
    """Tier 2's configure() options, checked."""
    if mode not in MODES:
        raise UsageError(f"--mode must be lean or full, got {mode!r}")
    if walkers < 1:
        raise UsageError(f"--walkers must be at least 1, got {walkers}")
    if login_path is not None and not login_path.startswith("/"):
        raise UsageError("--login-path must start with '/'")
    if corpus is not None and corpus.exists() and not corpus.is_dir():
        raise UsageError(f"--corpus {corpus}: not a folder")
    return {"mode": mode, "corpus": corpus, "login_path": login_path, "walkers": walkers, "discover": discover,
            "annotations": annotations}


def show_deps(plan: CellPlan, login_path: str | None, annotations: Path | None = None) -> str:
    """The inferred dependency graph of the cell's OpenAPI document, as text."""
    from ..api.deps import infer
    from ..api.spec import load_spec
    from .tier2.tier import find_login

    if plan.openapi is None:
        raise UsageError("--show-deps needs an OpenAPI document: --spec FILE (refapps bring theirs)")
    spec = load_spec(plan.openapi)
    graph = infer(spec, annotations)
    login = find_login(spec, plan.markov, login_path)
    head = f"# {spec.source}: {len(spec.operations)} operations; login: " + (
        f"{login.method} {login.path}" if login else "(none)")
    return head + "\n" + graph.format().rstrip("\n") + "\n"


def replay(plan: CellPlan, dossier: Path, say) -> int:
    """Start the target, run the dossier's repro.py against it, stop it; repro.py's exit status
    (1 REPRODUCED, 0 NOT REPRODUCED, 2 UNREACHABLE)."""
    from ..targets.launcher import start_target

    repro = dossier / "repro.py" if dossier.is_dir() else dossier
    if not repro.is_file():
        raise UsageError(f"--replay {dossier}: no repro.py there")
    with tempfile.TemporaryDirectory(prefix="probatorium-replay-") as tmp:
        target = start_target(plan.spec, Path(tmp))
        try:
            addr = f"{target.host}:{target.port}"
            say(f"replaying {repro} against {plan.spec.describe()} at {addr}")
            res = subprocess.run([sys.executable, "-I", "-S", str(repro), addr], capture_output=True, text=True,
                                 timeout=300)
            sys.stdout.write(res.stdout)
            sys.stderr.write(res.stderr)
            return res.returncode
        finally:
            target.stop()


def summary_lines(cell) -> list[str]:
    """The console lines of a cell's Tier 2 tally: volume, coverage, findings per checker."""
    t2 = cell.tier_2
    if not t2:
        return []
    found = ", ".join(f"{k[len('findings_'):]}={v}" for k, v in sorted(t2.items()) if k.startswith("findings_") and v)
    return [f"tier 2 {cell.refapp}/{cell.engine}: {t2.get('sequences', 0)} sequences, {t2.get('requests', 0)} "
            f"requests, {t2.get('operations_covered', 0)}/{t2.get('operations_total', 0)} operations with a 2xx, "
            f"{t2.get('pairs_seen', 0)} (operation, status) pairs; findings: {found or 'none'}"
            + (f"; {t2['schema_undeclared_status']} undeclared status(es) (MED)" if t2.get("schema_undeclared_status") else "")]
