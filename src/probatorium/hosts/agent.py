"""The host agent: starts, stops and restarts targets on a server host for a validator or bench elsewhere.

``deploy`` starts one agent per server host (``python -m probatorium.hosts.agent
--address ADDR --run-dir /tmp/probatorium-<run> --token-file F``). It listens
on the host's traffic address (a random port), answers only requests carrying
the bearer token the controller made, and starts targets with the normal
launcher bound to that address: a refapp or app, or a command of the run's
own Python that binds ``{host}:{port}`` (the bench's gunicorn, aiohttp and
sanic competitors), pinned to those of the asked CPUs this host has. Every
process it starts goes into the host manifest; its targets die with it (the
launcher's PR_SET_PDEATHSIG).

Endpoints (JSON bodies and answers): ``POST /targets`` {spec} → {id, host,
port, pid, versions, cpus}; ``POST /targets/ID/stop``; ``POST /targets/ID/restart``
→ {host, port, pid}; ``GET /targets/ID/stderr`` → {lines}; ``GET /targets/ID/state`` →
{alive, exit_code, pid}; ``GET /health``.
"""

from __future__ import annotations

import argparse
import hmac
import itertools
import json
import os
import shlex
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from probatorium.errors import ProbatoriumError
from probatorium.hosts import hostside
from probatorium.targets.launcher import RunningTarget, TargetSpec, placeable, start_target

#: TargetSpec fields a remote validator or bench may set (kind refapp, app, or a cmd of this venv's Python).
SPEC_FIELDS = frozenset({"kind", "engine", "refapp", "app", "app_dir", "cmd", "cpus", "health_path", "env",
                         "ready_timeout"})


def checked_spec(fields: dict, target_dir: Path) -> tuple[TargetSpec, list[int] | None]:
    """The spec this agent will start from a request's `fields`, and the CPUs it pins it to.

    A ``cmd`` runs only when its program is this agent's own interpreter (the run's venv:
    the bench's Python competitors on gunicorn, aiohttp, sanic) and it binds ``{host}:{port}``;
    its working folder is the agent's own for that target (the client's does not exist here).
    ``cpus`` (the bench's server CPUs, numbered on the client host) keeps only the CPUs this
    host lets the agent use; none left: the target is not pinned.
    """
    kind = fields.get("kind")
    if kind not in ("refapp", "app", "cmd"):
        raise ProbatoriumError("the agent starts refapp, app and cmd targets only")
    if kind == "cmd":
        argv = shlex.split(str(fields.get("cmd") or ""))
        if not argv or argv[0] != sys.executable or not placeable(TargetSpec(kind="cmd", cmd=fields["cmd"])):
            raise ProbatoriumError(f"the agent runs only commands of its own Python ({sys.executable}) "
                                   "that bind {host}:{port}")
        target_dir.mkdir(parents=True, exist_ok=True)
        fields = {**fields, "app_dir": str(target_dir)}
    cpus = sorted(set(fields.pop("cpus", None) or ()) & os.sched_getaffinity(0)) or None
    return TargetSpec(**fields, cpus=tuple(cpus) if cpus else None), cpus


class Agent:
    """The targets this agent started, by id."""

    def __init__(self, address: str, run_dir: Path, token: str) -> None:
        self.address = address
        self.run_dir = run_dir
        self.manifest = str(run_dir / "manifest.json")
        self.token = token
        self.targets: dict[str, RunningTarget] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, body: dict) -> dict:
        fields = {k: v for k, v in (body.get("spec") or {}).items() if k in SPEC_FIELDS}
        with self._lock:
            target_id = str(next(self._ids))
        folder = self.run_dir / "targets" / target_id
        spec, cpus = checked_spec(fields, folder / "cwd")
        target = start_target(spec, folder, bind_host=self.address)
        self._record(target)
        with self._lock:
            self.targets[target_id] = target
        return {"id": target_id, **self._where(target), "versions": target.versions, "cpus": cpus}

    def _record(self, target: RunningTarget) -> None:
        if target.pid is not None:
            hostside.record_process(self.manifest, target.pid, f"target {target.spec.describe()}")

    @staticmethod
    def _where(target: RunningTarget) -> dict:
        return {"host": target.host, "port": target.port, "pid": target.pid}

    def target(self, target_id: str) -> RunningTarget:
        with self._lock:
            found = self.targets.get(target_id)
        if found is None:
            raise KeyError(target_id)
        return found

    def act(self, target_id: str, action: str) -> dict:
        target = self.target(target_id)
        if action == "stop":
            target.stop()
            return {"stopped": True}
        if action == "restart":
            target.restart()
            self._record(target)
            return self._where(target)
        if action == "stderr":
            return {"lines": target.stderr_tail(200), "alive": target.alive(), "exit_code": target.exit_code()}
        if action == "state":  # what the remote watchdog polls: is the process this agent started still up
            return {"alive": target.alive(), "exit_code": target.exit_code(), "pid": target.pid,
                    "stopping": target.stopping}
        raise KeyError(action)

    def stop_all(self) -> None:
        for target in list(self.targets.values()):
            target.stop(grace=2.0)


def _handler(agent: Agent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args) -> None:  # stderr goes to the agent's log file
            sys.stderr.write("agent: " + (fmt % args) + "\n")

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _serve(self) -> None:
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {agent.token}".encode()):
                return self._answer(403, {"error": "wrong or missing bearer token"})
            length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                parts = [p for p in self.path.split("?")[0].split("/") if p]
                if parts == ["health"]:
                    return self._answer(200, {"ok": True, "targets": len(agent.targets)})
                if parts == ["targets"] and self.command == "POST":
                    return self._answer(200, agent.start(body))
                if len(parts) == 3 and parts[0] == "targets":
                    return self._answer(200, agent.act(parts[1], parts[2]))
                return self._answer(404, {"error": f"no endpoint {self.command} {self.path}"})
            except KeyError as exc:
                return self._answer(404, {"error": f"unknown target or action {exc}"})
            except (ProbatoriumError, TypeError, ValueError) as exc:
                return self._answer(500, {"error": str(exc)})

        do_GET = do_POST = _serve

    return Handler


def serve(address: str, run_dir: Path, token: str) -> None:
    """Listen on `address` (random port), write agent.json, serve until SIGTERM."""
    import signal

    agent = Agent(address, run_dir, token)
    server = ThreadingHTTPServer((address, 0), _handler(agent))
    server.daemon_threads = True
    port = server.server_address[1]
    hostside.record_process(agent.manifest, os.getpid(), f"host agent on {address}:{port}")
    info = {"address": address, "port": port, "pid": os.getpid(), "start_ticks": hostside.start_ticks(os.getpid())}
    tmp = run_dir / "agent.json.tmp"
    tmp.write_text(json.dumps(info))
    tmp.rename(run_dir / "agent.json")
    if threading.current_thread() is threading.main_thread():  # (the tests serve from a thread)
        signal.signal(signal.SIGTERM, lambda s, f: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        agent.stop_all()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probatorium.hosts.agent")
    parser.add_argument("--address", required=True)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--token-file", required=True, type=Path)
    args = parser.parse_args(argv)
    token = args.token_file.read_text().strip()
    args.token_file.unlink(missing_ok=True)  # read once: it never stays on the host's disk
    serve(args.address, args.run_dir, token)
    return 0


if __name__ == "__main__":
    sys.exit(main())

