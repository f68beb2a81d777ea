"""The stand-alone runner every refapp's ``app.py`` ends with.

``python refapps/<slug>/app.py [--host H] [--port N] [--engine E]`` runs the
app under the engine's own command line as a child process (signals
forwarded), and prints ``ready addr=HOST:PORT`` once the port accepts
connections (SPEC.md §3 ready line). Exit status: the child's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

ENGINES = ("uvicorn", "uvicorn-h11", "hypercorn", "granian", "daphne", "uvicorn-wsproto")
READY_TIMEOUT_S = 30.0


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def engine_argv(engine: str, host: str, port: int, module: str = "app:app") -> list[str]:
    """The engine's command line serving ``module`` on ``host:port`` (one worker, no access log)."""
    py = sys.executable
    if engine in ("uvicorn", "uvicorn-h11"):
        loop, proto = ("uvloop", "httptools") if engine == "uvicorn" else ("asyncio", "h11")
        return [py, "-m", "uvicorn", "--host", host, "--port", str(port), "--loop", loop, "--http", proto,
                "--no-access-log", "--log-level", "warning", module]
    if engine == "uvicorn-wsproto":  # h11 with uvicorn's wsproto WebSocket implementation
        return [py, "-m", "uvicorn", "--host", host, "--port", str(port), "--loop", "asyncio", "--http", "h11",
                "--ws", "wsproto", "--no-access-log", "--log-level", "warning", module]
    if engine == "hypercorn":
        return [py, "-m", "hypercorn", "--workers", "0", "--bind", f"{host}:{port}", module]
    if engine == "granian":
        return [py, "-m", "granian", "--interface", "asgi", "--host", host, "--port", str(port), "--workers", "1",
                "--no-access-log", "--log-level", "warning", module]
    if engine == "daphne":
        return [py, "-m", "daphne", "-b", host, "-p", str(port), "-v", "0", module]
    raise ValueError(f"unknown engine {engine!r}")


def main(slug: str, app_file: str, argv: list[str] | None = None) -> int:
    """Serve the refapp whose ``app.py`` is ``app_file`` under the chosen engine."""
    parser = argparse.ArgumentParser(description=f"refapp {slug}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--engine", choices=ENGINES, default="uvicorn")
    args = parser.parse_args(argv)
    host, port = args.host, args.port or free_port(args.host)
    here = os.path.dirname(os.path.abspath(app_file))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.path.dirname(here), env.get("PYTHONPATH")) if p)
    child = subprocess.Popen(engine_argv(args.engine, host, port), cwd=here, env=env)

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while child.poll() is None and time.monotonic() < deadline:
        if port_open(host, port):
            print(f"ready addr={host}:{port}", flush=True)
            break
        time.sleep(0.05)
    return child.wait()
