"""Helpers for end-to-end tests: run the real CLI as a subprocess, bounded in time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
H1SERVER = REPO / "tests" / "servers" / "h1server.py"
CLI = [sys.executable, "-m", "probatorium.cli"]


def run_cli(args: list[str], timeout: float = 180, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `probatorium ARGS` to completion (`env` added to ours); kill its process group on timeout."""
    proc = subprocess.Popen(CLI + args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, **(env or {}), "COLUMNS": "200"})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"probatorium {' '.join(args)} did not finish in {timeout}s\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def load_doc(folder: Path) -> dict:
    return json.loads((folder / "validate-results.json").read_text())


def h1cmd(*bugs: str) -> str:
    flags = "".join(f" --bug {b}" for b in bugs)
    return f"{sys.executable} {H1SERVER} --port {{port}}{flags}"
