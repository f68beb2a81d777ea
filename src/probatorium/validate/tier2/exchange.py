"""Recorded exchanges and the step language of Tier 2 sequences (pure, standard library only).

A *step* is one planned request, JSON-able, written to ``sequence.json``:
``{"id", "op_id", "user", "method", "path", "path_params", "query", "headers",
"body", "media_type", "probe", "violates"}``. A parameter is either a literal
(``{"value": v}``) or a *binding* to an earlier step's response
(``{"from": <step id>, "source": "body:/id" | "header:Location"}``), so a
sequence replays against a fresh server whose ids differ. Steps refer to each
other by id, not position: a shrunk sequence keeps its bindings.

An *exchange* is one step as it happened: the request actually sent, the
response, the bindings it used (with the producer's user and path) and the
elapsed time. Checkers (:mod:`.checks`) are pure functions over exchanges.
The async executor and a dossier's repro.py both render steps and capture
values with these functions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from urllib.parse import quote, urlencode

LOGIN_PROBE = "login"


@dataclass
class Exchange:
    """One request of a sequence as it was sent and answered."""

    step: int  # the step id
    op_id: str
    user: str
    method: str
    path: str  # the request target sent (path and query)
    request_headers: list = field(default_factory=list)  # [[name, value], ...]
    request_body: str | None = None
    status: int | None = None
    response_headers: list = field(default_factory=list)
    response_body: str = ""
    bindings: dict = field(default_factory=dict)  # param → {"value", "from", "user", "path", "source", "in"}
    request_params: dict = field(default_factory=dict)  # "path.<name>" / "query.<name>" / "header.<name>" → value sent
    elapsed: float = 0.0
    probe: str = ""  # why the step is there: "", "mutated", "malformed-id", "after-delete", "login", ...
    violates: str | None = None  # the schema constraint a mutated request breaks
    error: str | None = None  # no usable response (connect/reset/timeout)

    def header(self, name: str) -> str | None:
        """A response header's value (the first field line of that name)."""
        low = name.lower()
        return next((v for k, v in self.response_headers if k.lower() == low), None)

    def json(self):
        """The response body parsed as JSON; raises ValueError when it is not JSON."""
        return json.loads(self.response_body)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_dict(self) -> dict:
        return asdict(self)


def pointer_get(doc, pointer: str):
    """The value at a JSON pointer ("/id", "/data/0/id"); KeyError when absent."""
    node = doc
    for raw in pointer.split("/")[1:] if pointer else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(pointer)
    return node


def capture(source: str, ex: Exchange):
    """The value a producer exchange offers at `source` ("body:/id", "header:Location"); KeyError if none."""
    if ex.status is None or not 200 <= ex.status < 300:
        raise KeyError(source)
    kind, _, where = source.partition(":")
    if kind == "request":  # an OpenAPI link forwarding the producer's own request parameter
        if where not in ex.request_params:
            raise KeyError(source)
        return ex.request_params[where]
    if kind == "header":
        value = ex.header(where)
        if not value:
            raise KeyError(source)
        return value.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]  # the last segment of a Location
    try:
        doc = ex.json()
    except ValueError:
        raise KeyError(source) from None
    value = pointer_get(doc, where)
    if isinstance(value, (dict, list)) or value is None:
        raise KeyError(source)
    return value


def resolve(param: dict, done: dict):
    """A parameter's value: a literal, or captured from the step it is bound to. Returns
    (value, binding-record | None); KeyError when the producer step gave nothing."""
    if "from" not in param:
        return param.get("value"), None
    producer = done[param["from"]]
    value = capture(param["source"], producer)
    return value, {"value": value, "from": param["from"], "source": param["source"], "user": producer.user,
                   "path": producer.path.split("?", 1)[0]}


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(step: dict, done: dict, auth: dict) -> tuple:
    """(target, headers, body bytes | None, bindings, params) of a step, its bindings resolved against
    the exchanges already `done` (step id → Exchange); `params` are the parameter values sent
    ("path.<name>" → value). `auth` maps user → extra headers (token). KeyError when a producer
    gave no value."""
    bindings: dict = {}
    params: dict = {}
    path = step["path"]
    for name, param in (step.get("path_params") or {}).items():
        value, rec = resolve(param, done)
        params[f"path.{name}"] = value
        if rec is not None:
            bindings[name] = {**rec, "in": "path"}
        path = path.replace("{" + name + "}", quote(_text(value), safe="") if not param.get("raw") else _text(value))
    query = []
    for name, param in (step.get("query") or {}).items():
        value, rec = resolve(param, done)
        params[f"query.{name}"] = value
        if rec is not None:
            bindings[name] = {**rec, "in": "query"}
        for v in (value if isinstance(value, list) else [value]):
            query.append((name, _text(v)))
    target = path + ("?" + urlencode(query) if query else "")
    headers = [[k, v] for k, v in (auth.get(step.get("user", "")) or {}).items()]
    for name, param in (step.get("headers") or {}).items():
        value, rec = resolve(param, done)
        params[f"header.{name}"] = value
        if rec is not None:
            bindings[name] = {**rec, "in": "header"}
        headers.append([name, _text(value)])
    body = None
    if "body" in step:  # a null body is a value too (a mutation): it is sent as JSON null
        raw_body = step["body"]
        if isinstance(raw_body, dict) and "from" in raw_body and "source" in raw_body and len(raw_body) == 2:
            raw_body, _ = resolve(raw_body, done)
        value = _bind_body(raw_body, done, bindings)
        media = step.get("media_type") or "application/json"
        headers.append(["Content-Type", media])
        if "json" in media:
            body = json.dumps(value).encode()
        elif media == "application/x-www-form-urlencoded" and isinstance(value, dict):
            body = urlencode({k: _text(v) for k, v in value.items()}).encode()
        else:
            body = value.encode() if isinstance(value, str) else json.dumps(value).encode()
    return target, headers, body, bindings, params


def _bind_body(value, done: dict, bindings: dict):
    """A body with its bound fields ({"$bind": {"from", "source"}}) replaced by captured values."""
    if isinstance(value, dict):
        if set(value) == {"$bind"}:
            got, rec = resolve(value["$bind"], done)
            if rec is not None:
                bindings[f"body:{value['$bind']['source']}"] = {**rec, "in": "body"}
            return got
        return {k: _bind_body(v, done, bindings) for k, v in value.items()}
    if isinstance(value, list):
        return [_bind_body(v, done, bindings) for v in value]
    return value


def step_refs(step: dict) -> set:
    """The ids of the steps a step is bound to."""
    refs: set = set()

    def walk(node):
        if isinstance(node, dict):
            if "from" in node and "source" in node:
                refs.add(node["from"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk({k: step.get(k) for k in ("path_params", "query", "headers", "body")})
    return refs


def well_formed(steps: list) -> bool:
    """Every binding points at an earlier step of the sequence, and every user logs in first."""
    seen: set = set()
    logged: set = set()
    for st in steps:
        if not step_refs(st) <= seen:
            return False
        if st.get("probe") == LOGIN_PROBE:
            logged.add(st.get("user"))
        elif st.get("needs_login") and st.get("user") not in logged:
            return False
        seen.add(st["id"])
    return True


TOKEN_KEYS = ("access_token", "token", "jwt", "id_token")  # where a login's JSON answer holds its bearer token


def bearer_token(doc) -> str | None:
    """The bearer token a login's decoded JSON answer carries (the login contract), or None."""
    if isinstance(doc, dict):
        for key in TOKEN_KEYS:
            if isinstance(doc.get(key), str) and doc[key]:
                return doc[key]
    return None


def login_auth(ex: Exchange) -> dict:
    """Headers a login response grants: a bearer token from its JSON body, if any (cookies are
    kept by the runner's jar)."""
    if not ex.ok:
        return {}
    try:
        token = bearer_token(ex.json())
    except ValueError:
        return {}
    return {"Authorization": "Bearer " + token} if token else {}


def cookie_pairs(set_cookies: list, jar: dict) -> dict:
    """`jar` (name → value) updated with Set-Cookie values (Max-Age=0 removes a cookie)."""
    for raw in set_cookies:
        pair, _, attrs = raw.partition(";")
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            continue
        if "max-age=0" in attrs.replace(" ", "").lower():
            jar.pop(name.strip(), None)
        else:
            jar[name.strip()] = value.strip()
    return jar


def parse_response(raw: bytes) -> tuple:
    """(status, [[name, value], ...], body text) of one HTTP/1.1 response (Content-Length or chunked);
    (None, [], "") when there is no parsable status line."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    while sep and head.startswith(b"HTTP/1.1 1") and not head.startswith(b"HTTP/1.1 101"):
        head, sep, rest = rest.partition(b"\r\n\r\n")  # interim responses
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        return None, [], ""
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append([name.strip(), value.strip()])
    low = {k.lower(): v for k, v in headers}
    body = rest
    if "chunked" in low.get("transfer-encoding", "").lower():
        body, pos = b"", 0
        while True:
            nl = rest.find(b"\r\n", pos)
            if nl < 0:
                break
            try:
                size = int(rest[pos:nl].split(b";")[0], 16)
            except ValueError:
                break
            if size == 0:
                break
            body += rest[nl + 2:nl + 2 + size]
            pos = nl + 2 + size + 2
    elif low.get("content-length", "").isdigit():
        body = rest[:int(low["content-length"])]
    return status, headers, body.decode("utf-8", errors="replace")
