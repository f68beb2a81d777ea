"""The `probatorium bisect` command behind cli.py: flags in, one check built, lines out."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from ..errors import UsageError, error_line
from .checks import CmdCheck, IncidentCheck, PredicateCheck, ServedApp, engine_for, find_cases
from .incident import find_incident
from .command import BisectRequest, run_bisect
from .releases import DEFAULT_INDEX


def build_check(*, package: str, predicate: str | None, cases: list[str], cmd_check: str | None, engine: str | None,
                refapp: str | None, app: str | None, app_dir: str | None, quiet_timeout: float,
                ready_timeout: float, check_timeout: float, from_run: Path | None = None,
                incident: str | None = None):
    """The one check the flags ask for; one UsageError line for a wrong combination."""
    if (from_run is None) != (incident is None):
        raise UsageError("--from-run RUN_DIR and --incident ID go together")
    if sum(x is not None for x in (predicate, cmd_check, incident)) != 1:
        raise UsageError("give exactly one of --predicate P [--case C], --cmd-check 'CMD' and "
                         "--from-run RUN_DIR --incident ID")
    if quiet_timeout <= 0 or ready_timeout <= 0 or check_timeout <= 0:
        raise UsageError("--quiet-timeout, --ready-timeout and --check-timeout must be positive")
    if cmd_check is not None:
        if cases or refapp or app or engine:
            raise UsageError("--case, --engine, --refapp and --app go with --predicate, not with --cmd-check")
        return CmdCheck(cmd_check, check_timeout)
    if cases and incident is not None:
        raise UsageError("--case goes with --predicate; an incident replays its own case")
    if refapp and app:
        raise UsageError("give at most one of --refapp and --app")
    if incident is not None:
        found = find_incident(from_run, incident)
        if not (refapp or app):  # the incident's own target, unless the flags name another
            refapp, app, app_dir = found.refapp, found.app, app_dir or found.app_dir
        served = ServedApp(engine or found.engine, refapp=refapp, app=app, app_dir=app_dir,
                           ready_timeout=ready_timeout)
        return IncidentCheck(found.dossier, served, check_timeout)
    served = ServedApp(engine or engine_for(package), refapp=refapp, app=app, app_dir=app_dir,
                       ready_timeout=ready_timeout)
    return PredicateCheck(predicate, find_cases(cases), served, quiet_timeout=quiet_timeout)


def bisect_command(*, package: str, good: str, bad: str, check, index: str | None, pip_cache: Path | None,
                   deps: bool, prereleases: bool, yanked: bool, keep: Path | None, json_out: bool,
                   say=None) -> int:
    """Run the bisect and print it; 0 with an answer, 1 when the endpoints contradict the check."""
    say = say or (lambda m: print(m, file=sys.stderr if json_out else sys.stdout, flush=True))
    req = BisectRequest(package=package, good=good, bad=bad, check=check, index=index or DEFAULT_INDEX,
                        pip_cache=pip_cache, deps=deps, prereleases=prereleases, yanked=yanked, keep=keep)
    # SIGTERM ends the bisect like Ctrl-C: the probe's engine is stopped and the probe venvs removed.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_bisect(req, lambda line: say(line))
    except KeyboardInterrupt:  # the finally blocks have stopped the engine and removed the venvs
        print(error_line("interrupted: no answer (probes so far are printed above)"), file=sys.stderr, flush=True)
        return 130
    if json_out:
        print(result.to_json())
    else:
        print(result.summary(), flush=True)
    return 1 if result.error else 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


__all__ = ["bisect_command", "build_check"]
