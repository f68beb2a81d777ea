"""The config file: the flags a team repeats, kept in ``probatorium.toml`` or ``[tool.probatorium]``.

One table per command, keys named like its flags (``--results-dir`` →
``results-dir`` or ``results_dir``)::

    [validate]
    duration = "30s"
    engine = "hypercorn"
    slices = ["adversarial", "ws"]

Precedence: a flag on the command line > its environment knob > the config
file > the built-in default. The file is ``$PROBATORIUM_CONFIG`` when set,
else ``probatorium.toml`` in the current directory, else the
``[tool.probatorium]`` table of ``./pyproject.toml``. An unknown table or key,
or a value of the wrong kind, is one error line (exit 2).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from .errors import UsageError

#: Flags whose default comes from an environment knob: when the knob is set, it wins over the file.
ENV_KNOBS: dict[str, dict[str, str]] = {
    "validate": {"duration": "VALIDATE_DURATION", "concurrency": "VALIDATE_CONCURRENCY", "seed": "VALIDATE_SEED",
                 "matrix": "VALIDATE_MATRIX", "refapps": "VALIDATE_MATRIX_REFAPPS",
                 "engines": "VALIDATE_MATRIX_ENGINES", "engine": "VALIDATE_REFAPP_ENGINE",
                 "results_dir": "PROBATORIUM_RESULTS"},
    "fuzz": {"duration": "FUZZ_DURATION", "corpus": "FUZZ_CORPUS", "engine": "VALIDATE_REFAPP_ENGINE",
             "results_dir": "PROBATORIUM_RESULTS"},
    "validate-diff": {"strict": "VALIDATE_DIFF_STRICT", "hosts": "VALIDATE_DIFF_HOSTS",
                      "results_dir": "PROBATORIUM_RESULTS"},
    "bench": {"competitors": "BENCH_COMPETITORS", "cells": "BENCH_CELLS", "runs": "BENCH_RUNS",
              "duration": "BENCH_DURATION", "warmup": "BENCH_WARMUP", "driver": "PROBATORIUM_VALIDATE_DRIVER"},
    "bench-since": {"baseline": "BASELINE_VERSION", "threshold": "REGRESSION_THRESHOLD",
                    "results_dir": "PROBATORIUM_RESULTS"},
}


def find_config(cwd: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """(file, its probatorium table) or None when there is no config file."""
    here = Path(cwd or os.getcwd())
    explicit = os.environ.get("PROBATORIUM_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UsageError(f"PROBATORIUM_CONFIG={explicit}: no such file")
        data = _read(path)
        return path, (data.get("tool", {}).get("probatorium", {}) if path.name == "pyproject.toml" else data)
    own = here / "probatorium.toml"
    if own.is_file():
        return own, _read(own)
    pyproject = here / "pyproject.toml"
    if pyproject.is_file():
        table = _read(pyproject).get("tool", {}).get("probatorium")
        if table is not None:
            return pyproject, table
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: not a valid TOML file: {exc}") from None


def default_map(command, path: Path, table: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """The click ``default_map`` for ``command`` (the root group) from the file's table.

    Keys the environment already sets are left out, so an env knob beats the file.
    """
    environ = os.environ if env is None else env
    where = "[tool.probatorium]" if path.name == "pyproject.toml" else ""
    subcommands = getattr(command, "commands", {})
    out: dict[str, Any] = {}
    for section, values in table.items():
        if section not in subcommands:
            raise UsageError(f"{path}: unknown table {where}[{section}]; commands: {', '.join(sorted(subcommands))}")
        if not isinstance(values, dict):
            raise UsageError(f"{path}: {where}[{section}] must be a table of flag = value")
        params = _flags(subcommands[section])
        knobs = ENV_KNOBS.get(section, {})
        entries: dict[str, Any] = {}
        for key, value in values.items():
            param = params.get(key.replace("_", "-"))
            if param is None:
                raise UsageError(f"{path}: [{section}] unknown key {key!r}; keys: {', '.join(sorted(params))}")
            if knobs.get(param.name) and environ.get(knobs[param.name]) not in (None, ""):
                continue  # the environment knob wins
            entries[param.name] = _value(path, section, key, value, param)
        if entries:
            out[section] = entries
    return out


def _flags(command) -> dict[str, Any]:
    """Long flag name without dashes (``results-dir``) → its option, for one command."""
    out = {}
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option" or param.name == "help":
            continue
        longs = [o[2:] for o in param.opts if o.startswith("--")]
        if longs:
            out[longs[0]] = param
    return out


def _value(path: Path, section: str, key: str, value: Any, param) -> Any:
    """A TOML value as the flag would have been typed: lists become a,b; numbers text."""
    is_flag = getattr(param, "is_flag", False)
    if is_flag:
        if not isinstance(value, bool):
            raise UsageError(f"{path}: [{section}] {key} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or isinstance(value, dict):
        raise UsageError(f"{path}: [{section}] {key} takes a value like its flag --{key.replace('_', '-')}, "
                         f"got {value!r}")
    if getattr(param, "multiple", False):
        return [str(v) for v in (value if isinstance(value, list) else [value])]
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
