#!/usr/bin/env python3
"""Run `probatorium validate --cmd` against the strict test server and each of its planted bugs,
and print what was caught, with which predicate, and how long after the cell started.

Usage: .venv/bin/python scripts/detect_planted_bugs.py [--duration 30s] [--concurrency 20] [BUG ...]
(one cell per bug; about duration + 5 s each). The bar (SPEC.md §8): each bug caught within 60 s
with the right predicate, exit 1; the strict server (and the RFC-allowed lf-only) exit 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "tests" / "servers" / "h1server.py"
SPEC = REPO / "tests" / "servers" / "h1server.openapi.yaml"


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", default="30s")
    ap.add_argument("--concurrency", default="20")
    ap.add_argument("--slices", default="adversarial")
    ap.add_argument("bugs", nargs="*")
    args = ap.parse_args()
    listed = subprocess.run([sys.executable, str(SERVER), "--list-bugs"], capture_output=True, text=True).stdout
    bugs = args.bugs or ["none"] + [line.split(":", 1)[0] for line in listed.splitlines() if ":" in line]
    print(f"{'bug':22s} {'exit':>4s}  {'HIGH predicates':32s} {'first HIGH after':>16s}  first cases")
    for bug in bugs:
        flag = "" if bug == "none" else f" --bug {bug}"
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            cmd = [sys.executable, "-m", "probatorium.cli", "validate", "--cmd",
                   f"{sys.executable} {SERVER} --port {{port}}{flag}", "--spec", str(SPEC),
                   "--slices", args.slices, "--duration", args.duration, "--concurrency", args.concurrency,
                   "--out", str(out)]
            rc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True).returncode
            doc = json.loads((out / "validate-results.json").read_text())
        cell = doc["validation_results"]["cells"][0]
        highs = [i for i in doc["incidents"] if i["severity"] == "HIGH"]
        preds = ",".join(sorted({i["predicate"] for i in highs})) or "-"
        after = f"{min((_ts(i['first_seen']) - _ts(cell['started_at'])).total_seconds() for i in highs):.1f}s" \
            if highs else "-"
        cases = sorted({i["case"] for i in highs})[:3]
        print(f"{bug:22s} {rc:>4d}  {preds:32s} {after:>16s}  {', '.join(cases)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
