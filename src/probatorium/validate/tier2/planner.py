"""Request sequences from the OpenAPI document and the dependency graph (RESTler's, in short).

A sequence is a list of steps (:mod:`.exchange`). It starts with the login of
its two users (the shared spec's login contract), then, for the operation it
aims at, the producers its path parameters need (found recursively in the
:class:`probatorium.api.deps.DepGraph`), then the operation itself and the
probes that give the checkers something to judge:

- ``lean``: every operation once through a dependency-respecting sequence,
  each with its checker probes: after a DELETE the same resource read and
  written again (UAF), the operation by the second user on the first user's
  resource (AUTHZ), a refused create bracketed by two collection reads
  (LEAK), a child under another parent (HIERARCHY), malformed ids (OBJ),
  mutated payloads (LAX, 5XX);
- ``full``: then BFS over pairs of operations, then seeded random extension
  (random operations, users and payloads, valid or mutated) until the budget ends.

Every sequence is built from its own seed (``derive_seed(cell seed, "tier2",
task)``), so a run is reproducible and a sequence is a value on disk.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from ...api import values
from ...api.deps import credential_slots
from .exchange import LOGIN_PROBE

USERS = ("A", "B")
MALFORMED_IDS = ("abc", "0", "-1", "1.5", "99999999999999999999999", "%00", "' OR '1'='1", "x" * 300)
MAX_MUTATIONS = 8  # schema-violating mutations per operation in lean mode
MAX_EDGES = 8  # valid boundary values per operation in lean mode (very long, unicode, min/max edges)
MAX_CLEANUP = 20
ANONYMOUS, ANONYMOUS_PROBE = "anonymous", "anonymous"  # a user that never logs in, and its probe
AUTH_HEADERS = ("authorization", "cookie")  # header parameters the login fills, never generated
EDGE_PROBE = "boundary: "  # the probe of a valid boundary value, followed by its label
PASSWORD = "probatorium-t2"
GENERATE = object()  # "generate the body from its schema" (None is a value: a null body)


@dataclass(frozen=True)
class Login:
    """How the target's users log in (method, path, the login operation's id or "")."""

    method: str
    path: str
    op_id: str = "login"


def wire_media(media: str) -> str:
    """The Content-Type sent for a declared media type: a range is no media type (RFC 9110 §8.3),
    so ``*/*`` is sent as application/octet-stream and ``text/*`` as text/plain."""
    bare = media.split(";", 1)[0].strip().lower()
    if bare == "*/*" or not bare:
        return "application/octet-stream"
    if bare.endswith("/*"):
        return bare[:-1] + ("plain" if bare.startswith("text/") else "octet-stream")
    return media


def body_mutations(op, rng: random.Random) -> list:
    """The mutations of `op`'s request body that still break its schema once on the wire."""
    return body_values(op, rng)[0]


def body_values(op, rng: random.Random) -> tuple[list, list]:
    """(violating, edges) for `op`'s request body: the mutations that still break its schema once
    on the wire, and the valid boundary values (a very long or unicode string the schema allows,
    the range and length edges: a valid request, so a 5xx to one is a crash on a valid value).

    A JSON body carries every mutation. A raw body (text, bytes) is text on the wire: a value
    is kept only when its text still violates the schema (a "wrong type" 5 is the valid text
    "5"), with the keyword the text breaks. A form body loses its field types (every field is
    text): its type mutations are dropped."""
    schema = op.body.schema or {}
    media = op.body.media_type.split(";", 1)[0].strip().lower()
    every = values.mutations(schema, rng)
    muts = [m for m in every if m.violates]
    edges = [m for m in every if not m.violates and m.label != "valid"]
    if "json" in media:
        return muts, edges
    if media != "application/x-www-form-urlencoded":
        edges = [values.Mutation(m.label, m.value if isinstance(m.value, str) else json.dumps(m.value), None)
                 for m in edges]
    out = []
    for m in muts:
        if media == "application/x-www-form-urlencoded" and isinstance(m.value, dict):
            if m.violates != "type":
                out.append(m)
            continue
        wire = m.value if isinstance(m.value, str) else json.dumps(m.value)
        broken = values.violated(schema, wire)
        if broken:
            out.append(values.Mutation(m.label, wire, broken))
    return out, edges


def ops_view(spec) -> dict:
    """The checkers' view of the operations: method, path template, declared responses, secured."""
    return {op.op_id: {"method": op.method, "path": op.path,
                       "responses": {st: dict(r.content) for st, r in op.responses.items()},
                       "secured": bool(op.security)} for op in spec.operations}


class Sequence:
    """A sequence being built: steps, and the producer step already made per (op, user)."""

    def __init__(self, planner: "Planner", rng: random.Random, logins: bool = True) -> None:
        self.p, self.rng = planner, rng
        self.steps: list[dict] = []
        self.made: dict[tuple[str, str], int] = {}
        if planner.login is not None and logins:
            for user in USERS:
                self.steps.append({"id": len(self.steps), "op_id": planner.login.op_id, "user": user,
                                   "method": planner.login.method, "path": planner.login.path,
                                   "body": {"username": planner.users[user], "password": PASSWORD},
                                   "media_type": "application/json", "probe": LOGIN_PROBE})

    def add(self, op, user: str = "A", *, params: dict | None = None, body=GENERATE, probe: str = "",
            violates: str | None = None) -> int:
        """Append a step for `op` by `user`: path parameters bound to producers (made first when
        needed) unless given; the body generated from its schema unless given."""
        path_params = params if params is not None else self.bind(op, user)
        step = {"id": -1, "op_id": op.op_id, "user": user, "method": op.method,
                "path": self.p.base + op.path, "path_params": path_params, "query": {}, "headers": {},
                "probe": probe, "violates": violates, "needs_login": bool(op.security)}
        for prm in op.parameters:
            if prm.location not in ("query", "header"):
                continue
            if prm.location == "header" and prm.name.lower() in AUTH_HEADERS and self.p.login is not None:
                continue  # the login's token or cookie goes there (FastAPI declares `Header()` auth so)
            got = self.producer(op, prm.name, user) if prm.required or prm.location == "header" else None
            if got is None and (prm.required or self.rng.random() < 0.3):
                got = {"value": values.generate(prm.schema or {"type": "string"}, self.rng)}
            if got is not None:
                step["query" if prm.location == "query" else "headers"][prm.name] = got
        for slot in self.p.credentials.get(op.op_id, ()):  # API keys from the operation that issues them
            got = self.producer(op, slot.key, user)
            if got is not None:
                step["query" if slot.location == "query" else "headers"].setdefault(slot.name, got)
        if op.body is not None:
            step["media_type"] = wire_media(op.body.media_type)
            if body is GENERATE:
                body = self.bind_body(op, user, values.generate(op.body.schema or {}, self.rng))
            step["body"] = body
        step["id"] = len(self.steps)  # producers of body fields were appended first
        self.steps.append(step)
        return step["id"]

    def producer(self, op, param: str, user: str) -> dict | None:
        """A binding of `op`'s `param` to the first producer's step of `user` (made on demand), or None."""
        prods = [pr for pr in self.p.graph.producers_of(op.op_id, param)
                 if pr.op_id in self.p.by_id and pr.op_id != op.op_id]
        if not prods:
            return None
        prod = prods[0]
        key = (prod.op_id, user)
        if key not in self.made:
            if len(self.steps) > 60:
                raise RecursionError(f"producers of {op.op_id} nest too deep")
            self.made[key] = self.add(self.p.by_id[prod.op_id], user)
        return {"from": self.made[key], "source": prod.source}

    def bind(self, op, user: str) -> dict:
        """Bindings for `op`'s path parameters: the newest producer step of `user`, made on demand."""
        out = {}
        for name in op.path_params:
            got = self.producer(op, name, user)
            if got is None:
                prm = op.param(name, "path")
                got = {"value": values.generate((prm.schema if prm else None) or {"type": "string"}, self.rng)}
            out[name] = got
        return out

    def bind_body(self, op, user: str, body):
        """A generated JSON body with its top-level fields that have producers bound to them."""
        if not isinstance(body, dict):
            return body
        for name in list(body):
            got = self.producer(op, f"body:/{name}", user)
            if got is not None:
                body[name] = {"$bind": got}
        return body

    def last(self) -> dict:
        return self.steps[-1]


class Planner:
    """Builds the sequences of one run (see the module docstring)."""

    def __init__(self, spec, graph, login: Login | None, users: dict[str, str]) -> None:
        self.spec, self.graph, self.login, self.users = spec, graph, login, users
        self.base = spec.base_path
        # An event stream never ends: Tier 1's sse slice exercises it, a sequence would only wait.
        self.streams = {op.op_id for op in spec.operations
                        if any("text/event-stream" in r.content for r in op.responses.values())}
        # A WebSocket upgrade (101) is no request/response exchange: Tier 1's ws slice exercises it.
        self.upgrades = {op.op_id for op in spec.operations if "101" in op.responses}
        self.by_id = {op.op_id: op for op in spec.operations
                      if op.op_id not in self.streams and op.op_id not in self.upgrades}
        self.credentials = {op.op_id: credential_slots(spec, op) for op in spec.operations}
        # creator → [(DELETE operation, source)]: what ends the resources it makes (garbage collection)
        self.deleters: dict[str, list] = {}
        for op in self.by_id.values():
            if op.method != "DELETE" or not op.path_params:
                continue
            firsts: dict[str, str] = {}
            for pr in graph.producers_of(op.op_id, op.path_params[-1]):
                if pr.op_id in self.by_id and pr.op_id != op.op_id:
                    firsts.setdefault(pr.op_id, pr.source)
            for creator, source in firsts.items():
                self.deleters.setdefault(creator, []).append((op, source))
        # No operation states a security requirement: the document says nothing about who may do
        # what, so the cross-user probe asks the target itself (an anonymous request first).
        self.undeclared = not any(op.security for op in spec.operations)
        self.order = [o for o in graph.order() if o in self.by_id] or list(self.by_id)
        self.order += [o for o in self.by_id if o not in self.order]

    def new(self, rng: random.Random) -> Sequence:
        return Sequence(self, rng)

    def _collection_read(self, op):
        return next((o for o in self.spec.operations if o.method == "GET" and o.path == op.path), None)

    def lean_tasks(self) -> list[tuple[str, str]]:
        """(kind, op_id) of every lean sequence: each operation, then its checker probes."""
        tasks = [("reach", o) for o in self.order]
        for o in self.order:
            op = self.by_id[o]
            if op.method == "DELETE" and op.path_params:
                tasks.append(("after-delete", o))
            if op.path_params and (op.security or self.undeclared) and self.login is not None:
                tasks.append(("cross-user", o))
            if len(op.path_params) >= 2:
                tasks.append(("wrong-parent", o))
            if op.path_params:
                tasks.append(("malformed-id", o))
            if op.body is not None:
                tasks.append(("mutated", o))
        return tasks

    def build(self, kind: str, op_id: str, rng: random.Random) -> list[dict]:
        """The steps of one task."""
        op = self.by_id[op_id]
        seq = self.new(rng)
        getattr(self, "_" + kind.replace("-", "_"))(seq, op)
        return seq.steps

    def _reach(self, seq: Sequence, op) -> None:
        seq.add(op)

    def _after_delete(self, seq: Sequence, op) -> None:
        params = seq.bind(op, "A")
        seq.add(op, params=params)
        for other in self.spec.operations:
            if other.path == op.path and other.method in ("GET", "PUT", "PATCH"):
                seq.add(other, params=params, probe="after-delete")
        seq.add(op, params=params, probe="after-delete")

    def _cross_user(self, seq: Sequence, op) -> None:
        params = seq.bind(op, "A")
        if not op.security:  # a document without security: does the operation refuse an anonymous client?
            seq.add(op, ANONYMOUS, params=params, probe=ANONYMOUS_PROBE)
        seq.add(op, "B", params=params, probe="cross-user")

    def _wrong_parent(self, seq: Sequence, op) -> None:
        params = seq.bind(op, "A")
        first = op.path_params[0]
        prod_step = seq.steps[params[first]["from"]] if "from" in params[first] else None
        child = params[op.path_params[-1]]
        if prod_step is not None and child.get("from") == prod_step["id"]:
            # The parent id is fed by the child's own create (a link echoing `user_id`): a twin of
            # it is another child under the same parent. Replay the parent's create instead, the
            # producer the child's create was bound to for its own first path parameter.
            up = next(iter((prod_step.get("path_params") or {}).values()), None)
            if isinstance(up, dict) and "from" in up:
                prod_step = seq.steps[up["from"]]
                params = {**params, first: {"from": prod_step["id"], "source": up["source"]}}
        if prod_step is None:
            seq.add(op, params=params)
            return
        twin = {**prod_step, "id": len(seq.steps)}
        seq.steps.append(twin)
        seq.add(op, params={**params, first: {"from": twin["id"], "source": params[first]["source"]}},
                probe="wrong-parent")

    def _malformed_id(self, seq: Sequence, op) -> None:
        params = seq.bind(op, "A")
        name = op.path_params[-1]
        for bad in MALFORMED_IDS:
            seq.add(op, params={**params, name: {"value": bad, **({"raw": True} if "%" in bad else {})}},
                    probe="malformed-id")

    def _mutated(self, seq: Sequence, op) -> None:
        """Schema-violating mutations (each between two collection reads for a create), then valid
        boundary values: a very long or unicode string the schema allows is still a valid request,
        and a 5xx to it is the "crash on a long field value" class."""
        params = seq.bind(op, "A")
        violating, edges = body_values(op, seq.rng)
        muts = violating[:MAX_MUTATIONS]
        listing = self._collection_read(op) if op.method == "POST" else None
        for m in muts:
            if listing is not None:
                seq.add(listing, params=params)
                before = seq.last()
            seq.add(op, params=params, body=m.value, probe="mutated", violates=f"{m.label}: {m.violates}")
            if listing is not None:  # the same read again (same query): the two listings compare
                seq.steps.append({**before, "id": len(seq.steps)})
        for m in edges[:MAX_EDGES]:
            seq.add(op, params=params, body=m.value, probe=EDGE_PROBE + m.label)

    def cleanup(self, steps: list[dict], rng: random.Random) -> list[dict]:
        """Garbage collection (RESTler's): after a sequence, a DELETE for every resource it created
        that a DELETE operation ends, bound to the creating step (its other path parameters and
        headers bound as usual, to the producers the sequence already made). Run after the
        sequence on its connections and never judged, so that what a long run creates does not
        pile up in the target (memory, per-user quotas). At most MAX_CLEANUP steps; none for
        steps whose ids are not their positions (a shrunk or foreign sequence)."""
        if not self.deleters or [s.get("id") for s in steps] != list(range(len(steps))):
            return []
        seq = Sequence(self, rng, logins=False)
        seq.steps = list(steps)
        for st in steps:
            if st.get("probe") != LOGIN_PROBE:
                seq.made[(st["op_id"], st.get("user", "A"))] = st["id"]
        for st in reversed(steps):  # children before their parents
            for op, source in self.deleters.get(st["op_id"], ()) if st.get("probe") != LOGIN_PROBE else ():
                if len(seq.steps) - len(steps) >= MAX_CLEANUP:
                    return seq.steps[len(steps):]
                user = st.get("user", "A")
                params = {op.path_params[-1]: {"from": st["id"], "source": source}}
                try:
                    for name in op.path_params[:-1]:  # a parent: the producer the sequence made
                        params[name] = seq.producer(op, name, user) or {"value": ""}
                    seq.add(op, user, params={n: params[n] for n in op.path_params}, probe="cleanup")
                except RecursionError:
                    continue
        return seq.steps[len(steps):]

    def pair(self, first: str, second: str, rng: random.Random) -> list[dict]:
        """BFS depth 2: two operations, producers shared."""
        seq = self.new(rng)
        seq.add(self.by_id[first])
        seq.add(self.by_id[second])
        return seq.steps

    def random_walk(self, rng: random.Random, length: int) -> list[dict]:
        """Seeded random extension: random operations, users and payloads (a quarter mutated)."""
        seq = self.new(rng)
        for _ in range(length):
            op = self.by_id[rng.choice(self.order)]
            user = "B" if self.login is not None and rng.random() < 0.2 else "A"
            if op.body is not None and rng.random() < 0.25:
                violating, edges = body_values(op, rng)
                muts = violating + edges
                if muts:
                    m = rng.choice(muts)
                    if m.violates:
                        seq.add(op, user, body=m.value, probe="mutated", violates=f"{m.label}: {m.violates}")
                    else:
                        seq.add(op, user, body=m.value, probe=EDGE_PROBE + m.label)
                    continue
            seq.add(op, user)
        return seq.steps

