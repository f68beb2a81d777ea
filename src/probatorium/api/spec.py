"""The OpenAPI loader: one document (3.0 or 3.1) → an `ApiSpec` of `Operation`s.

Why these libraries: openapi-spec-validator is the maintained validator for
both 3.0 and 3.1 (it knows the OpenAPI meta-schemas and the rules they cannot
express: unresolved path parameters, duplicate operationIds), and referencing
is the JSON Schema project's `$ref` resolver, which handles relative-file
references and JSON-pointer escapes. What is ours: a spec error names the file,
the JSON pointer and the line (from YAML's composed node marks, or by walking
the JSON text), and the model is the shape Tier 2 needs: parameters of the
path item and the operation merged, `$ref`s inlined, `allOf` folded for
generation (`oneOf`/`anyOf` kept), the `servers` base path, security schemes.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import yaml
from referencing import Registry, Resource, Specification
from referencing.exceptions import Unresolvable

from ..errors import UsageError
from .schema import merge_all_of

METHODS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")
# Request media types in the order a generator prefers them.
BODY_PREFERENCE = ("application/json", "+json", "application/x-www-form-urlencoded",
                   "multipart/form-data", "application/octet-stream")
_TEXT_URI = "urn:probatorium:spec"  # the base URI of a document given as text (no file to be relative to)


class SpecError(UsageError):
    """An OpenAPI document that cannot be used: the message names file, JSON pointer and line."""


# ---------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Param:
    """One parameter of an operation (path-level and operation-level merged)."""

    name: str
    location: str  # "path" | "query" | "header" | "cookie"
    required: bool
    schema: dict  # resolved, allOf folded; {} when the parameter declares none
    raw: dict = field(default_factory=dict, compare=False)  # the resolved Parameter Object (style, explode...)

    def __hash__(self) -> int:
        return hash((self.name, self.location))


@dataclass(frozen=True)
class Body:
    """The request body a generator should send (`media_type` chosen by BODY_PREFERENCE)."""

    media_type: str
    schema: dict
    required: bool
    content: dict = field(default_factory=dict, compare=False)  # every declared media type → schema


@dataclass(frozen=True)
class Response:
    """One declared response: status as written ("200", "4XX", "default")."""

    status: str
    content: dict  # media type → resolved schema ({} when none is declared)
    headers: dict  # header name → resolved Header Object
    links: dict  # link name → Link Object


@dataclass(frozen=True)
class Operation:
    """One (method, path) of the document."""

    op_id: str  # operationId, else derived from method and path (see derive_op_id)
    method: str  # upper case
    path: str  # the template as written, with {params}, without the base path
    parameters: list[Param]
    body: Body | None
    responses: dict[str, Response]
    security: list[dict]  # the effective requirement (the operation's, else the document's)
    links: dict  # every response's links: link name → Link Object (with "x-status": the response's status)
    declared_id: str = ""  # the operationId as written ("" when absent)

    def __hash__(self) -> int:  # the dict/list fields are not hashable; an operation is its id and key
        return hash((self.op_id, self.method, self.path))

    @property
    def key(self) -> str:
        """`METHOD /path`, as tallies and markov.yaml name an operation."""
        return f"{self.method} {self.path}"

    @property
    def path_params(self) -> list[str]:
        """Names of the {params} in the path template, in order."""
        return re.findall(r"\{([^{}]+)\}", self.path)

    def param(self, name: str, location: str | None = None) -> Param | None:
        """The parameter called `name` (in `location` when given), or None."""
        return next((p for p in self.parameters if p.name == name and location in (None, p.location)), None)

    def declared(self, status: int) -> Response | None:
        """The response declared for `status`: the exact code, else its NXX range, else `default`."""
        for key in (str(status), f"{status // 100}XX"):
            if key in self.responses:
                return self.responses[key]
        return self.responses.get("default")


def answered_by_design(status: int, declared: Collection[str]) -> bool:
    """True for a 502/503/504 among `declared` (the operation's response keys, as written): a
    documented gateway, circuit breaker or upstream timeout answering by design. A declared 500
    stays the server's own failure. Self-contained: Markov's repro.py embeds it."""
    return status in (502, 503, 504) and str(status) in declared

@dataclass(frozen=True)
class ApiSpec:
    """A loaded, validated OpenAPI document."""

    version: str  # the `openapi` field, e.g. "3.0.3"
    title: str
    base_path: str  # the path of the first server URL, "" for the root (never a trailing "/")
    operations: list[Operation]
    security_schemes: dict  # name → resolved Security Scheme Object
    raw: dict  # the document as parsed (references not inlined)
    source: str = ""  # the file name or the name given to load_spec

    def op(self, op_id: str) -> Operation:
        """The operation with this op_id (KeyError naming the known ones otherwise)."""
        for o in self.operations:
            if o.op_id == op_id:
                return o
        raise KeyError(f"no operation {op_id!r} in {self.source or 'the spec'} "
                       f"(known: {', '.join(o.op_id for o in self.operations)})")


# ---------------------------------------------------------------------------------------
# Parsing with positions


def escape(token: str) -> str:
    """One JSON-pointer reference token (RFC 6901 §3)."""
    return token.replace("~", "~0").replace("/", "~1")


class _Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp rule: `version: 2024-01-01` stays the string OpenAPI means."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rules if tag != "tag:yaml.org,2002:timestamp"]
    for ch, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _str_keys(node: Any) -> Any:
    # YAML reads `200:` as an int; OpenAPI means the string "200"
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, bool) else str(k).lower(): _str_keys(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_str_keys(x) for x in node]
    return node


def _yaml_lines(node: yaml.Node, pointer: str, out: dict[str, int], depth: int = 0) -> None:
    if depth > 200:
        return
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            here = f"{pointer}/{escape(str(key.value))}"
            out.setdefault(here, key.start_mark.line + 1)
            _yaml_lines(value, here, out, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            here = f"{pointer}/{i}"
            out.setdefault(here, item.start_mark.line + 1)
            _yaml_lines(item, here, out, depth + 1)


class _JsonLines:
    """JSON pointer → line, by walking the text with the json module's own scanners."""

    _ws = re.compile(r"[ \t\n\r]*")

    def __init__(self, text: str) -> None:
        self.text = text
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.decoder = json.JSONDecoder()
        self.out: dict[str, int] = {}

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self.newlines, offset - 1) + 1 if offset else 1

    def skip(self, i: int) -> int:
        return self._ws.match(self.text, i).end()

    def value(self, i: int, pointer: str) -> int:
        """Record the members under `pointer` of the value starting at i; the offset after it."""
        i = self.skip(i)
        ch = self.text[i:i + 1]
        if ch == "{":
            i = self.skip(i + 1)
            while self.text[i:i + 1] == '"':
                start = i
                key, i = json.decoder.scanstring(self.text, i + 1)
                here = f"{pointer}/{escape(key)}"
                self.out.setdefault(here, self.line(start))
                i = self.skip(self.skip(i) + 1)  # past the ':'
                i = self.skip(self.value(i, here))
                if self.text[i:i + 1] == ",":
                    i = self.skip(i + 1)
            return i + 1
        if ch == "[":
            i, n = self.skip(i + 1), 0
            while self.text[i:i + 1] not in ("]", ""):
                self.out.setdefault(f"{pointer}/{n}", self.line(i))
                i = self.skip(self.value(i, f"{pointer}/{n}"))
                if self.text[i:i + 1] == ",":
                    i = self.skip(i + 1)
                n += 1
            return i + 1
        return self.decoder.raw_decode(self.text, i)[1]


def parse(text: str, label: str) -> tuple[Any, dict[str, int]]:
    """(document, {"#/json/pointer": line}) of a YAML or JSON text; SpecError naming the line."""
    if text.lstrip().startswith(("{", "[")):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"{label}: line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}") from None
        walker = _JsonLines(text)
        walker.value(0, "#")
        return doc, {"#": 1, **walker.out}
    try:
        node = yaml.compose(text, Loader=_Loader)
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 — _Loader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise SpecError(f"{label}:{where} invalid YAML: {getattr(e, 'problem', None) or e}") from None
    lines = {"#": 1}
    if node is not None:
        _yaml_lines(node, "#", lines)
    return _str_keys(doc), lines


# ---------------------------------------------------------------------------------------
# Reading a source, resolving references


def _read(source: Path | str | bytes, name: str) -> tuple[str, str, str]:
    """(text, label for messages, base URI) of a path, or of a document given as text or bytes."""
    if isinstance(source, bytes):
        try:
            return source.decode("utf-8-sig"), name or "<spec>", _TEXT_URI
        except UnicodeDecodeError as e:
            raise SpecError(f"{name or '<spec>'}: not UTF-8 text: {e}") from None
    if isinstance(source, str) and ("\n" in source or re.match(r"\s*(\{|openapi\s*:)", source)):
        return source, name or "<spec>", _TEXT_URI
    p = Path(source)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise SpecError(f"{p}: cannot read the OpenAPI file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{p}: not UTF-8 text: {e}") from None
    return text, name or str(p), p.resolve().as_uri()


class _Documents:
    """The root document and every file its `$ref`s reach, with their line maps."""

    def __init__(self, root_uri: str, root: Any, label: str, lines: dict[str, int]) -> None:
        self.labels = {root_uri: label}
        self.lines = {root_uri: lines}
        self.registry = Registry(retrieve=self._retrieve).with_resource(
            root_uri, Resource(contents=root, specification=Specification.OPAQUE))

    def _retrieve(self, uri: str) -> Resource:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise LookupError(f"only local files are followed, not {uri}")
        path = Path(unquote(parsed.path))
        text = path.read_text(encoding="utf-8-sig")
        doc, lines = parse(text, str(path))
        self.labels[uri], self.lines[uri] = str(path), lines
        return Resource(contents=doc, specification=Specification.OPAQUE)

    def where(self, uri: str, pointer: str) -> str:
        """`file: #/pointer (line N)` — the line of the pointer, or of its nearest recorded parent."""
        lines, probe = self.lines.get(uri, {}), pointer
        while probe not in lines and "/" in probe:
            probe = probe.rsplit("/", 1)[0]
        line = lines.get(probe)
        return f"{self.labels.get(uri, uri)}: {pointer}" + (f" (line {line})" if line else "")


# Values that are data, not OpenAPI objects: a "$ref" key inside them is not a reference.
_DATA_KEYS = frozenset({"example", "enum", "const", "default", "value"})


class _Inliner:
    """A copy of a document with every `$ref` replaced by its target (relative files followed).

    A reference cycle (a schema containing itself) becomes `{"x-recursive": <target>}` at the
    point where it would recurse: any value there is accepted, and a generator stops there.
    """

    def __init__(self, docs: _Documents, strict: bool) -> None:
        self.docs, self.strict = docs, strict

    def inline(self, node: Any, resolver: Any, uri: str, pointer: str, stack: tuple[str, ...] = ()) -> Any:
        if isinstance(node, list):
            return [self.inline(x, resolver, uri, f"{pointer}/{i}", stack) for i, x in enumerate(node)]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            return self._follow(node, ref, resolver, uri, pointer, stack)
        return {k: v if k in _DATA_KEYS else self.inline(v, resolver, uri, f"{pointer}/{escape(k)}", stack)
                for k, v in node.items()}

    def _follow(self, node: dict, ref: str, resolver: Any, uri: str, pointer: str, stack: tuple[str, ...]) -> Any:
        target_uri, fragment = urldefrag(urljoin(uri, ref))
        target = f"{target_uri}#{fragment}"
        if target in stack or len(stack) > 64:
            return {"x-recursive": ref}
        try:
            found = resolver.lookup(ref)
        except (Unresolvable, OSError, LookupError, SpecError) as e:
            if not self.strict:
                return {}
            cause = e.args[0] if isinstance(e, SpecError) else _why_unresolvable(e)
            if uri == _TEXT_URI and not ref.startswith("#"):
                cause = "the document was given as text, so there is no file to resolve it against"
            raise SpecError(f"{self.docs.where(uri, pointer)}: unresolvable $ref {ref!r}: {cause}") from None
        inner = self.inline(found.contents, found.resolver, target_uri, "#" + fragment, stack + (target,))
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        if siblings and isinstance(inner, dict):
            inner = {**inner, **self.inline(siblings, resolver, uri, pointer, stack)}
        return inner


def _why_unresolvable(e: Exception) -> str:
    cause = e.__cause__ or e.__context__
    if isinstance(cause, OSError):
        return cause.strerror or str(cause)
    text = str(e)
    if "does not exist within" in text:
        return "no such target"
    return text.splitlines()[0][:200] if text else type(e).__name__


# ---------------------------------------------------------------------------------------
# Validation


def _validator_for(version: Any, label: str, lines: dict[str, int]) -> type:
    from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

    where = f"{label}: #/openapi" + (f" (line {lines['#/openapi']})" if "#/openapi" in lines else "")
    if not isinstance(version, str):
        raise SpecError(f"{where}: not an OpenAPI 3 document (the 'openapi' field is missing or not a string)")
    if version.startswith("3.0."):
        return OpenAPIV30SpecValidator
    if version.startswith("3.1."):
        return OpenAPIV31SpecValidator
    raise SpecError(f"{where}: OpenAPI version {version!r} is not supported (3.0.x and 3.1.x are)")


# errors openapi-spec-validator raises outside the meta-schema carry no path, only a sentence
_OP_IN_MESSAGE = re.compile(r"for '(\w+)'(?: operation)? in '([^']+)'")


def _error_pointer(err: Any) -> str:
    path = list(getattr(err, "absolute_path", ()) or ())
    if path:
        return "#/" + "/".join(escape(str(p)) for p in path)
    m = _OP_IN_MESSAGE.search(str(getattr(err, "message", err)))
    return f"#/paths/{escape(m.group(2))}/{m.group(1).lower()}" if m else "#"


def _validate(raw: dict, base_uri: str, docs: _Documents) -> None:
    cls = _validator_for(raw.get("openapi"), docs.labels[base_uri], docs.lines[base_uri])
    try:
        err = next(iter(cls(raw, base_uri=base_uri if base_uri != _TEXT_URI else "").iter_errors()), None)
    except Exception as e:  # the validator's own resolver failing on what ours accepted
        raise SpecError(f"{docs.labels[base_uri]}: the OpenAPI validator failed: {str(e).splitlines()[0][:200]}") \
            from None
    if err is not None:
        message = str(getattr(err, "message", err)).splitlines()[0]
        raise SpecError(f"{docs.where(base_uri, _error_pointer(err))}: {message}")


# ---------------------------------------------------------------------------------------
# Building the model


def derive_op_id(method: str, path: str) -> str:
    """A stable operation id for an operation without operationId: `get /items/{id}` → `get_items_by_id`."""
    words = []
    for seg in path.strip("/").split("/"):
        if not seg:
            continue
        m = re.fullmatch(r"\{([^{}]+)\}", seg)
        words.append("by_" + m.group(1) if m else seg)
    slug = re.sub(r"[^0-9A-Za-z]+", "_", "_".join(words)).strip("_") or "root"
    return f"{method.lower()}_{slug}"


def base_path_of(doc: dict) -> str:
    """The path of the first `servers` URL (variables at their defaults), without a trailing '/'."""
    servers = doc.get("servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
        return ""
    url = str(servers[0].get("url") or "")
    for var, spec in (servers[0].get("variables") or {}).items():
        if isinstance(spec, dict):
            url = url.replace("{" + var + "}", str(spec.get("default", "")))
    path = urlparse(url).path if "://" in url else url.split("?")[0]
    return "" if path in ("", "/") else "/" + path.strip("/")


def _params(item: dict, op: dict) -> list[Param]:
    merged: dict[tuple[str, str], dict] = {}
    for source in (item.get("parameters"), op.get("parameters")):
        for par in source or []:
            if isinstance(par, dict) and isinstance(par.get("name"), str):
                merged[(str(par.get("in", "")), par["name"])] = par  # the operation's wins (OAS 3 §4.8.10)
    out = []
    for (location, name), par in merged.items():
        schema = par.get("schema")
        if schema is None and isinstance(par.get("content"), dict) and par["content"]:
            schema = next(iter(par["content"].values()), {}).get("schema")
        out.append(Param(name, location, location == "path" or bool(par.get("required")),
                         merge_all_of(schema) if isinstance(schema, dict) else {}, par))
    return out


def _media_schema(entry: Any, media: str) -> dict:
    schema = entry.get("schema") if isinstance(entry, dict) else None
    if isinstance(schema, dict):
        return merge_all_of(schema)
    return {"type": "string", "format": "binary"} if media.startswith("application/octet-stream") else {}


def _body(op: dict) -> Body | None:
    rb = op.get("requestBody")
    if not isinstance(rb, dict) or not isinstance(rb.get("content"), dict) or not rb["content"]:
        return None
    content = {str(m): _media_schema(e, str(m)) for m, e in rb["content"].items()}
    bare = {m: m.split(";")[0].strip().lower() for m in content}
    media = next((m for pref in BODY_PREFERENCE for m in content
                  if bare[m] == pref or (pref.startswith("+") and bare[m].endswith(pref))), next(iter(content)))
    return Body(media, content[media], bool(rb.get("required")), content)


def _responses(op: dict) -> dict[str, Response]:
    out = {}
    for status, resp in (op.get("responses") or {}).items():
        status = str(status).upper() if str(status).lower() != "default" else "default"
        resp = resp if isinstance(resp, dict) else {}
        content = {str(m): _media_schema(e, str(m)) for m, e in (resp.get("content") or {}).items()}
        out[status] = Response(status, content, dict(resp.get("headers") or {}), dict(resp.get("links") or {}))
    return out


def _operations(doc: dict) -> list[Operation]:
    ops: list[Operation] = []
    taken = {str(op.get("operationId")) for item in (doc.get("paths") or {}).values() if isinstance(item, dict)
             for op in (item.get(m) for m in METHODS) if isinstance(op, dict) and op.get("operationId")}
    for route, item in (doc.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            declared = str(op.get("operationId") or "")
            op_id = declared or derive_op_id(method, route)
            n = 2
            while not declared and op_id in taken:
                op_id = f"{derive_op_id(method, route)}_{n}"
                n += 1
            taken.add(op_id)
            responses = _responses(op)
            links = {name: {**link, "x-status": r.status} for r in responses.values()
                     for name, link in r.links.items() if isinstance(link, dict)}
            security = op["security"] if isinstance(op.get("security"), list) else doc.get("security") or []
            ops.append(Operation(op_id, method.upper(), str(route), _params(item, op), _body(op), responses,
                                 list(security), links, declared))
    return ops


def load_spec(source: Path | str | bytes, *, name: str = "", strict: bool = True) -> ApiSpec:
    """Load an OpenAPI 3.0/3.1 document: a path, or its text/bytes (as fetched from a target).

    `strict` (the default) validates the document with openapi-spec-validator and refuses an
    unresolvable `$ref`; `strict=False` reads what it can (an unresolvable reference becomes
    `{}`) — the lenient reading Tier 1's sweep has always done. Errors are SpecError.
    """
    text, label, base_uri = _read(source, name)
    raw, lines = parse(text, label)
    if not isinstance(raw, dict):
        raise SpecError(f"{label}: # (line 1): not an OpenAPI document (a mapping is expected)")
    docs = _Documents(base_uri, raw, label, lines)
    resolved = _Inliner(docs, strict).inline(raw, docs.registry.resolver(base_uri), base_uri, "#")
    if strict:
        _validate(raw, base_uri, docs)
    elif not isinstance(raw.get("paths"), dict):
        raise SpecError(f"{label}: not an OpenAPI document (no 'paths' mapping)")
    info = resolved.get("info") if isinstance(resolved.get("info"), dict) else {}
    schemes = (resolved.get("components") or {}).get("securitySchemes") or {}
    return ApiSpec(str(raw.get("openapi", "")), str(info.get("title", "")), base_path_of(resolved),
                   _operations(resolved), dict(schemes), raw, label)
