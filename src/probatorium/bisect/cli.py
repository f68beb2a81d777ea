"""The `probatorium bisect` command behind cli.py: flags in, one check built, lines out."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UsageError
from .checks import CmdCheck, PredicateCheck, engine_for, find_cases
from .command import BisectRequest, run_bisect
from .releases import DEFAULT_INDEX


def build_check(*, package: str, predicate: str | None, cases: list[str], cmd_check: str | None, engine: str | None,
                refapp: str | None, app: str | None, app_dir: str | None, quiet_timeout: float,
                ready_timeout: float, check_timeout: float):
    """The one check the flags ask for; one UsageError line for a wrong combination."""
    if (predicate is None) == (cmd_check is None):
        raise UsageError("give exactly one of --predicate P [--case C] and --cmd-check 'CMD'")
    if cmd_check is not None:
        if cases or refapp or app or engine:
            raise UsageError("--case, --engine, --refapp and --app go with --predicate, not with --cmd-check")
        return CmdCheck(cmd_check, check_timeout)
    if refapp and app:
        raise UsageError("give at most one of --refapp and --app")
    if quiet_timeout <= 0 or ready_timeout <= 0:
        raise UsageError("--quiet-timeout and --ready-timeout must be positive")
    return PredicateCheck(predicate, find_cases(cases), engine or engine_for(package), refapp=refapp, app=app,
                          app_dir=app_dir, quiet_timeout=quiet_timeout, ready_timeout=ready_timeout)


def bisect_command(*, package: str, good: str, bad: str, check, index: str | None, pip_cache: Path | None,
                   deps: bool, prereleases: bool, yanked: bool, keep: Path | None, json_out: bool,
                   say=None) -> int:
    """Run the bisect and print it; 0 with an answer, 1 when the endpoints contradict the check."""
    say = say or (lambda m: print(m, file=sys.stderr if json_out else sys.stdout, flush=True))
    req = BisectRequest(package=package, good=good, bad=bad, check=check, index=index or DEFAULT_INDEX,
                        pip_cache=pip_cache, deps=deps, prereleases=prereleases, yanked=yanked, keep=keep)
    result = run_bisect(req, lambda line: say(line))
    if json_out:
        print(result.to_json())
    else:
        print(result.summary(), flush=True)
    return 1 if result.error else 0


__all__ = ["bisect_command", "build_check"]
