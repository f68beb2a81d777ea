"""Values from schemas: `generate` a valid one, list `mutations` of it, `check` one against a schema.

Everything is a pure function of the schema and a `random.Random`, so a
seeded request is reproducible. Schemas are those of `api.spec` (references
inlined, `allOf` folded) in either dialect (OpenAPI 3.0 `nullable`, 3.1 type
lists). `check` is jsonschema's 2020-12 validator on `schema.to_jsonschema`,
with format assertions for the formats a server can be expected to enforce
(uuid, date-time, date, email, ipv4, ipv6, int32, int64; others are
annotations). A mutation's `violates` is the keyword `check` reports the value
breaking — so a mutation marked as violating really fails `check` — or None
when the value is still valid (a boundary).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import random
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from .schema import merge_all_of, to_jsonschema, types_of

MAX_DEPTH = 6  # nesting beyond this generates the smallest valid value
VERY_LONG = 10_000  # the length of the "very long" string mutation
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UNICODE_SAMPLE = "ünïcødé-✓-𝄞-漢字-\u202eRTL-\u200b"  # combining, astral, CJK, bidi override, zero width
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass(frozen=True)
class Mutation:
    """A value derived from a schema: `violates` names the keyword it breaks, None when still valid."""

    label: str  # what was done, with the instance path: "name: maxLength + 1"
    value: Any
    violates: str | None


# ---------------------------------------------------------------------------------------
# check


def _checker() -> FormatChecker:
    fc = FormatChecker(formats=())

    def _int_range(lo: int, hi: int):
        return lambda v: not isinstance(v, int) or isinstance(v, bool) or lo <= v <= hi

    def _dt(v: Any) -> bool:
        if not isinstance(v, str) or not re.fullmatch(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)", v):
            return not isinstance(v, str)
        try:
            dt.datetime.fromisoformat(v.upper().replace("Z", "+00:00"))
        except ValueError:
            return False
        return True

    def _date(v: Any) -> bool:
        if not isinstance(v, str):
            return True
        try:
            return bool(re.fullmatch(r"\d{4}-\d\d-\d\d", v)) and bool(dt.date.fromisoformat(v))
        except ValueError:
            return False

    def _parses(fn):
        def ok(v: Any) -> bool:
            if not isinstance(v, str):
                return True
            try:
                fn(v)
            except ValueError:
                return False
            return True
        return ok

    fc.checks("uuid")(lambda v: not isinstance(v, str) or bool(
        re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", v)))
    fc.checks("date-time")(_dt)
    fc.checks("date")(_date)
    fc.checks("email")(lambda v: not isinstance(v, str) or bool(re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v)))
    fc.checks("ipv4")(_parses(ipaddress.IPv4Address))
    fc.checks("ipv6")(_parses(ipaddress.IPv6Address))
    fc.checks("int32")(_int_range(*INT32))
    fc.checks("int64")(_int_range(*INT64))
    return fc


FORMATS = _checker()
_VALIDATORS: OrderedDict[int, tuple[Any, Draft202012Validator]] = OrderedDict()


def _validator(schema: Any) -> Draft202012Validator:
    # keyed by identity (the schema object is held, so its id is not reused); bounded
    hit = _VALIDATORS.get(id(schema))
    if hit is not None and hit[0] is schema:
        _VALIDATORS.move_to_end(id(schema))
        return hit[1]
    v = Draft202012Validator(to_jsonschema(schema) if isinstance(schema, dict) else schema, format_checker=FORMATS)
    _VALIDATORS[id(schema)] = (schema, v)
    if len(_VALIDATORS) > 512:
        _VALIDATORS.popitem(last=False)
    return v


def _pointer(path: Any) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _errors(schema: Any, value: Any) -> list:
    return sorted(_validator(schema).iter_errors(value), key=lambda e: (list(map(str, e.absolute_path)), e.validator))


def check(schema: dict, value: Any) -> list[str]:
    """Why `value` does not satisfy `schema` (3.0 `nullable` honoured): "<instance path>: <message>" each."""
    return [f"{_pointer(e.absolute_path)}: {_short(e.message)}" for e in _errors(schema, value)]


def _short(message: str, limit: int = 300) -> str:
    # jsonschema quotes the whole instance: a 10 000-char mutation would flood a dossier
    return message if len(message) <= limit else f"{message[:limit - 40]}…{message[-36:]}"


def violated(schema: dict, value: Any) -> str | None:
    """The keyword of the first constraint `value` breaks ("maxLength", "required", ...), None when valid."""
    errs = _errors(schema, value)
    return str(errs[0].validator) if errs else None


# ---------------------------------------------------------------------------------------
# generate: scalars


def _int_bounds(schema: dict) -> tuple[int | None, int | None]:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    lo = None if lo is None or isinstance(lo, bool) else _ceil(lo)
    hi = None if hi is None or isinstance(hi, bool) else _floor(hi)
    if xlo is True and lo is not None:
        lo += 1  # OpenAPI 3.0: a boolean beside minimum
    elif isinstance(xlo, (int, float)) and not isinstance(xlo, bool):
        lo = max(lo, _floor(xlo) + 1) if lo is not None else _floor(xlo) + 1
    if xhi is True and hi is not None:
        hi -= 1
    elif isinstance(xhi, (int, float)) and not isinstance(xhi, bool):
        hi = min(hi, _ceil(xhi) - 1) if hi is not None else _ceil(xhi) - 1
    fmt = {"int32": INT32, "int64": INT64}.get(schema.get("format"))
    if fmt:
        lo = fmt[0] if lo is None else max(lo, fmt[0])
        hi = fmt[1] if hi is None else min(hi, fmt[1])
    return lo, hi


def _ceil(x: float) -> int:
    return int(x) if x == int(x) else int(x) + (1 if x > 0 else 0)


def _floor(x: float) -> int:
    return int(x) if x == int(x) or x > 0 else int(x) - 1


def _typical(lo: int | None, hi: int | None, rng: random.Random) -> tuple[int, int]:
    """A small range inside [lo, hi] where most generated numbers should fall."""
    if lo is None and hi is None:
        return 1, 1000
    if lo is None:
        return max(hi - 1000, min(hi, 1) if hi >= 1 else hi - 1000), hi
    if hi is None:
        return lo, lo + 1000
    return (lo, hi) if hi - lo <= 10**6 or rng.random() < 0.2 else (lo, lo + 1000)


def _gen_integer(schema: dict, rng: random.Random) -> int:
    lo, hi = _int_bounds(schema)
    a, b = _typical(lo, hi, rng)
    if a > b:
        raise ValueError(f"no integer satisfies {schema}")
    step = schema.get("multipleOf")
    if isinstance(step, int) and not isinstance(step, bool) and step > 0:
        first, last = -(-a // step), b // step
        if first > last:
            raise ValueError(f"no multiple of {step} in [{a}, {b}]")
        return rng.randint(first, last) * step
    return rng.randint(a, b)


def _gen_number(schema: dict, rng: random.Random) -> float | int:
    if isinstance(schema.get("multipleOf"), (int, float)) and schema["multipleOf"] > 0:
        step = schema["multipleOf"]
        inner = {k: v for k, v in schema.items() if k not in ("multipleOf", "format", "type")}
        lo, hi = _int_bounds({k: (v / step if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                              for k, v in inner.items()})
        a, b = _typical(lo, hi, rng)
        return rng.randint(a, b) * step
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(xlo, (int, float)) and not isinstance(xlo, bool):
        lo = max(lo, xlo) if lo is not None else xlo
    if isinstance(xhi, (int, float)) and not isinstance(xhi, bool):
        hi = min(hi, xhi) if hi is not None else xhi
    a = float(lo) if lo is not None else (float(hi) - 1000.0 if hi is not None else 0.0)
    b = float(hi) if hi is not None else a + 1000.0
    for _ in range(20):
        x = round(rng.uniform(a, b), 3)
        if (xlo is None or x > a) and (xhi is None or x < b) and a <= x <= b:
            return x
    return (a + b) / 2


def _gen_format(fmt: str, rng: random.Random) -> str | None:
    if fmt == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if fmt in ("date-time", "date"):
        moment = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=rng.randint(0, 10**8))
        return moment.date().isoformat() if fmt == "date" else moment.isoformat().replace("+00:00", "Z")
    if fmt == "email":
        return f"user{rng.randint(0, 10**6)}@example.com"
    if fmt in ("uri", "url", "iri"):
        return f"https://example.com/r/{rng.randint(0, 10**6)}"
    if fmt == "hostname":
        return f"host{rng.randint(0, 999)}.example.com"
    if fmt == "ipv4":
        return str(ipaddress.IPv4Address(rng.getrandbits(32)))
    if fmt == "ipv6":
        return str(ipaddress.IPv6Address(rng.getrandbits(128)))
    if fmt == "byte":
        return base64.b64encode(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 12)))).decode()
    return None


def _gen_string(schema: dict, rng: random.Random) -> str:
    lo = int(schema.get("minLength") or 0)
    hi = schema.get("maxLength")
    hi = int(hi) if isinstance(hi, (int, float)) and not isinstance(hi, bool) else None
    made = _gen_format(str(schema.get("format") or ""), rng)
    if made is not None and lo <= len(made) <= (hi if hi is not None else len(made)):
        return made
    if isinstance(schema.get("pattern"), str):
        for _ in range(10):
            made = from_pattern(schema["pattern"], rng)
            if made is not None and lo <= len(made) <= (hi if hi is not None else len(made)):
                return made
    top = hi if hi is not None else lo + 12
    top = min(top, lo + 24)
    if lo > top:
        raise ValueError(f"no string satisfies {schema}")
    return "".join(rng.choice(_ALNUM) for _ in range(rng.randint(max(lo, min(1, top)), top)))


# ---------------------------------------------------------------------------------------
# generate: strings from simple regular expressions


def from_pattern(pattern: str, rng: random.Random) -> str | None:
    """A string matching `pattern` (re.search semantics, as JSON Schema), or None when it is not simple."""
    import re._constants as C  # noqa: N812 — the stdlib's own names for the parse tree
    import re._parser as P  # noqa: N812

    try:
        tree = P.parse(pattern)
        out: list[str] = []
        _emit(tree, rng, out, C, {})
        made = "".join(out)
    except (re.error, _Unsupported, IndexError, ValueError):
        return None
    return made if re.search(pattern, made) else None


class _Unsupported(Exception):
    """A regex construct the generator does not produce (backreferences, lookarounds)."""


def _class_choices(items: list, C: Any) -> list[str]:
    chars: list[str] = []
    cats = {C.CATEGORY_DIGIT: "0123456789", C.CATEGORY_WORD: _ALNUM + "_", C.CATEGORY_SPACE: " ",
            C.CATEGORY_NOT_DIGIT: "abcXYZ_-", C.CATEGORY_NOT_WORD: "-. !", C.CATEGORY_NOT_SPACE: _ALNUM}
    negate = False
    for op, arg in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            chars.append(chr(arg))
        elif op is C.RANGE:
            chars.extend(chr(c) for c in range(arg[0], min(arg[1], arg[0] + 200) + 1))
        elif op is C.CATEGORY:
            chars.extend(cats.get(arg, ""))
        else:
            raise _Unsupported(op)
    if negate:
        banned = set(chars)
        chars = [c for c in _ALNUM + "-_. " if c not in banned]
    return chars


def _emit(tree: Any, rng: random.Random, out: list[str], C: Any, groups: dict) -> None:
    for op, arg in tree:
        if op is C.LITERAL:
            out.append(chr(arg))
        elif op is C.NOT_LITERAL:
            out.append(rng.choice([c for c in _ALNUM if ord(c) != arg]))
        elif op is C.ANY:
            out.append(rng.choice(_ALNUM))
        elif op is C.IN:
            out.append(rng.choice(_class_choices(arg, C)))
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", None)):
            lo, hi, sub = arg
            hi = lo + 4 if hi is C.MAXREPEAT else min(hi, lo + 4)
            for _ in range(rng.randint(lo, hi)):
                _emit(sub, rng, out, C, groups)
        elif op is C.SUBPATTERN:
            start = len(out)
            _emit(arg[-1], rng, out, C, groups)
            if arg[0] is not None:
                groups[arg[0]] = "".join(out[start:])
        elif op is C.BRANCH:
            _emit(rng.choice(arg[1]), rng, out, C, groups)
        elif op is C.GROUPREF and arg in groups:
            out.append(groups[arg])
        elif op is C.AT:
            continue  # anchors: the emitted text is the whole match
        else:
            raise _Unsupported(op)


# ---------------------------------------------------------------------------------------
# generate: composite values


def _pick_type(schema: dict, rng: random.Random) -> str:
    kinds = types_of(schema)
    if "integer" in kinds and "number" in kinds:
        kinds.remove("number")
    solid = [t for t in kinds if t != "null"]
    if not solid or ("null" in kinds and rng.random() < 0.1):
        return "null"
    if len(solid) == len(types_of({})) - 1:  # untyped: a plain scalar is the likeliest intent
        return rng.choice(["string", "integer", "boolean"])
    return rng.choice(solid)


def _gen_array(schema: dict, rng: random.Random, depth: int, hints: dict) -> list:
    lo = int(schema.get("minItems") or 0)
    hi = schema.get("maxItems")
    hi = min(int(hi), lo + 3) if isinstance(hi, int) else lo + 3
    if depth >= MAX_DEPTH:
        hi = lo
    prefix = schema.get("prefixItems") if isinstance(schema.get("prefixItems"), list) else []
    items = schema.get("items", {})
    if isinstance(items, dict) and "x-recursive" in items:
        hi = lo  # a tree: stop growing it
    out: list = []
    n = rng.randint(lo, max(lo, hi))
    for i in range(n * 4 if schema.get("uniqueItems") else n):
        if len(out) >= n:
            break
        sub = prefix[i] if i < len(prefix) else items
        value = _gen(sub if isinstance(sub, (dict, bool)) else {}, rng, depth + 1, hints)
        if not (schema.get("uniqueItems") and value in out):
            out.append(value)
    return out


def _gen_object(schema: dict, rng: random.Random, depth: int, hints: dict) -> dict:
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = [r for r in schema.get("required") or [] if isinstance(r, str)]
    request = bool(hints.get("$request"))
    optional_p = float(hints.get("$optional", 0.5)) if depth < MAX_DEPTH else 0.0
    out: dict = {}
    for name, sub in props.items():
        sub = sub if isinstance(sub, (dict, bool)) else {}
        skip = isinstance(sub, dict) and (sub.get("readOnly") if request else sub.get("writeOnly"))
        wanted = name in required and not skip
        if not wanted and (skip or (isinstance(sub, dict) and "x-recursive" in sub) or rng.random() >= optional_p):
            continue
        out[name] = hints[name] if name in hints else _gen(sub, rng, depth + 1, hints)
    extra = schema.get("additionalProperties", True)
    for name in required:
        if name not in out and name not in props:  # a required name the properties do not describe
            sub = extra if isinstance(extra, dict) else {}
            out[name] = hints[name] if name in hints else _gen(sub, rng, depth + 1, hints)
    need = int(schema.get("minProperties") or 0)
    while len(out) < need and extra is not False:
        out[f"extra{len(out)}"] = _gen(extra if isinstance(extra, dict) else {"type": "string"}, rng, depth + 1, hints)
    return out


def _gen_alternative(schema: dict, rng: random.Random, depth: int, hints: dict) -> Any:
    """oneOf / anyOf: one alternative (with the parent's other keywords), retried until the whole validates."""
    key = "oneOf" if isinstance(schema.get("oneOf"), list) and schema["oneOf"] else "anyOf"
    rest = {k: v for k, v in schema.items() if k not in (key, "discriminator")}
    choices = list(schema[key])
    value = None
    for attempt in range(12):
        alt = choices[rng.randrange(len(choices))]
        merged = merge_all_of({"allOf": [rest, alt]}) if isinstance(alt, dict) else rest
        value = _gen(merged, rng, depth + 1, hints)
        if attempt == 11 or not _errors(schema, value):
            break
    return value


def _gen(schema: Any, rng: random.Random, depth: int, hints: dict) -> Any:
    if schema is True or schema == {}:
        return rng.choice([rng.randint(0, 100), "x" + str(rng.randint(0, 100)), True])
    if schema is False:
        raise ValueError("no value satisfies the schema `false`")
    if "x-recursive" in schema:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    if "allOf" in schema:
        return _gen(merge_all_of(schema), rng, depth, hints)
    if (isinstance(schema.get("oneOf"), list) and schema["oneOf"]) or \
            (isinstance(schema.get("anyOf"), list) and schema["anyOf"]):
        return _gen_alternative(schema, rng, depth, hints)
    kind = _pick_type(schema, rng)
    if kind == "null":
        return None
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "integer":
        return _gen_integer(schema, rng)
    if kind == "number":
        return _gen_number(schema, rng)
    if kind == "string":
        return _gen_string(schema, rng)
    if kind == "array":
        return _gen_array(schema, rng, depth, hints)
    return _gen_object(schema, rng, depth, hints)


def generate(schema: dict, rng: random.Random, *, hints: dict | None = None) -> Any:
    """A value valid for `schema`, drawn from `rng` (the same seed gives the same value).

    `hints` maps a property name (at any depth) to the value to use there (a producer's
    binding); two reserved keys: `"$request": True` leaves out `readOnly` properties
    (`writeOnly` ones otherwise), `"$optional": p` is the chance to include each optional
    property (default 0.5). ValueError when the schema admits no value.
    """
    return _gen(schema, rng, 0, dict(hints or {}))


# ---------------------------------------------------------------------------------------
# mutations

MAX_MUTATION_DEPTH = 3  # how deep into nested objects/arrays mutations go
MAX_MUTATIONS = 256
_DROP = object()  # "remove this key" as a replacement value
# one representative of each JSON type, for the wrong-type mutations
_OF_TYPE = (("string", "not-a-number"), ("integer", 123456), ("number", 1.5), ("boolean", True),
            ("array", [1]), ("object", {"k": "v"}), ("null", None))
_BAD_FORMAT = {"uuid": "not-a-uuid", "date-time": "2020-13-45T25:61:00", "date": "2020-02-30",
               "email": "not-an-email", "ipv4": "999.1.1.1", "ipv6": "::zz", "int32": 2**31, "int64": 2**63}


def _replace(top: Any, path: tuple, value: Any) -> Any:
    """A copy of `top` with the node at `path` replaced by `value` (or removed, for _DROP)."""
    if not path:
        return value
    node = dict(top) if isinstance(top, dict) else list(top)
    head = path[0]
    if len(path) == 1 and value is _DROP:
        del node[head]
    else:
        node[head] = _replace(node[head], path[1:], value)
    return node


def _label(path: tuple, what: str) -> str:
    return f"{'/'.join(map(str, path))}: {what}" if path else what


def _scalar_candidates(s: dict, types: list[str]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if len(types) < len(types_of({})):
        out += [(f"wrong type {t}", v) for t, v in _OF_TYPE
                if t not in types and not (t == "number" and "integer" not in types and "number" in types)
                and not (t == "integer" and "number" in types)]
    if "null" in types and len(types) > 1:
        out.append(("null", None))  # an edge: admitted, and the value servers forget
    if isinstance(s.get("enum"), list) and s["enum"]:
        out.append(("not in enum", 987654321 if all(isinstance(e, int) for e in s["enum"]) else "zz-not-in-enum"))
    if "const" in s:
        out.append(("not the const", "zz-not-the-const" if s["const"] != "zz-not-the-const" else 0))
    if "string" in types:
        out += _string_candidates(s)
    if "integer" in types or "number" in types:
        out += _number_candidates(s, integer="number" not in types)
    return out


def _string_candidates(s: dict) -> list[tuple[str, Any]]:
    lo, hi = s.get("minLength"), s.get("maxLength")
    out: list[tuple[str, Any]] = [("empty string", ""), ("very long string", "a" * VERY_LONG),
                                  ("unicode string", UNICODE_SAMPLE)]
    if isinstance(lo, int) and lo > 0:
        out += [("minLength edge", "a" * lo), ("minLength - 1", "a" * (lo - 1))]
    if isinstance(hi, int):
        out += [("maxLength edge", "a" * hi), ("maxLength + 1", "a" * (hi + 1)),
                ("unicode at maxLength", (UNICODE_SAMPLE * (hi // len(UNICODE_SAMPLE) + 1))[:hi])]
    if s.get("format") in _BAD_FORMAT and isinstance(_BAD_FORMAT[s["format"]], str):
        out.append((f"invalid {s['format']}", _BAD_FORMAT[s["format"]]))
    if isinstance(s.get("pattern"), str):
        out.append(("pattern mismatch", "\u0000!~ "))
    return out


def _number_candidates(s: dict, integer: bool) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [("zero", 0), ("negative", -1), ("huge", 10**20 if integer else 1e300)]
    lo, hi = _int_bounds(s) if integer else (s.get("minimum"), s.get("maximum"))
    if integer:
        out.append(("not an integer", 1.5))
        if s.get("format") in ("int32", "int64"):
            out.append((f"{s['format']} overflow", _BAD_FORMAT[s["format"]]))
            lo = s.get("minimum") if lo == (INT32 if s["format"] == "int32" else INT64)[0] else lo
            hi = s.get("maximum") if hi == (INT32 if s["format"] == "int32" else INT64)[1] else hi
    step = 1 if integer else 0.5
    for name, bound, sign in (("minimum", lo, -1), ("maximum", hi, 1)):
        if isinstance(bound, (int, float)) and not isinstance(bound, bool):
            out += [(f"{name} edge", bound), (f"beyond {name}", bound + sign * step)]
    for name in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(s.get(name), (int, float)) and not isinstance(s.get(name), bool):
            out.append((f"at {name}", s[name]))
    return out


def _collection_candidates(s: dict, value: Any, types: list[str], rng: random.Random) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if "array" in types and isinstance(value, list):
        item = value[0] if value else generate(s.get("items") if isinstance(s.get("items"), dict) else {}, rng)
        lo, hi = s.get("minItems"), s.get("maxItems")
        out.append(("empty array", []))
        if isinstance(lo, int) and lo > 0:
            out.append(("minItems - 1", [item] * (lo - 1)))
        if isinstance(hi, int):
            out.append(("maxItems + 1", [item] * (hi + 1)))
        if s.get("uniqueItems") and value:
            out.append(("duplicate items", [item, item]))
    if "object" in types and isinstance(value, dict):
        for name in s.get("required") or []:
            if name in value:
                out.append((f"missing required {name}", _DROP_KEY(name)))
        if s.get("additionalProperties") is False:
            out.append(("extra property", {**value, "zzExtra": "x"}))
    return out


class _DROP_KEY(str):  # noqa: N801 — a marker: "this object without key <self>"
    """The object at this place, without the key it names."""


def _children(s: dict, value: Any) -> list[tuple[Any, dict]]:
    if isinstance(value, dict) and isinstance(s.get("properties"), dict):
        return [(k, s["properties"][k]) for k in value if isinstance(s["properties"].get(k), dict)]
    if isinstance(value, list) and value and isinstance(s.get("items"), dict):
        return [(0, s["items"])]
    return []


def _walk(s: Any, value: Any, path: tuple, depth: int, rng: random.Random, found: list) -> None:
    """Append (path, label, replacement) for this place and the places below it."""
    if not isinstance(s, dict) or "x-recursive" in s:
        return
    s = merge_all_of(s)
    types = types_of(s)
    for label, new in _scalar_candidates(s, types) + _collection_candidates(s, value, types, rng):
        if isinstance(new, _DROP_KEY):
            found.append((path + (str(new),), label, _DROP))
        else:
            found.append((path, label, new))
    if depth < MAX_MUTATION_DEPTH:
        for key, sub in _children(s, value):
            _walk(sub, value[key], path + (key,), depth + 1, rng, found)


def mutations(schema: dict, rng: random.Random) -> list[Mutation]:
    """Values near and beyond `schema`'s constraints, each built from one valid value by one change.

    Boundaries (still valid: `violates` None), wrong types, missing required properties, an
    extra property where `additionalProperties: false`, too long / very long (VERY_LONG chars)
    and unicode strings, invalid enums and formats, out-of-range numbers, at every place of
    the value down to MAX_MUTATION_DEPTH. `violates` is the keyword `check` reports broken.
    """
    base = generate(schema, rng, hints={"$optional": 1.0})
    found: list[tuple[tuple, str, Any]] = []
    _walk(schema, base, (), 0, rng, found)
    out, seen = [Mutation("valid", base, violated(schema, base))], {"valid"}
    for path, what, new in found:
        label = _label(path[:-1] if new is _DROP else path, what)
        if label in seen:
            continue
        seen.add(label)
        value = _replace(base, path, new)
        out.append(Mutation(label, value, violated(schema, value)))
        if len(out) >= MAX_MUTATIONS:
            break
    return out
