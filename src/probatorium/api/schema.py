"""Pure helpers over JSON Schema objects as OpenAPI 3.0 and 3.1 write them.

Two dialects meet here: OpenAPI 3.0 (`nullable: true`, boolean
`exclusiveMinimum`) and 3.1 (plain JSON Schema 2020-12: type lists,
numeric `exclusiveMinimum`). `to_jsonschema` turns either into 2020-12 so
one validator judges both; `merge_all_of` folds `allOf` into one schema so a
generator sees every property and constraint at once (`oneOf`/`anyOf` stay
as alternatives); `types_of` names the JSON types a schema admits.
"""

from __future__ import annotations

from typing import Any

JSON_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")

# For allOf: the tighter bound wins.
_LOWER_BOUNDS = ("minimum", "minLength", "minItems", "minProperties", "exclusiveMinimum")
_UPPER_BOUNDS = ("maximum", "maxLength", "maxItems", "maxProperties", "exclusiveMaximum")


def _merge_two(a: dict, b: dict) -> dict:
    """The intersection of two schemas, as far as a generator needs it (b's other keywords win)."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif key == "properties" and isinstance(value, dict) and isinstance(out[key], dict):
            props = dict(out[key])
            for name, sub in value.items():
                props[name] = merge_all_of({"allOf": [props[name], sub]}) if name in props else sub
            out[key] = props
        elif key == "required" and isinstance(value, list) and isinstance(out[key], list):
            out[key] = list(dict.fromkeys([*out[key], *value]))
        elif key == "type":
            out[key] = _intersect_types(out[key], value)
        elif key == "enum" and isinstance(value, list) and isinstance(out[key], list):
            out[key] = [v for v in out[key] if v in value]
        elif key in _LOWER_BOUNDS and _both_numbers(out[key], value):
            out[key] = max(out[key], value)
        elif key in _UPPER_BOUNDS and _both_numbers(out[key], value):
            out[key] = min(out[key], value)
        elif key == "additionalProperties" and (value is False or out[key] is False):
            out[key] = False
        elif key == "nullable":
            out[key] = bool(out[key]) and bool(value)  # null only when every part admits it
        else:
            out[key] = value
    return out


def _both_numbers(a: Any, b: Any) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))


def _intersect_types(a: Any, b: Any) -> Any:
    la = a if isinstance(a, list) else [a]
    lb = b if isinstance(b, list) else [b]
    # an integer is a number: {"type": "number"} ∧ {"type": "integer"} is integer
    common = [t for t in la if t in lb or (t == "integer" and "number" in lb)]
    common += [t for t in lb if t == "integer" and "number" in la and t not in common]
    if not common:
        return b
    return common[0] if len(common) == 1 else common


def merge_all_of(schema: Any) -> Any:
    """`schema` with every `allOf` (at any depth) folded into its parent; other keywords kept."""
    if isinstance(schema, list):
        return [merge_all_of(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: merge_all_of(v) if k != "enum" and k != "const" and k != "example" else v
           for k, v in schema.items() if k != "allOf"}
    parts = schema.get("allOf")
    if isinstance(parts, list):
        merged: dict = {}
        for part in parts:
            part = merge_all_of(part)
            if isinstance(part, dict):
                merged = _merge_two(merged, part)
        out = _merge_two(merged, out)
    return out


def types_of(schema: Any) -> list[str]:
    """The JSON types `schema` admits (both dialects), in JSON_TYPES order; every type when unsaid."""
    if not isinstance(schema, dict):
        return list(JSON_TYPES)
    declared = schema.get("type")
    if declared is None:
        if "const" in schema:
            return [_type_name(schema["const"])]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return list(dict.fromkeys(_type_name(v) for v in schema["enum"]))
        if "properties" in schema or "additionalProperties" in schema or "required" in schema:
            found = ["object"]
        elif "items" in schema or "prefixItems" in schema:
            found = ["array"]
        else:
            return list(JSON_TYPES)
    else:
        found = list(declared) if isinstance(declared, list) else [declared]
    if schema.get("nullable") is True and "null" not in found:
        found.append("null")
    return [t for t in JSON_TYPES if t in found]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "propertyNames",
                  "if", "then", "else", "unevaluatedProperties", "unevaluatedItems", "additionalItems")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
# OpenAPI-only keywords a JSON Schema validator ignores or misreads; dropped before validation
_OPENAPI_ONLY = ("nullable", "discriminator", "xml", "externalDocs", "example", "readOnly", "writeOnly")


def to_jsonschema(schema: Any) -> Any:
    """`schema` (OpenAPI 3.0 or 3.1) as JSON Schema 2020-12: `nullable` becomes a `null` type,
    boolean `exclusiveMinimum`/`exclusiveMaximum` (3.0) become numeric bounds."""
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if k not in _OPENAPI_ONLY and not k.startswith("x-")}
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {n: to_jsonschema(s) for n, s in out[key].items()}
    for key in _SUBSCHEMA_ONE:
        if isinstance(out.get(key), dict):
            out[key] = to_jsonschema(out[key])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [to_jsonschema(s) for s in out[key]]
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(flag), bool):
            if out.pop(flag) and bound in out:
                out[flag] = out.pop(bound)
    if schema.get("nullable") is True:
        out = _admit_null(out)
    return out


def _admit_null(schema: dict) -> dict:
    declared = schema.get("type")
    if isinstance(declared, str) and declared != "null":
        schema = {**schema, "type": [declared, "null"]}
    elif isinstance(declared, list) and "null" not in declared:
        schema = {**schema, "type": [*declared, "null"]}
    if isinstance(schema.get("enum"), list) and None not in schema["enum"]:
        schema = {**schema, "enum": [*schema["enum"], None]}
    if declared is None and ("oneOf" in schema or "anyOf" in schema):
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema
