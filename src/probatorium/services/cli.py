"""Entry points for ``probatorium services up|down|status [names]`` and
``probatorium cleanup``; the Typer wiring in probatorium/cli.py calls these.

``services up`` starts the services detached (they outlive the command, are
recorded in the manifest) and prints ``export NAME=value`` lines on stdout,
so ``eval "$(probatorium services up redis,postgres)"`` configures a shell.
Progress and errors go to stderr. Exit 0 on success, 2 on an infrastructure
or usage error (one line, never a traceback).
"""

from __future__ import annotations

import shlex
import sys

from probatorium.errors import ProbatoriumError, UsageError
from probatorium.jsonsummary import print_json
from probatorium.services.base import normalise_names
from probatorium.services.manager import (
    ServiceManager,
    cleanup_manifest,
    recorded_status,
    stop_recorded,
)

ACTIONS = ("up", "down", "status")


def _err(msg: str) -> None:
    print(f"probatorium: {msg}", file=sys.stderr, flush=True)


def services_command(action: str, names: list[str] | str | None = None, *, as_json: bool = False) -> int:
    try:
        if action not in ACTIONS:
            raise UsageError(f"unknown services action {action!r}: choose from {', '.join(ACTIONS)}")
        wanted = normalise_names(names or None)
        if action == "up":
            return _up(wanted, as_json)
        if action == "down":
            lines = stop_recorded(wanted)
            for line in lines:
                _err(line)
            if not lines:
                _err("services down: nothing recorded as running")
            if as_json:
                print_json("services", 0, {"action": "down", "stopped": lines})
            return 0
        return _status(wanted, as_json)
    except ProbatoriumError as e:
        _err(f"error: {e}")
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


def _up(wanted: list[str], as_json: bool) -> int:
    # Reuse a detached instance that is still alive and healthy (idempotent up).
    reuse = {s.name: s for s in recorded_status() if s.detached and s.alive and s.healthy}
    env: dict[str, str] = {}
    report: dict[str, dict] = {}
    to_start = [n for n in wanted if n not in reuse]
    for n in wanted:
        if n in reuse:
            env.update(reuse[n].env)
            report[n] = reuse[n].as_dict() | {"reused": True}
            _err(f"services up: {n} already running (pid {reuse[n].pid}, port {reuse[n].port})")
    if to_start:
        manager = ServiceManager(detached=True)
        infos = manager.up(to_start)
        for n, info in infos.items():
            env.update(info.env)
            report[n] = info.as_dict() | {"reused": False}
            _err(f"services up: {n} {info.version} pid {info.pid} on {info.host}:{info.port} "
                 f"({info.start_seconds:.2f}s) dir {info.data_dir}")
    if as_json:
        print_json("services", 0, {"action": "up", "services": report, "env": env})
    else:
        for k, v in env.items():
            print(f"export {k}={shlex.quote(v)}")
    return 0


def _status(wanted: list[str], as_json: bool) -> int:
    rows = [s for s in recorded_status() if s.name in wanted]
    if as_json:
        print_json("services", 0, {"action": "status", "services": [s.as_dict() for s in rows]})
        return 0
    if not rows:
        print("no services recorded as running")
        return 0
    for s in rows:
        state = "up" if s.alive and s.healthy else ("unhealthy" if s.alive else "dead")
        owner = "detached" if s.detached else f"run pid {s.owner_pid}"
        env = " ".join(f"{k}={v}" for k, v in s.env.items())
        print(f"{s.name:<10} {state:<9} pid {s.pid} port {s.port} ({owner}) {env}")
    return 0


def cleanup_command(*, include_live: bool = False, as_json: bool = False, extra: list[str] | None = None) -> int:
    """Undo the services manifest's leftovers; `extra` are lines of other undoing done already (netns)."""
    try:
        lines = cleanup_manifest(include_live=include_live) + list(extra or [])
    except ProbatoriumError as e:
        _err(f"error: {e}")
        return 2
    if as_json:
        return print_json("cleanup", 0, {"undone": lines})
    for line in lines:
        print(line)
    if not lines:
        print("cleanup: nothing to undo")
    return 0
