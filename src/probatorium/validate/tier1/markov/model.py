"""The Markov session model: states (one request each) and weighted transitions.

`markov.yaml` format::

    login: POST /login          # optional: the login operation (per-walker credentials)
    start: me                   # the state a session starts in
    states:
      me:
        request: GET /me        # "METHOD /path", {params} filled from captured values
        list_users: 7.0         # every other key: a transition weight to that state
        me: 1.0
      list_users:
        request: GET /api/users
        me: 1.0
      logout:
        request: POST /logout   # no transitions: terminal, the session ends after it

Every problem is a UsageError of ONE line naming the file and the line (YAML
node marks), so a user fixing their file goes straight to it. Without a
markov.yaml, `default_chain` derives a model from the OpenAPI operations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ....errors import UsageError
from ...openapi import Operation

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
REQUEST_RE = re.compile(r"([A-Za-z]+)\s+(/\S*)\Z")
PARAM_RE = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True)
class State:
    name: str
    method: str
    path: str  # with {params}
    transitions: tuple[tuple[str, float], ...] = ()  # (state name, weight > 0)
    line: int = 0  # 1-based line in markov.yaml (0 for derived models)

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def terminal(self) -> bool:
        return not self.transitions

    @property
    def params(self) -> list[str]:
        return PARAM_RE.findall(self.path)


@dataclass
class MarkovModel:
    start: str
    states: dict[str, State]
    login: tuple[str, str] | None = None  # (method, path)
    source: str = "<derived>"
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{len(self.states)} states from {self.source}, start {self.start!r}" + \
            (f", login {self.login[0]} {self.login[1]}" if self.login else ", no login")


def _err(path: Path, node: yaml.Node | None, msg: str) -> UsageError:
    where = f":{node.start_mark.line + 1}" if node is not None else ""
    return UsageError(f"{path}{where}: {msg}")


def _scalar(path: Path, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise _err(path, node, f"{what} must be a plain value, not a {node.id}")
    return str(node.value)


def _request(path: Path, node: yaml.Node, what: str) -> tuple[str, str]:
    text = _scalar(path, node, what).strip()
    m = REQUEST_RE.match(text)
    if not m or m.group(1).upper() not in METHODS:
        raise _err(path, node, f"{what} must look like 'METHOD /path' (got {text!r})")
    return m.group(1).upper(), m.group(2)


def _compose(p: Path) -> yaml.Node:
    """The file's YAML node tree (never None); read and syntax errors name the file and the line."""
    try:
        text = p.read_text()
    except OSError as e:
        raise UsageError(f"{p}: cannot read the Markov model: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{p}: the Markov model is not UTF-8 text: {e.reason}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UsageError(f"{p}{where}: invalid YAML: {problem}") from None
    if root is None:
        raise UsageError(f"{p}:1: empty Markov model (need 'start' and 'states')")
    return root


def _top_level(p: Path, root: yaml.Node) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """The top-level keys (login, start, states) -> (key node, value node); 'states' is required."""
    if not isinstance(root, yaml.MappingNode):
        raise _err(p, root, "the Markov model must be a mapping with 'start' and 'states'")
    top: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for k, v in root.value:
        name = _scalar(p, k, "a top-level key")
        if name in top:
            raise _err(p, k, f"duplicate top-level key {name!r}")
        if name not in ("login", "start", "states"):
            raise _err(p, k, f"unknown top-level key {name!r} (expected login, start, states)")
        top[name] = (k, v)
    if "states" not in top:
        raise _err(p, root, "missing 'states'")
    skey, snode = top["states"]
    if not isinstance(snode, yaml.MappingNode) or not snode.value:
        raise _err(p, snode if isinstance(snode, yaml.MappingNode) else skey,
                   "'states' must be a non-empty mapping of state name -> {request, transitions}")
    return top


def _weight(p: Path, state: str, to: str, node: yaml.Node) -> float:
    """A transition weight: a finite number >= 0."""
    wtext = _scalar(p, node, f"state {state!r}: weight of {to!r}")
    try:
        w = float(wtext)
    except ValueError:
        raise _err(p, node, f"state {state!r}: weight of {to!r} must be a number (got {wtext!r})") from None
    if not math.isfinite(w) or w < 0:
        raise _err(p, node, f"state {state!r}: weight of {to!r} must be a finite number >= 0 (got {wtext})")
    return w


def _state(p: Path, name: str, k: yaml.Node, v: yaml.Node, names: Collection[str]) -> State:
    """One state: its 'request' and its weighted transitions to the other `names`."""
    if not isinstance(v, yaml.MappingNode):
        raise _err(p, v if not isinstance(v, yaml.ScalarNode) or v.value else k,
                   f"state {name!r} must be a mapping with 'request' and transition weights")
    request: tuple[str, str] | None = None
    trans: list[tuple[str, float]] = []
    seen: set[str] = set()
    for tk, tv in v.value:
        tname = _scalar(p, tk, f"a key of state {name!r}")
        if tname in seen:
            raise _err(p, tk, f"state {name!r}: duplicate key {tname!r}")
        seen.add(tname)
        if tname == "request":
            request = _request(p, tv, f"state {name!r}: 'request'")
            continue
        if tname not in names:
            raise _err(p, tk, f"state {name!r}: transition to unknown state {tname!r} "
                              f"(states: {', '.join(sorted(names))})")
        trans.append((tname, _weight(p, name, tname, tv)))
    if request is None:
        raise _err(p, k, f"state {name!r} has no 'request' (e.g. 'request: GET /path')")
    if trans and sum(w for _, w in trans) <= 0:
        raise _err(p, k, f"state {name!r}: transition weights sum to zero "
                         "(remove them all to make the state terminal)")
    return State(name, request[0], request[1], tuple((t, w) for t, w in trans if w > 0), line=k.start_mark.line + 1)


def load_markov(path: Path | str) -> MarkovModel:
    """Parse and check a markov.yaml; every error names the file and the line."""
    p = Path(path)
    top = _top_level(p, _compose(p))
    login = _request(p, top["login"][1], "'login'") if "login" in top else None
    raw: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for k, v in top["states"][1].value:
        name = _scalar(p, k, "a state name")
        if name in raw:
            raise _err(p, k, f"duplicate state {name!r}")
        raw[name] = (k, v)
    states = {name: _state(p, name, k, v, raw) for name, (k, v) in raw.items()}
    if "start" in top:
        stv = top["start"][1]
        start = _scalar(p, stv, "'start'")
        if start not in states:
            raise _err(p, stv, f"start state {start!r} is not a state (states: {', '.join(sorted(states))})")
    else:
        start = next(iter(states))
    return MarkovModel(start=start, states=states, login=login, source=str(p))


def check_against(model: MarkovModel, operations: list[Operation]) -> list[str]:
    """Warnings (one line each) for states whose request the OpenAPI document does not declare."""
    known = {(o.method, o.path) for o in operations}
    out = []
    for st in model.states.values():
        if (st.method, st.path) not in known:
            out.append(f"{model.source}:{st.line}: state {st.name!r}: {st.key} is not an operation of the OpenAPI "
                       "document (sent anyway, without a request-body schema)")
    return out


# ---------------------------------------------------------------------------------------
# Default chain from the OpenAPI operations.

#: Paths other slices own or that are not session traffic.
SKIP_PATHS = re.compile(r"^/(healthz|debug/vars|events|ws|echo|metrics|docs|openapi\.(json|yaml)|kv)(/|$)")
KV_RE = re.compile(r"^/kv/\{[^{}]+\}$")
CATEGORY_WEIGHT = {"create": 3.0, "read": 2.0, "list": 1.5, "update": 1.0, "delete": 1.5, "other": 1.0}


def _category(op: Operation) -> str:
    ends_with_param = op.path.rstrip("/").endswith("}")
    if op.method == "POST" and not ends_with_param:
        return "create"
    if op.method == "GET":
        return "read" if ends_with_param else "list"
    if op.method in ("PUT", "PATCH"):
        return "update"
    if op.method == "DELETE":
        return "delete"
    return "other"


def default_chain(operations: list[Operation], *, login_path: str = "/login",
                  logout_path: str = "/logout") -> MarkovModel:
    """A Markov model derived from the operations: login if `/login` exists, creates first (they
    produce the ids), then reads/updates/deletes of captured ids; `/logout` is the terminal state.

    Every state may go to every other state, weighted by its kind; a state whose path
    parameters have no captured value yet is skipped by the walker, so creates come first.
    """
    login = None
    logout: Operation | None = None
    chosen: list[Operation] = []
    for op in operations:
        if op.method == "POST" and op.path == login_path:
            login = (op.method, op.path)
            continue
        if op.method == "POST" and op.path == logout_path:
            logout = op
            continue
        if op.method in ("HEAD", "OPTIONS") or SKIP_PATHS.match(op.path):
            continue
        chosen.append(op)
    names: dict[str, Operation] = {}
    for op in chosen:
        base = op.operation_id or f"{op.method.lower()} {op.path}"
        name, n = base, 2
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names[name] = op
    notes = []
    if not names:
        notes.append("the OpenAPI document offers no session operation for the Markov chain")
    cats = {name: _category(op) for name, op in names.items()}
    states: dict[str, State] = {}
    for name, op in names.items():
        trans = [(other, CATEGORY_WEIGHT[cats[other]]) for other in names]
        if logout is not None:
            trans.append(("logout", 0.1))
        states[name] = State(name, op.method, op.path, tuple(trans))
    if logout is not None:
        states["logout"] = State("logout", logout.method, logout.path, ())
    creates = [n for n in names if cats[n] == "create" and not names[n].path_params]
    lists = [n for n in names if cats[n] == "list" and not names[n].path_params]
    plain = [n for n in names if not names[n].path_params]
    start = (creates or lists or plain or list(names) or ["logout"])[0]
    if start == "logout" and "logout" not in states:
        start = ""
    return MarkovModel(start=start, states=states, login=login, source="<derived from OpenAPI>", notes=notes)


def kv_operations(operations: list[Operation]) -> dict[str, Operation] | None:
    """The key/value contract ops (PUT/GET/DELETE /kv/{key}) when the document offers all three."""
    found = {op.method: op for op in operations if KV_RE.match(op.path) and op.method in ("PUT", "GET", "DELETE")}
    return found if len(found) == 3 else None
