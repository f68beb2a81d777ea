"""Minimal reproducers for Markov findings: replayable request sequences and their shrinking.

A walker keeps the steps of its current session (`Step`: the state's method and
path template, the captured values it used, the query, the body, and what its
response let it capture). A sequence of steps is replayed on a fresh connection
and a fresh login, and every captured value is *re-bound*: a step that used
`id=17` because an earlier step's response gave `id=17` uses whatever that
earlier step's response gives in the replay. So a sequence reproduces against
a freshly started server, not only against the process that saw it first.

Such a sequence is shrunk with the shared `probatorium.shrink.ddmin` (delta
debugging): a candidate whose steps need values that no earlier step of the
candidate captures is dropped without a replay (`closed_under_captures` is its
`valid`), and a failing replay cuts the candidate after the step that failed
(the replay's `failed_at` is the oracle's answer).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from probatorium.api.spec import answered_by_design

from .client import CookieJar, HttpResult
from .values import Templates, captures

HISTORY_LEN = 64  # steps of the current session a walker keeps for shrinking
SHRINK_MAX_REPLAYS = 50
SHRINK_SECONDS = 20.0


# ---------------------------------------------------------------------------------------
# Responses: what a walker reads from them (shared by the walk and the replay)


def json_doc(res: HttpResult) -> Any:
    """The response body as JSON, or None."""
    if not res.body:
        return None
    try:
        return json.loads(res.body)
    except (ValueError, RecursionError):
        return None


def json_field(res: HttpResult, names: tuple[str, ...]) -> Any:
    """The first of `names` present in a JSON object body, or None."""
    doc = json_doc(res)
    if isinstance(doc, dict):
        for n in names:
            if n in doc:
                return doc[n]
    return None


def invariant_tag(res: HttpResult) -> str | None:
    """The `<ID>` of a 5xx whose JSON body carries `"x-invariant": "<ID>"`."""
    if res.status is None or res.status < 500:
        return None
    tag = json_field(res, ("x-invariant",))
    if isinstance(tag, str) and tag.strip() and len(tag) < 64:
        return tag.strip()
    return None


def retry_after(res: HttpResult) -> float:
    """A short pause for a 429/503: Retry-After when it is small, else 0.25 s (never over 1 s)."""
    raw = res.header(b"retry-after") or b""
    try:
        return max(0.05, min(1.0, float(raw.decode("latin-1").strip())))
    except ValueError:
        return 0.25


def server_error(res: HttpResult, by_design: Collection[str] = ()) -> bool:
    """A 5xx that is I-API-5XX evidence: not tagged x-invariant (the tag names its own predicate)
    and not a 502/503/504 in `by_design` (the statuses its operation declares: a documented
    gateway, circuit breaker or timeout answering by design). A declared 500 still is."""
    if res.status is None or not 500 <= res.status < 600 or invariant_tag(res):
        return False
    return not answered_by_design(res.status, by_design)


def findings(res: HttpResult) -> list[str]:
    """The predicates one response shows: framing violations, an x-invariant tag, or I-API-5XX for
    any other 5xx (which statuses an operation declares by design is the caller's to except: a
    replay matches the finding's own status)."""
    out = [v.predicate for v in res.violations]
    tag = invariant_tag(res)
    if tag:
        out.append(tag)
    elif server_error(res):
        out.append("I-API-5XX")
    return out


def session_headers(user_agent: str, jar: CookieJar, token: str | None, csrf: str | None,
                    content_type: str | None = None) -> list[tuple[str, str]]:
    """The headers a walker sends: cookies, bearer token, CSRF token, content type."""
    h = [("User-Agent", user_agent), ("Accept", "application/json")]
    cookie = jar.header()
    if cookie:
        h.append(("Cookie", cookie))
    if token:
        h.append(("Authorization", f"Bearer {token}"))
    if csrf:
        h.append(("X-CSRF-Token", csrf))
    if content_type:
        h.append(("Content-Type", content_type))
    return h


# ---------------------------------------------------------------------------------------
# One recorded step


@dataclass
class Step:
    """One Markov request as recorded: enough to send it again with re-bound captured values."""

    op: str  # "DELETE /items/{id}" (the state's key)
    method: str
    path: str  # template with {params}
    used: dict[str, str] = field(default_factory=dict)  # param -> value captured earlier in the session
    query: str = ""
    body: bytes | None = None
    ctype: str | None = None
    gives: list[dict[str, str]] = field(default_factory=list)  # bindings its response gave (original run)
    status: int | str | None = None  # what the original run got

    def needs(self) -> set[tuple[str, str]]:
        return set(self.used.items())

    def provides(self) -> set[tuple[str, str]]:
        return {kv for b in self.gives for kv in b.items()}

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": self.op, "method": self.method, "path": self.path, "used": self.used,
                             "query": self.query, "ctype": self.ctype, "gives": self.gives, "status": self.status}
        if self.body is not None:
            try:
                d["body"] = self.body.decode("utf-8")
            except UnicodeDecodeError:
                d["body_b64"] = base64.b64encode(self.body).decode()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Step":
        body = d["body"].encode("utf-8") if "body" in d else (
            base64.b64decode(d["body_b64"]) if "body_b64" in d else None)
        return cls(op=d["op"], method=d["method"], path=d["path"], used=dict(d.get("used") or {}),
                   query=d.get("query") or "", body=body, ctype=d.get("ctype"),
                   gives=[dict(b) for b in d.get("gives") or []], status=d.get("status"))

    def line(self) -> str:
        return f"{self.method} {self.path}" + (f" {self.used}" if self.used else "")


def remember(history: list[Step], step: Step, live: set[tuple[str, str]], limit: int = HISTORY_LEN) -> None:
    """Append a step, keeping at most `limit`. When full, forget first the oldest step that neither
    first captured nor used a value the walker still holds (`live`: pings, repeated lists, steps on
    resources since deleted), then the oldest read (GET/HEAD) of one, then the oldest other use of
    one, then the oldest: the step that created a resource still in use, and the requests that
    changed it, stay replayable."""
    history.append(step)
    if len(history) <= limit:
        return
    first_provider: dict[tuple[str, str], int] = {}
    for i, s in enumerate(history):
        for kv in s.provides():
            first_provider.setdefault(kv, i)
    firsts = {first_provider[kv] for kv in live if kv in first_provider}
    last = len(history) - 1
    idle = [i for i in range(last) if i not in firsts and not history[i].needs() & live]
    users = [i for i in range(last) if i not in firsts]
    reads = [i for i in users if history[i].method in ("GET", "HEAD")]
    del history[(idle or reads or users or [0])[0]]


def closed_under_captures(steps: Sequence[Step]) -> bool:
    """True when every value a step uses is captured by an earlier step of the same sequence."""
    have: set[tuple[str, str]] = set()
    for s in steps:
        if not s.needs() <= have:
            return False
        have |= s.provides()
    return True


def replayable(steps: Sequence[Step]) -> list[Step]:
    """The steps whose values can all be traced to earlier steps (drops those that used values
    captured before the recorded history began, and whatever depended on them)."""
    have: set[tuple[str, str]] = set()
    out = []
    for s in steps:
        if s.needs() <= have:
            out.append(s)
            have |= s.provides()
    return out


def _with_providers(steps: Sequence[Step], keep: set[int]) -> list[Step]:
    """The kept steps plus, transitively, the earliest earlier step that captured each value they use."""
    todo = sorted(keep)
    keep = set(keep)
    while todo:
        i = todo.pop()
        for kv in steps[i].needs():
            src = next((j for j in range(i) if kv in steps[j].provides()), None)
            if src is not None and src not in keep:
                keep.add(src)
                todo.append(src)
    return [steps[i] for i in sorted(keep)]


def focus(steps: Sequence[Step]) -> list[list[Step]]:
    """Small candidates to try before delta debugging, for a sequence whose LAST step fails:
    the failing step with the steps that captured its values (a data-dependency slice), then
    also every step that touched the same resources (state-dependent bugs: archive, then update)."""
    last = len(steps) - 1
    deps = _with_providers(steps, {last})
    values = {kv for s in deps for kv in s.needs() | s.provides()} | steps[last].needs()
    touching = {i for i, s in enumerate(steps) if s.needs() & values} | {last}
    wide = _with_providers(steps, touching)
    out = [deps]
    if len(wide) > len(deps):
        out.append(wide)
    return [c for c in out if len(c) < len(steps)]


def _rebind_body(doc: Any, mapping: dict[tuple[str, str], str]) -> Any:
    """Properties named like a path parameter whose value was captured get the re-bound value."""
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            if isinstance(v, (str, int)) and not isinstance(v, bool) and (k, str(v)) in mapping:
                new = mapping[(k, str(v))]
                out[k] = int(new) if isinstance(v, int) and new.lstrip("-").isdigit() else new
            else:
                out[k] = _rebind_body(v, mapping)
        return out
    if isinstance(doc, list):
        return [_rebind_body(x, mapping) for x in doc]
    return doc


# ---------------------------------------------------------------------------------------
# Replaying a sequence


@dataclass
class ReplayOutcome:
    """What one replay of a sequence did."""

    failed_at: int | None = None  # index of the first step that showed the finding
    lines: list[str] = field(default_factory=list)  # "201 POST /items" per request sent
    sent: list[bytes] = field(default_factory=list)
    last: HttpResult | None = None  # the response that showed the finding (or the last one)
    skipped: list[int] = field(default_factory=list)  # steps not sent: no replayed step captured their value
    error: str = ""  # why the replay could not go on (login refused, target gone)
    target_gone: bool = False


@dataclass
class Replayer:
    """Replays step sequences on fresh connections and fresh sessions."""

    connection_factory: Callable[[], Any]
    templates: Templates
    login: tuple[str, str] | None = None
    credentials: Callable[[int], tuple[str, str]] | None = None  # replay number -> (user, password)
    user_agent: str = "probatorium-markov"
    attempts: int = 0

    async def replay(self, steps: Sequence[Step], predicate: str, op: str | None = None,
                     status: int | None = None) -> ReplayOutcome:
        """Send the steps in order (after a login) and stop at the first response showing
        `predicate` (on operation `op`, with status `status`, when given: an I-API-5XX finding is
        one (operation, status) bucket)."""
        self.attempts += 1
        session = _ReplaySession(self, self.connection_factory())
        try:
            await session.run(steps, predicate, op, status)
            return session.out
        finally:
            await session.conn.close()


class _ReplaySession:
    """One replay: its connection, its session (cookies, token, CSRF token) and the re-bound values."""

    def __init__(self, replayer: Replayer, conn: Any) -> None:
        self.r = replayer
        self.conn = conn
        self.out = ReplayOutcome()
        self.jar = CookieJar()
        self.token: str | None = None
        self.csrf: str | None = None
        self.mapping: dict[tuple[str, str], str] = {}  # (param, original value) -> value in this replay

    async def send(self, method: str, target: str, body: bytes | None, ctype: str | None) -> HttpResult:
        headers = session_headers(self.r.user_agent, self.jar, self.token, self.csrf, ctype)
        res = await self.conn.request(method, target, headers, body)
        self.out.sent.append(res.sent)
        self.out.lines.append(f"{res.status if res.status is not None else res.error} {method} {target}")
        for v in res.header_values(b"set-cookie"):
            self.jar.update([v])
        return res

    async def login(self) -> bool:
        """A fresh session (a fresh user when the replayer has credentials); False when refused."""
        r = self.r
        if r.login is None:
            return True
        user, pw = r.credentials(r.attempts) if r.credentials else ("probatorium-replay", "pw")
        self.jar.clear()
        self.token = self.csrf = None
        res = await self.send(r.login[0], r.login[1], json.dumps({"username": user, "password": pw}).encode(),
                              "application/json")
        if res.status is None:
            self.out.target_gone = True
        if res.status is None or not 200 <= res.status < 300:
            self.out.error = f"login answered {res.status if res.status is not None else res.error}"
            return False
        t = json_field(res, ("token", "access_token"))
        self.token = t if isinstance(t, str) and t else None
        return True

    def rebound(self, st: Step) -> tuple[dict[str, str], str, bytes | None]:
        """The step's parameters, target and body with this replay's values for the captured ones."""
        used = {k: self.mapping[(k, v)] for k, v in st.used.items()}
        target = st.path
        for k, v in used.items():
            target = target.replace("{" + k + "}", quote(v, safe=""))
        target += st.query
        body = st.body
        if body is not None and st.used and (st.ctype or "").endswith("json"):
            try:
                body = json.dumps(_rebind_body(json.loads(body), self.mapping), separators=(",", ":")).encode()
            except (ValueError, RecursionError):
                pass
        return used, target, body

    async def send_step(self, st: Step, target: str, body: bytes | None) -> HttpResult | None:
        """Send a step with the walker's own reactions: re-login on 401, pause on 429 (None: re-login refused)."""
        res = await self.send(st.method, target, body, st.ctype)
        for _retry in range(2):
            if res.status == 401 and self.r.login is not None:
                if not await self.login():
                    return None
            elif res.status == 429 or (res.status == 503 and res.header(b"retry-after") is not None):
                await asyncio.sleep(retry_after(res))
            else:
                break
            res = await self.send(st.method, target, body, st.ctype)
        return res

    async def run(self, steps: Sequence[Step], predicate: str, op: str | None, status: int | None = None) -> None:
        out = self.out
        if not await self.login():
            return
        for i, st in enumerate(steps):
            if any(kv not in self.mapping for kv in st.used.items()):
                out.skipped.append(i)  # its resource does not exist in this replay
                out.lines.append(f"(skipped: no value captured for {st.line()})")
                continue
            used, target, body = self.rebound(st)
            res = await self.send_step(st, target, body)
            if res is None:
                return
            out.last = res
            if predicate in findings(res) and (op is None or st.op == op) and status in (None, res.status):
                out.failed_at = i
                return
            if res.status is None:
                out.error = f"step {i + 1} ({st.op}): {res.error}"
                out.target_gone = True
                return
            if 200 <= res.status < 300:
                t = json_field(res, ("csrf_token", "csrfToken"))
                if isinstance(t, str) and t:
                    self.csrf = t
                if st.method != "DELETE":
                    new = captures(self.r.templates, st.path, used, res.status, res.header(b"location"),
                                   res.body, res.header(b"content-type"))
                    _align(st.gives, new, self.mapping)


def _align(original: list[dict[str, str]], new: list[dict[str, str]], mapping: dict[tuple[str, str], str]) -> None:
    """Map each originally captured value to the value captured at the same place in the replay
    (the first step that captured a value wins)."""
    pairs = zip(original, new) if len(original) == len(new) else zip(reversed(original), reversed(new))
    for ob, nb in pairs:
        if ob.keys() != nb.keys():
            continue
        for k, v in ob.items():
            mapping.setdefault((k, v), nb[k])
