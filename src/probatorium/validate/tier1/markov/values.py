"""Values for Markov walkers: request bodies generated from JSON schemas, and values
captured from responses (JSON ids, Location headers) to fill later path parameters.

Pure functions over a seeded `random.Random`, so a walk is reproducible given
the same responses.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

PARAM_RE = re.compile(r"\{([^{}]+)\}")
ALNUM = string.ascii_lowercase + string.digits
MAX_DEPTH = 5


# ---------------------------------------------------------------------------------------
# Schema-driven generation


def _merge_all_of(schema: dict) -> dict:
    out: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema.get("allOf") or []:
        if not isinstance(part, dict):
            continue
        part = _merge_all_of(part) if "allOf" in part else part
        for k, v in part.items():
            if k == "properties" and isinstance(v, dict):
                out["properties"] = {**(out.get("properties") or {}), **v}
            elif k == "required" and isinstance(v, list):
                out["required"] = list(dict.fromkeys((out.get("required") or []) + v))
            else:
                out.setdefault(k, v)
    return out


def _text(rng: random.Random, lo: int, hi: int) -> str:
    n = rng.randint(lo, max(lo, hi))
    return "".join(rng.choice(ALNUM) for _ in range(n))


def _string(schema: dict, rng: random.Random, name: str) -> str:
    lo = int(schema.get("minLength") or 0)
    hi = schema.get("maxLength")
    hi = int(hi) if isinstance(hi, int) else lo + 16
    want_lo = max(lo, 1)
    want_hi = max(want_lo, min(hi, want_lo + 14))
    fmt = str(schema.get("format") or "").lower()
    lname = name.lower()
    if fmt == "email" or "email" in lname or (isinstance(schema.get("pattern"), str) and "@" in schema["pattern"]):
        local = _text(rng, 3, 10)
        value = f"{local}@example.com"
        if len(value) > hi:
            value = (local[: max(1, hi - 4)] + "@e.x")[:hi] if hi >= 3 else value[:hi]
        return value
    if fmt == "date-time":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:" \
               f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
    if fmt == "date":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "uuid":
        h = "%032x" % rng.getrandbits(128)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
    if fmt in ("uri", "url", "uri-reference"):
        return f"https://example.com/{_text(rng, 1, 12)}"
    if fmt in ("ipv4",):
        return f"192.0.2.{rng.randint(1, 254)}"
    return _text(rng, want_lo, want_hi)


def _number(schema: dict, rng: random.Random, integer: bool) -> int | float:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    lo = 0 if not isinstance(lo, (int, float)) else lo
    hi = lo + 1000 if not isinstance(hi, (int, float)) else hi
    if schema.get("exclusiveMinimum") is True:
        lo = lo + 1 if integer else lo + 1e-6
    elif isinstance(schema.get("exclusiveMinimum"), (int, float)):
        lo = schema["exclusiveMinimum"] + (1 if integer else 1e-6)
    if schema.get("exclusiveMaximum") is True:
        hi = hi - 1 if integer else hi - 1e-6
    elif isinstance(schema.get("exclusiveMaximum"), (int, float)):
        hi = schema["exclusiveMaximum"] - (1 if integer else 1e-6)
    if hi < lo:
        hi = lo
    if integer:
        return rng.randint(int(lo), int(hi))
    return round(rng.uniform(float(lo), float(hi)), 3)


def generate(schema: Any, rng: random.Random, *, name: str = "", depth: int = 0,
             fill: dict[str, str] | None = None) -> Any:
    """A value that satisfies the schema's common keywords (type, properties/required, enum,
    const, formats, length and range limits, allOf/oneOf/anyOf). Object properties whose name
    matches a captured value (`fill`) get that value."""
    if not isinstance(schema, dict) or not schema:
        return _text(rng, 1, 12)
    if "allOf" in schema:
        schema = _merge_all_of(schema)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return rng.choice(enum)
    for alt in ("oneOf", "anyOf"):
        opts = [o for o in schema.get(alt) or [] if isinstance(o, dict)]
        if opts:
            return generate(rng.choice(opts), rng, name=name, depth=depth, fill=fill)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ is None:
        typ = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if typ == "object":
        if depth >= MAX_DEPTH:
            return {}
        props = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        out: dict[str, Any] = {}
        for pname, pschema in props.items():
            if fill and pname in fill:
                v = fill[pname]
                ptype = pschema.get("type") if isinstance(pschema, dict) else None
                out[pname] = int(v) if ptype == "integer" and v.lstrip("-").isdigit() else v
            elif pname in required or rng.random() < 0.5:
                out[pname] = generate(pschema, rng, name=pname, depth=depth + 1, fill=fill)
        return out
    if typ == "array":
        if depth >= MAX_DEPTH:
            return []
        lo = int(schema.get("minItems") or 0)
        hi = schema.get("maxItems")
        hi = int(hi) if isinstance(hi, int) else lo + 3
        n = rng.randint(lo, max(lo, min(hi, lo + 3)))
        return [generate(schema.get("items") or {}, rng, name=name, depth=depth + 1, fill=fill) for _ in range(n)]
    if typ == "integer":
        return _number(schema, rng, True)
    if typ == "number":
        return _number(schema, rng, False)
    if typ == "boolean":
        return rng.random() < 0.5
    if typ == "null":
        return None
    return _string(schema, rng, name)


def body_bytes(media: str | None, schema: Any, rng: random.Random,
               fill: dict[str, str] | None = None) -> tuple[bytes, str]:
    """(body, content type) for an operation's request body."""
    base = (media or "application/json").split(";")[0].strip().lower()
    if base == "application/json" or base.endswith("+json"):
        value = generate(schema if schema is not None else {"type": "object"}, rng, fill=fill)
        return json.dumps(value, separators=(",", ":")).encode(), "application/json"
    if base == "application/x-www-form-urlencoded" and isinstance(schema, dict):
        from urllib.parse import urlencode

        value = generate(schema, rng, fill=fill)
        pairs = value.items() if isinstance(value, dict) else []
        return urlencode([(k, v if isinstance(v, str) else json.dumps(v)) for k, v in pairs]).encode(), base
    text = _text(rng, 4, 32).encode()
    return text, "text/plain" if base in ("*/*", "text/*") else base


# ---------------------------------------------------------------------------------------
# Captured values: bindings of path parameters that name a real resource together


def template_regex(template: str) -> tuple[re.Pattern[str], list[str]]:
    names = PARAM_RE.findall(template)
    pattern = "^" + "".join(
        re.escape(part) if i % 2 == 0 else "([^/?#]+)" for i, part in enumerate(PARAM_RE.split(template))
    ) + "/?$"
    return re.compile(pattern), names


class Templates:
    """The parameterised paths of the model and the spec, to read captured values against."""

    def __init__(self, templates: Iterable[str]) -> None:
        self.templates = sorted({t for t in templates if "{" in t}, key=lambda t: (-t.count("/"), t))
        self.compiled = [(t, *template_regex(t)) for t in self.templates]
        self.param_names = {n for t in self.templates for n in PARAM_RE.findall(t)}

    def match(self, path: str) -> dict[str, str] | None:
        """Path parameters read from a concrete path (e.g. a Location header)."""
        for _t, rx, names in self.compiled:
            m = rx.match(path)
            if m and len(set(names)) == len(names):
                return dict(zip(names, m.groups()))
        return None

    def item_param(self, template: str) -> str | None:
        """For a collection path (`/api/users`), the param naming one item (`id` of `/api/users/{id}`);
        for an item path (`/api/users/{id}`), its own last param."""
        base = template.rstrip("/")
        if base.endswith("}"):
            return PARAM_RE.findall(base)[-1]
        for t in self.templates:
            rest = t[len(base):] if t.startswith(base + "/") else None
            if rest is not None and re.fullmatch(r"/\{[^{}/]+\}/?", rest):
                return PARAM_RE.findall(rest)[0]
        return None


def captures(templates: Templates, op_path: str, used: dict[str, str], status: int,
             location: bytes | None, body: bytes, content_type: bytes | None,
             max_list_items: int = 2) -> list[dict[str, str]]:
    """Bindings learned from a 2xx response: Location header → params of the matching template;
    JSON `id` → the item param of op_path; JSON `<param>` keys (e.g. `post_id`) → that param.
    Each binding includes the parameters the request itself used (same resource family)."""
    out: list[dict[str, str]] = []
    if location:
        loc = location.decode("latin-1").strip()
        path = urlsplit(loc).path if "://" in loc or loc.startswith("//") else loc.split("?", 1)[0]
        got = templates.match(path)
        if got:
            out.append(got)
    ctype = (content_type or b"").split(b";")[0].strip().lower()
    if body and (ctype == b"application/json" or ctype.endswith(b"+json") or (not ctype and body[:1] in b"[{")):
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            doc = None
        items: list[dict] = []
        if isinstance(doc, dict):
            items = [doc]
        elif isinstance(doc, list):
            items = [x for x in doc if isinstance(x, dict)][-max_list_items:]
        item_param = templates.item_param(op_path)
        list_like = isinstance(doc, list)
        for obj in items:
            b = dict(used)
            if list_like and item_param is not None and op_path.rstrip("/").endswith("}"):
                continue  # a list under an item path: its ids are not that item's
            idv = obj.get("id")
            if item_param is not None and isinstance(idv, (int, str)) and not isinstance(idv, bool) and str(idv):
                b[item_param] = str(idv)
            for k, v in obj.items():
                if k in templates.param_names and k != "id" and isinstance(v, (int, str)) \
                        and not isinstance(v, bool) and str(v):
                    b[k] = str(v)
            if b != used:
                out.append(b)
    return out


class Bindings:
    """A bounded pool of captured bindings (param name → value), newest last."""

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self.items: list[dict[str, str]] = []

    def add(self, binding: dict[str, str]) -> bool:
        if not binding:
            return False
        if binding in self.items:
            self.items.remove(binding)
            self.items.append(binding)
            return False
        self.items.append(binding)
        del self.items[: -self.limit]
        return True

    def can_fill(self, params: list[str]) -> bool:
        return not params or any(set(params) <= b.keys() for b in self.items)

    def choose(self, params: list[str], rng: random.Random) -> dict[str, str] | None:
        if not params:
            return {}
        cands = [b for b in self.items if set(params) <= b.keys()]
        if not cands:
            return None
        pick = cands[-1] if rng.random() < 0.7 else rng.choice(cands)
        return {p: pick[p] for p in params}

    def forget(self, used: dict[str, str]) -> int:
        """Drop every binding naming that resource (or one below it); return how many."""
        if not used:
            return 0
        before = len(self.items)
        self.items = [b for b in self.items if not (used.items() <= b.items())]
        return before - len(self.items)

    def clear(self) -> None:
        self.items.clear()
