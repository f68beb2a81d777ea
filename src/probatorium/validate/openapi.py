"""Minimal OpenAPI reading: the operations a target declares (method, path, response codes).

Tier 1 uses it to know which paths to sweep for response framing (a 204 or
304 route is where body-on-bodiless bugs live); the Markov and Tier 2 slices
build on the same loader: each operation also carries its operationId, its
parameters and its JSON request-body schema with every local `$ref` resolved
(a reference cycle resolves to an empty schema). A malformed file is a
UsageError naming the file and the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError

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


def _body(op: dict, doc: dict) -> tuple[str | None, Any, bool]:
    rb = resolve_refs(op.get("requestBody"), doc)
    if not isinstance(rb, dict) or not isinstance(rb.get("content"), dict) or not rb["content"]:
        return None, None, False
    content = rb["content"]
    media = next((m for m in content if m.split(";")[0].strip().lower() == "application/json"), None) \
        or next((m for m in content if m.split(";")[0].strip().lower().endswith("+json")), None) \
        or next(iter(content))
    entry = content.get(media)
    schema = entry.get("schema") if isinstance(entry, dict) else None
    return str(media), schema, bool(rb.get("required"))


def _parameters(item: dict, op: dict, doc: dict) -> tuple[dict, ...]:
    merged: dict[tuple[str, str], dict] = {}
    for source in (item.get("parameters"), op.get("parameters")):
        for par in resolve_refs(source, doc) or []:
            if isinstance(par, dict) and isinstance(par.get("name"), str):
                merged[(str(par.get("in", "")), par["name"])] = par
    return tuple(merged.values())


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
                media, schema, required = _body(op, doc)
                ops.append(Operation(method.upper(), str(route), codes, operation_id=str(op.get("operationId") or ""),
                                     parameters=_parameters(item, op, doc), body_media=media, body_schema=schema,
                                     body_required=required))
    return ops
