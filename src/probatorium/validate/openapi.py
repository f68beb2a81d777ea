"""Minimal OpenAPI reading: the operations a target declares (method, path, response codes).

Tier 1 uses it to know which paths to sweep for response framing (a 204 or
304 route is where body-on-bodiless bugs live); the Markov and Tier 2 slices
build on the same loader: each operation also carries its operationId, its
parameters and its JSON request-body schema with every local `$ref` resolved
(a reference cycle resolves to an empty schema). The reading is
`api.spec.load_spec` in its lenient mode (no meta-schema validation, an
unresolvable reference becomes `{}`); a malformed file is a UsageError
(`api.spec.SpecError`) naming the file and the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api.spec import load_spec

METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    path: str  # as in the spec, with {params}
    responses: tuple[str, ...]  # declared status codes ("200", "204", "default", ...)
    operation_id: str = ""
    # Parameters (path-level merged with operation-level, $refs resolved): dicts with name, in, schema...
    parameters: tuple[dict, ...] = field(default=(), compare=False, hash=False)
    body_media: str | None = None  # the request body's media type (JSON preferred), if any
    body_schema: Any = field(default=None, compare=False, hash=False)  # resolved schema of that body
    body_required: bool = False

    @property
    def key(self) -> str:
        """`METHOD /path`, as tallies and markov.yaml name an operation."""
        return f"{self.method} {self.path}"

    @property
    def path_params(self) -> list[str]:
        """Names of the {params} in the path, in order."""
        return re.findall(r"\{([^{}]+)\}", self.path)

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


def resolve_refs(node: Any, doc: Any, _stack: tuple[str, ...] = ()) -> Any:
    """A copy of node with every local `$ref` ("#/...") replaced by its target.

    A reference cycle (a schema containing itself) resolves to `{}` at the
    point where it would recurse; non-local references are left as they are.
    """
    if isinstance(node, list):
        return [resolve_refs(x, doc, _stack) for x in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        if ref in _stack or len(_stack) > 32:
            return {}
        target: Any = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            else:
                return {}
        resolved = resolve_refs(target, doc, _stack + (ref,))
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        if siblings and isinstance(resolved, dict):
            resolved = {**resolved, **resolve_refs(siblings, doc, _stack)}
        return resolved
    return {k: resolve_refs(v, doc, _stack) for k, v in node.items()}


def load_operations(path: Path | str) -> list[Operation]:
    """Operations of an OpenAPI 3 document, in file order (read leniently through api.spec.load_spec)."""
    spec = load_spec(Path(path), strict=False)
    return [Operation(op.method, op.path, tuple(op.responses), operation_id=op.declared_id,
                      parameters=tuple(p.raw for p in op.parameters),
                      body_media=op.body.media_type if op.body else None,
                      body_schema=op.body.schema if op.body else None,
                      body_required=bool(op.body and op.body.required))
            for op in spec.operations if op.method.lower() in METHODS]
