"""The planted REST server (tests/servers/restserver.py) as a fixture: one process per test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[2] / "servers" / "restserver.py"
SPEC = SERVER.with_name("restserver.openapi.yaml")


@pytest.fixture
def restserver():
    """start(bug=None) → (host, port); every started server is stopped at the end."""
    procs = []

    def start(*bugs: str) -> tuple[str, int]:
        argv = [sys.executable, str(SERVER), "--port", "0", *[a for b in bugs for a in ("--bug", b)]]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        line = proc.stdout.readline()
        assert line.startswith("ready addr="), line
        host, _, port = line.split("=", 1)[1].strip().rpartition(":")
        return host, int(port)

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
