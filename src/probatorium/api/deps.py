"""Producer → consumer dependencies between the operations of an `ApiSpec` (RESTler's inference).

A consumer's parameter (path, query, header, cookie, or a top-level field of
its JSON body) is fed by a producer operation's answer. The rules, in the
order their producers are offered:

1. annotation — an entry of the annotations file (docs/fuzz.md, "Dependencies");
2. link — an OpenAPI `links` entry of one of the producer's responses;
3. collection — a POST/PUT on the consumer's parent collection (`POST /items`
   for `/items/{id}`) whose 2xx body has a field named like the parameter, or
   `id` when the parameter is an identifier (`id`, `itemId`, `item_id`);
4. location — the `Location` header of such a collection create, for the
   last path parameter;
5. name — a field with the parameter's own (identifier-like, not generic)
   name: `counter` → `counter`, `X-CSRF-Token` → `csrf_token`, in any
   operation's 2xx body (of a compatible type);
6. stem — `itemId` / `item_id` fed by the `id` of a POST/PUT whose last
   literal path segment names the resource (`POST /items`);
7. credential — an API key the operation's security requirement names (an
   `apiKey` scheme, `X-API-Key` in a header or the query) fed by the field
   ending its name (`key`) of a create on the collection naming it
   (`POST /api/keys`), after the name rule (a field `api_key`).

A producer never feeds a name it consumes itself in its own path (it echoes it,
it cannot create it). Parameter names are plain (`id`); a body field is
`body:/<field>`. Sources are `body:/json/pointer`, `header:<Name>`, or, for a
link that forwards the producer's own request, `request:<location>.<name>`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError
from .schema import types_of
from .spec import ApiSpec, Operation, escape

CREATORS = ("POST", "PUT")
# Names whose meaning depends on the resource: only the collection rule may feed them.
GENERIC = frozenset({"id", "uuid", "key", "name", "slug", "pk"})
_IDENT_SUFFIXES = ("id", "uuid", "key", "token", "slug", "ref", "pk")
_RULE_RANK = {"annotation": 0, "link": 1, "collection": 2, "location": 3, "name": 4, "stem": 5, "credential": 6}


@dataclass(frozen=True)
class Producer:
    """Where a consumer's value comes from: the producing operation and the place in its answer."""

    op_id: str
    source: str  # "body:/id", "header:Location", "request:path.id"
    rule: str = field(default="", compare=False)  # which inference rule found it (see the module docstring)


@dataclass(frozen=True)
class Consumer:
    """An operation parameter a producer feeds."""

    op_id: str
    param: str  # "id", or "body:/user_id" for a body field
    source: str


@dataclass(frozen=True)
class Edge:
    """One inferred dependency: `producer --source--> consumer.param`."""

    producer: str
    source: str
    consumer: str
    param: str
    rule: str

    def line(self) -> str:
        return f"{self.producer} --{self.source}--> {self.consumer}.{self.param}"


def normalize(name: str) -> str:
    """A parameter or field name for comparison: lower case, no separators, no `x-` header prefix."""
    low = name.lower()
    if low.startswith("x-"):
        low = low[2:]
    return re.sub(r"[^0-9a-z]", "", low)


def _identifier_like(name: str) -> bool:
    return normalize(name).endswith(_IDENT_SUFFIXES)


def _stem(name: str) -> str:
    """`itemId` / `item_id` / `item-uuid` → `item`; "" when the name is no resource identifier."""
    m = re.fullmatch(r"(.+?)[_-]?(id|Id|ID|uuid|Uuid|UUID|pk)", name)
    return normalize(m.group(1)) if m else ""


def _singular(word: str) -> str:
    w = normalize(word)
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("ses", "xes", "zes", "ches", "shes")):
        return w[:-2]
    return w[:-1] if w.endswith("s") and not w.endswith("ss") else w


def _template(path: str) -> str:
    """The path with every {name} as {} and no trailing '/', for comparing templates."""
    return re.sub(r"\{[^{}]*\}", "{}", path).rstrip("/") or "/"


def _collection(path: str, param: str) -> tuple[str, str] | None:
    """(template of the parent collection, its last literal segment) of `{param}` in `path`."""
    segments = path.split("/")
    for i, seg in enumerate(segments):
        if seg == "{" + param + "}" and i > 0:
            parent = "/".join(segments[:i])
            literal = segments[i - 1] if not segments[i - 1].startswith("{") else ""
            return _template(parent), literal
    return None


def _scalar(schema: Any) -> bool:
    return any(t in ("string", "integer", "number", "boolean") for t in types_of(schema))


def compatible(value_schema: Any, param_schema: Any) -> bool:
    """Can a value of `value_schema` be sent where `param_schema` is expected (path values are text)?"""
    vt, pt = set(types_of(value_schema)), set(types_of(param_schema))
    if not _scalar(value_schema):
        return False
    if "string" in pt:
        return True
    if "number" in pt:
        pt.add("integer")
    return bool(vt & pt - {"null"})


def _fields(op: Operation) -> list[tuple[str, str, dict]]:
    """(pointer, name, schema) of the top-level fields (and one envelope level) of op's 2xx JSON bodies."""
    out: dict[str, tuple[str, str, dict]] = {}
    for resp in op.responses.values():
        if not resp.status.startswith("2"):
            continue
        for media, schema in resp.content.items():
            if "json" not in media.lower() or not isinstance(schema, dict):
                continue
            for name, sub in (schema.get("properties") or {}).items():
                if not isinstance(sub, dict):
                    continue
                out.setdefault(f"/{escape(name)}", (f"/{escape(name)}", name, sub))
                for inner, s2 in (sub.get("properties") or {}).items():
                    if isinstance(s2, dict):
                        ptr = f"/{escape(name)}/{escape(inner)}"
                        out.setdefault(ptr, (ptr, inner, s2))
    return list(out.values())


def _has_location(op: Operation) -> bool:
    return any(r.status.startswith("2") and any(h.lower() == "location" for h in r.headers)
               for r in op.responses.values())


@dataclass(frozen=True)
class _Slot:
    """A consumer parameter: its key, name, where it is, its schema, whether it is required."""

    key: str
    name: str
    location: str
    schema: dict
    required: bool


def slots(op: Operation) -> list[_Slot]:
    """Every parameter of `op` a producer may feed: its parameters, then its JSON body's top-level fields."""
    out = [_Slot(p.name, p.name, p.location, p.schema, p.required) for p in op.parameters]
    if op.body and isinstance(op.body.schema, dict) and "json" in op.body.media_type.lower():
        required = set(op.body.schema.get("required") or [])
        for name, sub in (op.body.schema.get("properties") or {}).items():
            if isinstance(sub, dict) and not sub.get("readOnly"):
                out.append(_Slot(f"body:/{escape(name)}", name, "body", sub, name in required))
    return out


def credential_slots(spec: ApiSpec, op: Operation) -> list[_Slot]:
    """The API keys `op`'s security requirement names (an `apiKey` scheme in a header or the
    query), as slots keyed by the header or query parameter's name: a producer may feed them."""
    out: list[_Slot] = []
    for requirement in op.security:
        for scheme_name in requirement if isinstance(requirement, dict) else ():
            scheme = spec.security_schemes.get(scheme_name) or {}
            if scheme.get("type") != "apiKey" or scheme.get("in") not in ("header", "query") \
                    or not isinstance(scheme.get("name"), str) or not scheme["name"]:
                continue
            slot = _Slot(scheme["name"], scheme["name"], scheme["in"], {"type": "string"}, True)
            if slot not in out:
                out.append(slot)
    return out


def _consumes_in_path(op: Operation, name: str) -> bool:
    return any(normalize(p) == normalize(name) for p in op.path_params)


# ---------------------------------------------------------------------------------------
# The inference rules: each yields (producer op_id, source) for one consumer slot


def _rule_collection(spec: ApiSpec, op: Operation, slot: _Slot) -> list[tuple[str, str, str]]:
    if slot.location != "path":
        return []
    parent = _collection(op.path, slot.name)
    if parent is None:
        return []
    wanted = {normalize(slot.name)} | ({"id"} if _stem(slot.name) or normalize(slot.name) == "id" else set())
    last = op.path_params[-1] == slot.name if op.path_params else False
    out = []
    for p in spec.operations:
        if p is op or p.method not in CREATORS or _template(p.path) != parent[0]:
            continue
        for ptr, name, schema in _fields(p):
            if ptr.count("/") == 1 and normalize(name) in wanted and compatible(schema, slot.schema):
                out.append((p.op_id, f"body:{ptr}", "collection"))
        if last and _has_location(p):
            header = next(h for r in p.responses.values() if r.status.startswith("2")
                          for h in r.headers if h.lower() == "location")
            out.append((p.op_id, f"header:{header}", "location"))
    return out


def _rule_name(spec: ApiSpec, op: Operation, slot: _Slot) -> list[tuple[str, str, str]]:
    if normalize(slot.name) in GENERIC or not (slot.location == "path" or _identifier_like(slot.name)):
        return []
    out = []
    for p in spec.operations:
        if p is op or _consumes_in_path(p, slot.name):
            continue
        for ptr, name, schema in _fields(p):
            if normalize(name) == normalize(slot.name) and compatible(schema, slot.schema):
                out.append((p.op_id, f"body:{ptr}", "name"))
    return out


def _rule_stem(spec: ApiSpec, op: Operation, slot: _Slot) -> list[tuple[str, str, str]]:
    stem = _stem(slot.name)
    if not stem:
        return []
    out = []
    for p in spec.operations:
        literals = [s for s in p.path.split("/") if s and not s.startswith("{")]
        if p is op or p.method not in CREATORS or not literals or _singular(literals[-1]) != stem:
            continue
        if p.path.rstrip("/").endswith("}"):
            continue  # an item path, not the collection
        for ptr, name, schema in _fields(p):
            if ptr == "/id" and compatible(schema, slot.schema):
                out.append((p.op_id, "body:/id", "stem"))
    return out


def _rule_credential(spec: ApiSpec, op: Operation, slot: _Slot) -> list[tuple[str, str, str]]:
    """An API key (`X-API-Key`) issued by a create on the collection that names it (`POST
    /api/keys`, `POST /api-keys`): the field of its 2xx body whose name ends the key's name (`key`)."""
    want = normalize(slot.name)
    out = []
    for p in spec.operations:
        literals = [s for s in p.path.split("/") if s and not s.startswith("{")]
        if p is op or p.method not in CREATORS or not literals or p.path.rstrip("/").endswith("}"):
            continue
        if want not in (_singular(literals[-1]), normalize("".join(literals[:-1])) + _singular(literals[-1])):
            continue
        for ptr, name, schema in _fields(p):
            if ptr.count("/") == 1 and want.endswith(normalize(name)) and normalize(name) not in GENERIC - {"key"} \
                    and compatible(schema, slot.schema):
                out.append((p.op_id, f"body:{ptr}", "credential"))
    return out


_LINK_EXPR = re.compile(r"^\$response\.body#(?P<ptr>/.*)?$|^\$response\.header\.(?P<hdr>[!#$%&'*+.^_`|~0-9A-Za-z-]+)$"
                        r"|^\$request\.(?P<loc>path|query|header)\.(?P<name>.+)$")


def _link_source(expr: Any) -> str | None:
    m = _LINK_EXPR.match(str(expr).strip()) if isinstance(expr, str) else None
    if not m:
        return None
    if m.group("hdr"):
        return f"header:{m.group('hdr')}"
    if m.group("loc"):
        return f"request:{m.group('loc')}.{m.group('name')}"
    return f"body:{m.group('ptr') or ''}"


def _link_target(spec: ApiSpec, link: dict) -> Operation | None:
    if link.get("operationId"):
        return next((o for o in spec.operations if o.declared_id == link["operationId"]
                     or o.op_id == link["operationId"]), None)
    ref = str(link.get("operationRef") or "")
    m = re.search(r"#/paths/([^/]+)/(\w+)$", ref)
    if not m:
        return None
    path = m.group(1).replace("~1", "/").replace("~0", "~")
    return next((o for o in spec.operations if o.path == path and o.method == m.group(2).upper()), None)


def _link_edges(spec: ApiSpec) -> list[Edge]:
    out = []
    for p in spec.operations:
        for link in p.links.values():
            target = _link_target(spec, link)
            if target is None:
                continue
            for pname, expr in (link.get("parameters") or {}).items():
                source = _link_source(expr)
                pname = str(pname).split(".", 1)[1] if re.match(r"^(path|query|header|cookie)\.", str(pname)) \
                    else str(pname)
                if source and any(s.key == pname for s in slots(target)):
                    out.append(Edge(p.op_id, source, target.op_id, pname, "link"))
            body_source = _link_source(link.get("requestBody"))
            if body_source and target.body:
                out.append(Edge(p.op_id, body_source, target.op_id, "body:", "link"))
    return out


# ---------------------------------------------------------------------------------------
# Annotations


def load_annotations(path: Path | str) -> list[dict]:
    """The entries of an annotations file (YAML or JSON; docs/fuzz.md, "Dependencies")."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise UsageError(f"{p}: cannot read the annotations file: {e.strerror or e}") from None
    try:
        data = json.loads(text) if text.lstrip().startswith(("{", "[")) else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise UsageError(f"{p}: not YAML or JSON: {str(e).splitlines()[0]}") from None
    return _entries(data, str(p))


def _entries(data: Any, label: str) -> list[dict]:
    if isinstance(data, dict):
        data = data.get("dependencies", data.get("x-probatorium-dependencies"))
    if data is None:
        return []
    if not isinstance(data, list):
        raise UsageError(f"{label}: annotations must be a list of {{producer, field, consumer, param}} entries")
    for i, entry in enumerate(data):
        missing = [k for k in ("producer", "field", "consumer", "param") if not isinstance(entry, dict)
                   or not isinstance(entry.get(k), str) or not entry.get(k)]
        if missing:
            raise UsageError(f"{label}: entry {i}: missing or not a string: {', '.join(missing)}")
    return data


def _annotation_source(text: str) -> str:
    text = text.strip()
    if text.startswith(("body:", "header:", "request:")):
        return text
    if text.startswith("/") or text == "":
        return f"body:{text}"
    return f"header:{text}"  # a bare name is a response header: "Location"


def _find_op(spec: ApiSpec, ref: str, label: str, i: int) -> Operation:
    for o in spec.operations:
        if ref in (o.op_id, o.key, o.declared_id):
            return o
    raise UsageError(f"{label}: entry {i}: no operation {ref!r} in {spec.source or 'the spec'}")


def _annotation_edges(spec: ApiSpec, entries: list[dict], label: str) -> list[Edge]:
    out = []
    for i, e in enumerate(entries):
        producer, consumer = _find_op(spec, e["producer"], label, i), _find_op(spec, e["consumer"], label, i)
        param = e["param"]
        if param.startswith("/"):
            param = f"body:{param}"
        known_slots = slots(consumer) + credential_slots(spec, consumer)
        if not any(s.key == param for s in known_slots):
            known = ", ".join(s.key for s in known_slots) or "none"
            raise UsageError(f"{label}: entry {i}: {consumer.op_id} has no parameter {param!r} (known: {known})")
        out.append(Edge(producer.op_id, _annotation_source(e["field"]), consumer.op_id, param, "annotation"))
    return out


# ---------------------------------------------------------------------------------------
# The graph


_ENDERS = frozenset({"logout", "signout", "sign-out", "log-out"})


def _ends_something(op: Operation) -> bool:
    return op.method == "DELETE" or op.path.rstrip("/").rsplit("/", 1)[-1].lower() in _ENDERS


class DepGraph:
    """The inferred dependencies of one spec; built by `infer`."""

    def __init__(self, spec: ApiSpec, edges: list[Edge]) -> None:
        self.spec = spec
        self.edges = edges

    def producers_of(self, op_id: str, param: str) -> list[Producer]:
        """Who feeds `param` of `op_id`, best first (annotation, link, collection, location, name, stem)."""
        return [Producer(e.producer, e.source, e.rule) for e in self.edges if e.consumer == op_id and e.param == param]

    def consumers_of(self, op_id: str) -> list[Consumer]:
        """Every parameter that `op_id`'s answers feed."""
        return [Consumer(e.consumer, e.param, e.source) for e in self.edges if e.producer == op_id]

    def depends_on(self, op_id: str) -> list[str]:
        """The producers of any of `op_id`'s parameters, without repeats, in edge order."""
        return list(dict.fromkeys(e.producer for e in self.edges if e.consumer == op_id and e.producer != op_id))

    def order(self) -> list[str]:
        """Every op_id, producers before their consumers; ties (and cycles) broken by spec order, with
        what ends a resource or a session (DELETE, `/logout`) as late as its consumers allow.

        A cycle is broken at the waiting operation with the fewest unmet producers (then spec order).
        """
        ops = self.spec.operations
        rank = {o.op_id: (_ends_something(o), i) for i, o in enumerate(ops)}
        waiting = {o.op_id: set(self.depends_on(o.op_id)) & set(rank) for o in ops}
        done: list[str] = []
        while waiting:
            ready = [op for op, needs in waiting.items() if not needs]
            pick = min(ready, key=rank.__getitem__) if ready else \
                min(waiting, key=lambda op: (len(waiting[op]), rank[op]))
            done.append(pick)
            del waiting[pick]
            for needs in waiting.values():
                needs.discard(pick)
        return done

    def unsatisfiable(self) -> dict[str, str]:
        """op_id → why: a required path parameter that no operation produces.

        The last path parameter of a PUT is not listed: a PUT may create at a name the client
        chooses (RFC 9110 §9.3.4), so a generated value satisfies it.
        """
        out = {}
        for o in self.spec.operations:
            missing = [n for n in o.path_params if not self.producers_of(o.op_id, n)
                       and not (o.method == "PUT" and n == o.path_params[-1])]
            if missing:
                names = ", ".join(f"'{n}'" for n in missing)
                out[o.op_id] = (f"path parameter{'s' if len(missing) > 1 else ''} {names}: no response field, "
                                "Location header, link or annotation produces it")
        return out

    def format(self) -> str:
        """The text `probatorium fuzz --show-deps` prints: one line per edge, then the unsatisfied parameters."""
        lines = [e.line() for e in self.edges]
        lines += [f"unsatisfied: {op}: {why}" for op, why in self.unsatisfiable().items()]
        return "\n".join(lines) + ("\n" if lines else "")


_INFERRED = (_rule_collection, _rule_name, _rule_stem)


def infer(spec: ApiSpec, annotations: dict | list | None = None, *, annotations_label: str = "annotations") -> DepGraph:
    """The dependency graph of `spec`: annotations, links, then the inference rules (module docstring).

    `annotations` is the parsed annotations file: a list of `{producer, field, consumer, param}`
    entries, or a mapping holding it under `dependencies` (see `load_annotations`).
    """
    entries = _entries(annotations, annotations_label) if annotations is not None else []
    edges = _annotation_edges(spec, entries, annotations_label) + _link_edges(spec)
    for op in spec.operations:
        for slot in slots(op):
            for rule in _INFERRED:
                edges += [Edge(pid, src, op.op_id, slot.key, name) for pid, src, name in rule(spec, op, slot)]
        for slot in credential_slots(spec, op):
            for rule in (_rule_name, _rule_credential):
                edges += [Edge(pid, src, op.op_id, slot.key, name) for pid, src, name in rule(spec, op, slot)]
    return DepGraph(spec, _ordered(spec, edges))


def _ordered(spec: ApiSpec, edges: list[Edge]) -> list[Edge]:
    """Edges without repeats of (producer, source, consumer, param), by consumer, then rule rank."""
    index = {o.op_id: i for i, o in enumerate(spec.operations)}
    slot_index = {(o.op_id, s.key): j for o in spec.operations
                  for j, s in enumerate(slots(o) + credential_slots(spec, o))}
    seen, out = set(), []
    for e in sorted(edges, key=lambda e: (index.get(e.consumer, 0), slot_index.get((e.consumer, e.param), 99),
                                          _RULE_RANK[e.rule], index.get(e.producer, 0))):
        key = (e.producer, e.source, e.consumer, e.param)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out
