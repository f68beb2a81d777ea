"""Values from schemas: generated values validate, violating mutations fail `check`, all seeded."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probatorium.api.spec import load_spec
from probatorium.api.values import VERY_LONG, check, from_pattern, generate, mutations

REFAPPS = Path(__file__).resolve().parents[2] / "refapps"

ITEM = {
    "type": "object",
    "required": ["id", "name", "kind"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string", "minLength": 2, "maxLength": 8},
        "kind": {"type": "string", "enum": ["a", "b"]},
        "count": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 10},
        "price": {"type": "number", "exclusiveMinimum": 0, "maximum": 99.5},
        "when": {"type": "string", "format": "date-time"},
        "mail": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{2,4}-[0-9]+$"},
                 "minItems": 1, "maxItems": 3, "uniqueItems": True},
        "note": {"type": "string", "nullable": True},
        "big": {"type": "integer", "format": "int64"},
        "flag": {"type": "boolean"},
        "const": {"const": "fixed"},
        "owner": {"type": "object", "required": ["login"],
                  "properties": {"login": {"type": "string", "maxLength": 3}}},
    },
}
SCHEMAS = {
    "item": ITEM,
    "type list (3.1)": {"type": ["integer", "null"], "minimum": 5},
    "oneOf": {"oneOf": [{"type": "object", "required": ["r"], "properties": {"r": {"type": "number"}},
                         "additionalProperties": False},
                        {"type": "object", "required": ["w"], "properties": {"w": {"type": "integer"}},
                         "additionalProperties": False}]},
    "anyOf": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "integer", "minimum": 100}]},
    "allOf": {"allOf": [{"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}},
                        {"required": ["b"], "properties": {"b": {"type": "string", "format": "date"}}}]},
    "3.0 exclusive": {"type": "integer", "minimum": 1, "exclusiveMinimum": True, "maximum": 3,
                      "exclusiveMaximum": True},
    "multipleOf": {"type": "integer", "multipleOf": 7, "minimum": 10, "maximum": 40},
    "number multipleOf": {"type": "number", "multipleOf": 0.25, "minimum": 1, "maximum": 2},
    "nullable enum": {"type": "string", "enum": ["x", "y"], "nullable": True},
    "untyped": {},
    "array of objects": {"type": "array", "items": ITEM["properties"]["owner"], "minItems": 2},
    "minProperties": {"type": "object", "minProperties": 2, "additionalProperties": {"type": "integer"}},
}


def refapp_schemas() -> dict[str, dict]:
    out = {}
    for path in sorted(REFAPPS.glob("*/openapi.yaml")):
        for op in load_spec(path).operations:
            if op.body:
                out[f"{path.parent.name} {op.op_id} body"] = op.body.schema
            for p in op.parameters:
                out[f"{path.parent.name} {op.op_id} {p.name}"] = p.schema
            for r in op.responses.values():
                for media, schema in r.content.items():
                    out[f"{path.parent.name} {op.op_id} {r.status} {media}"] = schema
    return out


ALL = {**SCHEMAS, **refapp_schemas()}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**64 - 1))
def test_generated_values_validate(seed: int) -> None:
    for name, schema in ALL.items():
        value = generate(schema, random.Random(seed))
        assert check(schema, value) == [], (name, value)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**64 - 1))
def test_every_violating_mutation_fails_check(seed: int) -> None:
    for name, schema in SCHEMAS.items():
        for m in mutations(schema, random.Random(seed)):
            errors = check(schema, m.value)
            assert bool(errors) == (m.violates is not None), (name, m.label, errors)


def test_refapp_mutations_are_consistent_with_check() -> None:
    for name, schema in refapp_schemas().items():
        for m in mutations(schema, random.Random(0)):
            assert bool(check(schema, m.value)) == (m.violates is not None), (name, m.label)


def test_mutations_name_the_constraint_they_break() -> None:
    by_label = {m.label: m for m in mutations(ITEM, random.Random(7))}
    expected = {
        "valid": None, "missing required name": "required", "extra property": "additionalProperties",
        "wrong type array": "type", "name: maxLength + 1": "maxLength", "name: maxLength edge": None,
        "name: minLength - 1": "minLength", "name: minLength edge": None, "kind: not in enum": "enum",
        "count: beyond maximum": "maximum", "count: maximum edge": None, "count: beyond minimum": "minimum",
        "count: not an integer": "type", "price: at exclusiveMinimum": "exclusiveMinimum",
        "id: invalid uuid": "format", "big: int64 overflow": "format", "note: null": None,
        "when: invalid date-time": "format", "tags: maxItems + 1": "maxItems", "tags: minItems - 1": "minItems",
        "tags: duplicate items": "uniqueItems", "tags/0: pattern mismatch": "pattern",
        "owner: missing required login": "required", "owner/login: very long string": "maxLength",
        "const: not the const": "const",
    }
    for label, violates in expected.items():
        assert label in by_label, (label, sorted(by_label))
        assert by_label[label].violates == violates, (label, by_label[label])
    long = by_label["name: very long string"].value["name"]
    assert len(long) == VERY_LONG and check(ITEM, by_label["name: very long string"].value)[0].startswith("/name: ")
    assert all(len(msg) <= 320 for msg in check(ITEM, by_label["name: very long string"].value))
    assert any("unicode" in label for label in by_label)


def test_determinism() -> None:
    for schema in SCHEMAS.values():
        assert generate(schema, random.Random(3)) == generate(schema, random.Random(3))
        assert mutations(schema, random.Random(3)) == mutations(schema, random.Random(3))
    assert len({str(generate(ITEM, random.Random(s))) for s in range(20)}) > 10  # seeds matter


def test_hints_request_and_optional() -> None:
    schema = {"type": "object", "required": ["id", "parent"], "properties": {
        "id": {"type": "integer", "readOnly": True}, "parent": {"type": "integer"},
        "secret": {"type": "string", "writeOnly": True}, "opt": {"type": "string"}}}
    body = generate(schema, random.Random(1), hints={"parent": 42, "$request": True, "$optional": 1.0})
    assert body["parent"] == 42 and "id" not in body and "secret" in body and "opt" in body
    reply = generate(schema, random.Random(1), hints={"$optional": 0.0})
    assert set(reply) == {"id", "parent"}


def test_check_honours_nullable_and_reports_paths() -> None:
    assert check({"type": "string", "nullable": True}, None) == []
    assert check({"type": "string"}, None) == ["/: None is not of type 'string'"]
    assert check({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}},
                 {"a": [1, "x"]}) == ["/a/1: 'x' is not of type 'integer'"]


@pytest.mark.parametrize("pattern", [r"^[a-z]{2,4}-\d+$", r"^(ab|cd)+x?$", r"^[^0-9]{3}\.\w$", r"^#[0-9a-fA-F]{6}$"])
def test_simple_patterns(pattern: str) -> None:
    import re
    for seed in range(20):
        made = from_pattern(pattern, random.Random(seed))
        assert made is not None and re.search(pattern, made)
    assert from_pattern(r"(?=x)y", random.Random(0)) is None


def test_unsatisfiable_schema_is_an_error() -> None:
    with pytest.raises(ValueError):
        generate({"type": "integer", "minimum": 5, "maximum": 1}, random.Random(0))
