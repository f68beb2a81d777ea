"""A small JSON Schema validator for response bodies (pure, standard library only).

Response conformance (I-API-SCHEMA) is judged with it both in the run and in
a dossier's repro.py (which must run on a bare ``python3``), so the two never
disagree. It covers what OpenAPI documents use in practice: type (3.0
``nullable`` and 3.1 type lists), enum, const, properties / required /
additionalProperties, items, string lengths and pattern, numeric bounds (both
dialects of exclusiveMinimum/Maximum), array and object sizes, allOf / anyOf /
oneOf / not. Unknown keywords are ignored (never a false alarm).
"""

from __future__ import annotations

import re


def _type_ok(value, t: str) -> bool:
    if t == "null":
        return value is None
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "string":
        return isinstance(value, str)
    if t == "array":
        return isinstance(value, list)
    if t == "object":
        return isinstance(value, dict)
    return True


def schema_errors(schema, value, at: str = "") -> list:
    """Every way `value` violates `schema`, as "<json pointer>: <what>" lines (empty: it conforms)."""
    if schema is True or not isinstance(schema, dict):
        return []
    if schema is False:
        return [f"{at or '/'}: no value is allowed here"]
    where = at or "/"
    if value is None and schema.get("nullable") is True:
        return []
    out: list = []
    declared = schema.get("type")
    if declared is not None:
        types = list(declared) if isinstance(declared, list) else [declared]
        if not any(_type_ok(value, t) for t in types):
            return [f"{where}: {type(value).__name__} {_short(value)} is not of type {'/'.join(map(str, types))}"]
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        out.append(f"{where}: {_short(value)} is not one of {schema['enum'][:8]}")
    if "const" in schema and value != schema["const"]:
        out.append(f"{where}: {_short(value)} is not {schema['const']!r}")
    if isinstance(value, str):
        if isinstance(schema.get("maxLength"), int) and len(value) > schema["maxLength"]:
            out.append(f"{where}: length {len(value)} > maxLength {schema['maxLength']}")
        if isinstance(schema.get("minLength"), int) and len(value) < schema["minLength"]:
            out.append(f"{where}: length {len(value)} < minLength {schema['minLength']}")
        if isinstance(schema.get("pattern"), str):
            try:
                if re.search(schema["pattern"], value) is None:
                    out.append(f"{where}: {_short(value)} does not match {schema['pattern']!r}")
            except re.error:
                pass
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out += _bounds(schema, value, where)
    if isinstance(value, list):
        if isinstance(schema.get("maxItems"), int) and len(value) > schema["maxItems"]:
            out.append(f"{where}: {len(value)} items > maxItems {schema['maxItems']}")
        if isinstance(schema.get("minItems"), int) and len(value) < schema["minItems"]:
            out.append(f"{where}: {len(value)} items < minItems {schema['minItems']}")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value[:1000]):
                out += schema_errors(schema["items"], item, f"{at}/{i}")
    if isinstance(value, dict):
        out += _object_errors(schema, value, at)
    for sub in schema.get("allOf") or []:
        out += schema_errors(sub, value, at)
    for key in ("anyOf", "oneOf"):
        alts = schema.get(key)
        if isinstance(alts, list) and alts:
            ok = sum(1 for sub in alts if not schema_errors(sub, value, at))
            if ok == 0 or (key == "oneOf" and ok > 1):
                out.append(f"{where}: matches {ok} of the {len(alts)} {key} alternatives")
    if isinstance(schema.get("not"), dict) and not schema_errors(schema["not"], value, at):
        out.append(f"{where}: matches a 'not' schema")
    return out


def _bounds(schema: dict, value, where: str) -> list:
    out = []
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if xlo is True:  # OpenAPI 3.0: a boolean modifier of minimum
        xlo, lo = lo, None
    if xhi is True:
        xhi, hi = hi, None
    if isinstance(lo, (int, float)) and not isinstance(lo, bool) and value < lo:
        out.append(f"{where}: {value} < minimum {lo}")
    if isinstance(hi, (int, float)) and not isinstance(hi, bool) and value > hi:
        out.append(f"{where}: {value} > maximum {hi}")
    if isinstance(xlo, (int, float)) and not isinstance(xlo, bool) and value <= xlo:
        out.append(f"{where}: {value} <= exclusiveMinimum {xlo}")
    if isinstance(xhi, (int, float)) and not isinstance(xhi, bool) and value >= xhi:
        out.append(f"{where}: {value} >= exclusiveMaximum {xhi}")
    return out


def _object_errors(schema: dict, value: dict, at: str) -> list:
    out = []
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    for name in schema.get("required") or []:
        if name not in value:
            out.append(f"{at or '/'}: required property {name!r} is missing")
    for name, sub in props.items():
        if name in value:
            out += schema_errors(sub, value[name], f"{at}/{name}")
    extra = schema.get("additionalProperties")
    for name in value:
        if name in props:
            continue
        if extra is False:
            out.append(f"{at or '/'}: property {name!r} is not allowed (additionalProperties: false)")
        elif isinstance(extra, dict):
            out += schema_errors(extra, value[name], f"{at}/{name}")
    return out


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
