"""The `--json` envelope every command prints on stdout: one object, the same first keys everywhere.

``{"command": "bench", "exit_code": 0, "status": "ok", ...}``: ``command`` is
the subcommand, ``exit_code`` the process's exit status, ``status`` its word
(:data:`STATUS_WORDS`), then the command's own fields (docs/json.md). A usage
or infrastructure error (exit 2) prints nothing on stdout: one line on stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

#: exit status → word: 0 passed, 1 the command's verdict failed, 2 usage/infrastructure, 130 interrupted
STATUS_WORDS = {0: "ok", 1: "failed", 2: "error", 130: "interrupted"}


def envelope(command: str, exit_code: int, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The summary object: command, exit_code, status first, then ``fields`` (which never override them)."""
    out: dict[str, Any] = {"command": command, "exit_code": int(exit_code),
                           "status": STATUS_WORDS.get(int(exit_code), "error")}
    for key, value in (fields or {}).items():
        out.setdefault(key, value)
    return out


def print_json(command: str, exit_code: int, fields: Mapping[str, Any] | None = None, *, indent: int | None = 2) -> int:
    """Print the envelope on stdout (one object); return ``exit_code`` for the caller to exit with."""
    sys.stdout.write(json.dumps(envelope(command, exit_code, fields), indent=indent, default=str) + "\n")
    sys.stdout.flush()
    return exit_code
