"""Start the planted-bug test servers and run a reproducer under a bare system python3."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SERVERS = ROOT / "tests" / "servers"
PYTHON3 = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


@contextlib.contextmanager
def server(name: str, *bugs: str):
    """A tests/servers/<name>.py on a free loopback port, stopped by its pid on exit; yields HOST:PORT."""
    cmd = [sys.executable, str(SERVERS / f"{name}.py"), "--port", "0"]
    for bug in bugs:
        cmd += ["--bug", bug]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert "ready addr=" in line, line
        yield line.split("addr=", 1)[1].split()[0]
    finally:
        proc.kill()  # a test server: nothing to shut down gracefully
        proc.wait(5)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_repro(tmp_path: Path, source: str, addr: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Write repro.py and run it with `python3 -I -S` (no site-packages, no PYTHONPATH)."""
    assert "import probatorium" not in source and "from probatorium" not in source
    script = tmp_path / "repro.py"
    script.write_text(source)
    t0 = time.monotonic()
    res = subprocess.run([PYTHON3, "-I", "-S", str(script), addr], capture_output=True, text=True,
                         timeout=timeout, cwd=tmp_path)
    assert time.monotonic() - t0 < timeout
    assert "Traceback" not in res.stderr, res.stderr
    return res


def assert_outcome(res: subprocess.CompletedProcess, code: int) -> None:
    """Exit code and last line agree: 1 REPRODUCED, 0 NOT REPRODUCED, 2 UNREACHABLE."""
    last = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    want = {1: "REPRODUCED", 0: "NOT REPRODUCED", 2: "UNREACHABLE"}[code]
    assert res.returncode == code and last.startswith(want), (res.returncode, res.stdout[-3000:], res.stderr)
