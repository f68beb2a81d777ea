"""The Tier 2 checker registry: each checker is one small named unit with the property it guards.

A checker is a pure function over one recorded sequence of exchanges
(:class:`.exchange.Exchange`) and a view of the operations
(``{op_id: {"method", "path", "responses": {status: {media: schema}},
"secured"}}``); it returns how many exchanges it evaluated and its findings.
The catalogue (:mod:`..invariants`) judges the counts; findings become
incidents. This module is standard-library only: a dossier's repro.py embeds
it verbatim (with :mod:`.exchange` and :mod:`.minischema`) and decides with
exactly these rules.

RFC-correct answers are never findings: a 501 to a method the path does not
declare, a 405 carrying ``Allow``, a 415 (RFC 9110 §15.6.2, §15.5.6,
§15.5.16); a 502/503/504 the operation declares (a documented gateway, circuit
breaker or timeout answering by design) is not a 5xx finding; a declared 500 still is. A 5xx whose JSON body names ``x-invariant``
counts once, for the predicate it names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from probatorium.api.spec import answered_by_design

REJECTIONS = (400, 409, 422)  # a create refused for its content (not auth, routing or media type)
MUTATING = ("PUT", "PATCH", "DELETE", "POST")


@dataclass(frozen=True)
class Finding:
    """One checker's finding on one exchange of a sequence."""

    predicate: str
    op_id: str
    status: int | None
    step: int  # position in the sequence of the exchange that shows it
    detail: str
    severity: str = ""  # "" = the catalogue's; "MED" for an undeclared status (I-API-SCHEMA)

    @property
    def bucket(self) -> tuple:
        return (self.predicate, self.op_id, self.status)


@dataclass(frozen=True)
class Checker:
    predicate: str
    property: str  # the docstring's first sentence
    run: Callable


CHECKERS: dict = {}


def checker(predicate: str):
    """Register a checker under its predicate; its docstring's first sentence is its property."""
    def wrap(fn):
        CHECKERS[predicate] = Checker(predicate, (fn.__doc__ or "").strip().split("\n")[0], fn)
        return fn
    return wrap


def _tag(ex) -> str | None:
    """The predicate a 5xx names in its JSON body's ``x-invariant``, if any."""
    if ex.status is None or ex.status < 500:
        return None
    try:
        doc = ex.json()
    except ValueError:
        return None
    tag = doc.get("x-invariant") if isinstance(doc, dict) else None
    return tag if isinstance(tag, str) and tag else None


def _declared_key(op: dict, status: int) -> str | None:
    responses = op.get("responses") or {}
    for key in (str(status), f"{status // 100}XX", f"{status // 100}xx", "default"):
        if key in responses:
            return key
    return None


def _rfc_correct(ex, ops: dict) -> bool:
    """A 501 to an undeclared method, a 405 with Allow, a 415: what RFC 9110 asks for."""
    if ex.status == 415 or (ex.status == 405 and ex.header("Allow") is not None):
        return True
    if ex.status == 501:
        op = ops.get(ex.op_id) or {}
        methods = {o.get("method", "").upper() for o in ops.values() if o.get("path") == op.get("path")}
        return ex.method.upper() not in methods
    return False


def _base(path: str) -> str:
    return path.split("?", 1)[0].rstrip("/")


@checker("I-API-5XX")
def check_5xx(seq: list, ops: dict, validate=None) -> tuple:
    """No request, valid or mutated, is answered with a 5xx (a 502/503/504 the operation declares excepted)."""
    found, n = [], 0
    for i, ex in enumerate(seq):
        if ex.status is None:
            continue
        n += 1
        if ex.status < 500 or _rfc_correct(ex, ops):
            continue
        tag = _tag(ex)
        if tag:
            found.append(Finding(tag, ex.op_id, ex.status, i, f"{ex.method} {ex.path} answered {ex.status} "
                                 f"with x-invariant {tag}"))
            continue
        if ex.probe == "malformed-id":
            continue  # I-API-OBJ's
        if answered_by_design(ex.status, (ops.get(ex.op_id) or {}).get("responses") or {}):
            continue
        found.append(Finding("I-API-5XX", ex.op_id, ex.status, i,
                             f"{ex.method} {ex.path} answered {ex.status}"
                             + (f" (mutated request: {ex.violates})" if ex.violates else "")
                             + (f" (valid {ex.probe})" if ex.probe.startswith("boundary: ") else "")))
    return n, found


@checker("I-API-OBJ")
def check_obj(seq: list, ops: dict, validate=None) -> tuple:
    """A request whose id is replaced by a malformed one is refused with a 4xx, never a 5xx."""
    found, n = [], 0
    for i, ex in enumerate(seq):
        if ex.probe != "malformed-id" or ex.status is None:
            continue
        n += 1
        if ex.status >= 500 and not _tag(ex) and not _rfc_correct(ex, ops):
            found.append(Finding("I-API-OBJ", ex.op_id, ex.status, i,
                                 f"{ex.method} {ex.path} (a malformed id) answered {ex.status}"))
    return n, found


def _path_bindings(ex) -> list:
    return [(k, b) for k, b in (ex.bindings or {}).items() if b.get("in") == "path"]


@checker("I-API-UAF")
def check_uaf(seq: list, ops: dict, validate=None) -> tuple:
    """A deleted resource is no longer readable or writable.

    Only a resource the sequence created counts (the DELETE's last path parameter was bound to
    a producer's answer); a PUT after the DELETE may create it anew (RFC 9110 §9.3.4) and a
    repeated DELETE may be answered 2xx (idempotent), so reads (GET, HEAD) and PATCH are judged,
    until a 2xx PUT on the same path creates the resource again."""
    found, n = [], 0
    deleted: dict = {}  # path → position of the 2xx DELETE
    for i, ex in enumerate(seq):
        path = _base(ex.path)
        if path in deleted and ex.method.upper() == "PUT" and ex.ok:
            del deleted[path]  # re-created at the name the client chose: reading it is no use-after-free
            continue
        if path in deleted and ex.method.upper() in ("GET", "HEAD", "PATCH") and ex.status is not None:
            n += 1
            if ex.ok:
                d = seq[deleted[path]]
                found.append(Finding("I-API-UAF", ex.op_id, ex.status, i,
                                     f"DELETE {path} answered {d.status}, then {ex.method} {ex.path} "
                                     f"answered {ex.status}"))
        bound = _path_bindings(ex)
        if ex.method.upper() == "DELETE" and ex.ok and bound and bound[-1][1].get("from") is not None:
            deleted.setdefault(path, i)
    return n, found


def _listed(ex) -> list | None:
    """The members of a collection response (a JSON array, or an object's first array field)."""
    try:
        doc = ex.json()
    except ValueError:
        return None
    if isinstance(doc, dict):
        doc = next((v for v in doc.values() if isinstance(v, list)), None)
    if not isinstance(doc, list):
        return None
    return [json.dumps(m.get("id"), sort_keys=True) if isinstance(m, dict) and "id" in m
            else json.dumps(m, sort_keys=True) for m in doc]


@checker("I-API-LEAK")
def check_leak(seq: list, ops: dict, validate=None) -> tuple:
    """A create that was refused leaves no resource behind."""
    found, n = [], 0
    for i in range(1, len(seq) - 1):
        before, ex, after = seq[i - 1], seq[i], seq[i + 1]
        if ex.method.upper() != "POST" or ex.status not in REJECTIONS:
            continue
        path = _base(ex.path)
        if not all(x.method.upper() == "GET" and _base(x.path) == path and x.user == ex.user and x.ok
                   for x in (before, after)) or before.path != after.path:
            continue  # two reads of one listing (the same query: a filter or a page cursor changes it)
        old, new = _listed(before), _listed(after)
        if old is None or new is None:
            continue
        n += 1
        extra = [m for m in new if m not in set(old)]
        if extra:
            found.append(Finding("I-API-LEAK", ex.op_id, ex.status, i + 1,  # the read that shows it
                                 f"POST {path} was refused ({ex.status}) but GET {path} then lists "
                                 f"{len(extra)} new member(s): {', '.join(extra[:3])}"))
    return n, found


@checker("I-API-AUTHZ")
def check_authz(seq: list, ops: dict, validate=None) -> tuple:
    """A second user never reads, changes or deletes the first user's resource."""
    found, n = [], 0
    refused = {ex.op_id: ex.status for ex in seq if ex.probe == "anonymous" and ex.status in (401, 403)}
    for i, ex in enumerate(seq):
        op = ops.get(ex.op_id) or {}
        if ex.status is None or ex.probe == "anonymous" or not (op.get("secured") or ex.op_id in refused):
            continue
        foreign = [(k, b) for k, b in _path_bindings(ex) if b.get("user") and b["user"] != ex.user]
        if not foreign:
            continue
        n += 1
        if ex.ok:
            k, b = foreign[0]
            why = "" if op.get("secured") else (f" (no security declared, but the operation answered an anonymous "
                                                f"request {refused[ex.op_id]}: it authenticates its users)")
            found.append(Finding("I-API-AUTHZ", ex.op_id, ex.status, i,
                                 f"user {ex.user} {ex.method} {ex.path} answered {ex.status}; {k}={b['value']} "
                                 f"belongs to user {b['user']} (created by {b['path']})" + why))
    return n, found


@checker("I-API-HIERARCHY")
def check_hierarchy(seq: list, ops: dict, validate=None) -> tuple:
    """A child resource is reachable only through the parent it belongs to."""
    found, n = [], 0
    for i, ex in enumerate(seq):
        bound = _path_bindings(ex)
        if len(bound) < 2 or ex.status is None:
            continue
        (child, cb), parents = bound[-1], bound[:-1]
        segments = cb.get("path", "").split("/")
        wrong = [(k, b) for k, b in parents if str(b.get("value")) not in segments]
        if not wrong:
            continue
        n += 1
        if ex.ok:
            k, b = wrong[0]
            found.append(Finding("I-API-HIERARCHY", ex.op_id, ex.status, i,
                                 f"{ex.method} {ex.path} answered {ex.status}: {child}={cb['value']} was created "
                                 f"under {cb['path']}, not under {k}={b['value']}"))
    return n, found


def _media(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _media_matches(got: str, declared: list) -> bool:
    for d in declared:
        d = _media(d)
        if d in ("*/*", got) or (d.endswith("/*") and got.startswith(d[:-1])):
            return True
    return False


@checker("I-API-SCHEMA")
def check_schema(seq: list, ops: dict, validate=None) -> tuple:
    """Every response has a status the operation declares and the declared content type and schema."""
    found, n = [], 0
    for i, ex in enumerate(seq):
        op = ops.get(ex.op_id)
        if op is None or ex.status is None or ex.probe == "login" and not op.get("responses"):
            continue
        n += 1
        key = _declared_key(op, ex.status)
        if key is None:
            if not _rfc_correct(ex, ops) and ex.status < 500:
                found.append(Finding("I-API-SCHEMA", ex.op_id, ex.status, i,
                                     f"{ex.method} {ex.path} answered {ex.status}, which the operation does not "
                                     f"declare (and it has no default response)", severity="MED"))
            continue
        content = (op["responses"].get(key) or {})
        if not content or not ex.response_body or ex.method.upper() == "HEAD":
            continue
        got = _media(ex.header("Content-Type"))
        if not _media_matches(got, list(content)):
            found.append(Finding("I-API-SCHEMA", ex.op_id, ex.status, i,
                                 f"{ex.method} {ex.path} answered {ex.status} with Content-Type {got or '(none)'}; "
                                 f"declared: {', '.join(content)}"))
            continue
        schema = content.get(got, next((s for m, s in content.items() if _media_matches(got, [m])), None))
        if "json" not in got or not isinstance(schema, dict) or not schema or validate is None:
            continue
        try:
            doc = ex.json()
        except ValueError as e:
            found.append(Finding("I-API-SCHEMA", ex.op_id, ex.status, i,
                                 f"{ex.method} {ex.path} answered {ex.status} {got} that is not JSON: {e}"))
            continue
        errors = validate(schema, doc)
        if errors:
            found.append(Finding("I-API-SCHEMA", ex.op_id, ex.status, i,
                                 f"{ex.method} {ex.path} answered {ex.status} with a body that violates the "
                                 f"declared schema: {errors[0]}"))
    return n, found


@checker("I-API-LAX")
def check_lax(seq: list, ops: dict, validate=None) -> tuple:
    """A request that violates an explicit schema constraint is not answered 2xx."""
    found, n = [], 0
    for i, ex in enumerate(seq):
        if not ex.violates or ex.status is None:
            continue
        n += 1
        if ex.ok:
            found.append(Finding("I-API-LAX", ex.op_id, ex.status, i,
                                 f"{ex.method} {ex.path} violating {ex.violates} was answered {ex.status}"))
    return n, found


def check_sequence(seq: list, ops: dict, validate=None, only: str | None = None) -> tuple:
    """Run every checker (or only the one of `only`) over one sequence: ({predicate: evaluated},
    [findings])."""
    counts, findings = {}, []
    for pred, chk in CHECKERS.items():
        # a predicate no checker owns (a target's x-invariant tag) is found by the 5xx checker
        if only is not None and pred != only and not (only not in CHECKERS and pred == "I-API-5XX"):
            continue
        n, got = chk.run(seq, ops, validate)
        counts[pred] = n
        findings += got
    return counts, findings
