"""Minimal OpenAPI reading: the operations a target declares (method, path, response codes).

Tier 1 uses it to know which paths to sweep for response framing (a 204 or
304 route is where body-on-bodiless bugs live); the Markov and Tier 2 slices
build on the same loader. A malformed file is a UsageError naming the file
and the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import UsageError

METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    path: str  # as in the spec, with {params}
    responses: tuple[str, ...]  # declared status codes ("200", "204", "default", ...)

    @property
    def has_path_params(self) -> bool:
        return "{" in self.path

    def concrete_path(self, fill: str = "1") -> str:
        """The path with every {param} replaced by `fill`."""
        out, depth = [], 0
        for ch in self.path:
            if ch == "{":
                depth += 1
                if depth == 1:
                    out.append(fill)
            elif ch == "}":
                depth = max(0, depth - 1)
            elif depth == 0:
                out.append(ch)
        return "".join(out)


def load_operations(path: Path | str) -> list[Operation]:
    """Operations of an OpenAPI 3 document, in file order."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as e:
        raise UsageError(f"{p}: cannot read the OpenAPI file: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{p}:{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("paths"), dict):
        raise UsageError(f"{p}: not an OpenAPI document (no 'paths' mapping)")
    ops: list[Operation] = []
    for route, item in doc["paths"].items():
        if not isinstance(item, dict):
            continue
        for method in METHODS:
            op = item.get(method)
            if isinstance(op, dict):
                responses = op.get("responses") or {}
                codes = tuple(str(k) for k in responses) if isinstance(responses, dict) else ()
                ops.append(Operation(method.upper(), str(route), codes))
    return ops
