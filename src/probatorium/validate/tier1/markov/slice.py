"""The Markov slice: session-shaped traffic from markov.yaml over the OpenAPI operations.

Each walker owns one keep-alive connection, a cookie jar, a bearer token, a
pool of captured values and a seeded `random.Random` (seed derived from the
slice seed and the walker id). It logs in with its own credentials, follows
weighted transitions, fills `{params}` only from values captured in earlier
responses (a transition whose params have no captured value is not taken),
re-logs in on 401, and starts a new session after a terminal state (logout).

Every response goes through the strict parser (I-RFC-1/I-RFC-2); a 5xx with
`{"x-invariant": "<ID>"}` reports that predicate, any other 5xx reports I-API-5XX
once per (operation, status) bucket, except a 502/503/504 the operation declares
(by design) and a 501 to an operation the OpenAPI document does not declare
(RFC 9110 §15.6.2), as Tier 2's checker excepts them; when the spec offers the
key/value contract, walkers also check read-after-write on walker-owned keys
(I-DRV-1). Tallies are plain str→int maps (`counters()`, `per_operation()`).

Each walker keeps its session's recent steps; the first time a finding shows
on a Markov step, that walker shrinks the session to the shortest replayable
sequence that still shows it (shrink.py, bounded in replays and time) before
reporting it, so the incident's reproducer is minimal.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import string
import time
import traceback
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from .... import __version__
from ...incidents import Evidence
from ...openapi import Operation, load_operations
from ..base import SliceBase
from ....seeds import derive_seed
from ....shrink import ddmin
from .client import CookieJar, H1Connection, HttpResult, build_request
from .repro import markov_repro
from .shrink import (HISTORY_LEN, SHRINK_MAX_REPLAYS, SHRINK_SECONDS, Replayer, Step, closed_under_captures, focus,
                     invariant_tag, json_field, remember, replayable, retry_after, server_error, session_headers)
from .model import MarkovModel, State, check_against, default_chain, kv_operations, load_markov
from .values import Bindings, Templates, body_bytes, captures

TRACE_LEN = 200
REPLAY_LEN = 40
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
COUNTER_KEYS = ("requests", *STATUS_CLASSES, "errors", "logins", "login_failures", "relogins", "sessions",
                "captured", "captured_used", "dead_ends", "invariant_hits", "rfc_violations",
                "drv_checks", "drv_read_after_write_mismatch", "drv_after_delete_mismatch", "drv_unjudged",
                "backoffs", "internal_errors", "shrinks", "shrink_replays",
                "api5xx_checked", "api5xx_findings", "api5xx_excepted")
MAX_SHRINKS = 8  # per slice (cell): each is bounded by SHRINK_MAX_REPLAYS and SHRINK_SECONDS
MAX_CONCURRENT_SHRINKS = 2


class Connection(Protocol):
    async def request(self, method: str, target: str, headers: list[tuple[str, str]] | None = None,
                      body: bytes | None = None) -> HttpResult: ...

    async def close(self) -> None: ...


def status_class(status: int | None) -> str:
    if status is None:
        return "errors"
    return f"{status // 100}xx" if 200 <= status < 600 else "errors"


class Walker:
    """One walker's session state."""

    def __init__(self, slice_: "MarkovSlice", walker_id: int) -> None:
        self.id = walker_id
        self.seed = derive_seed(slice_.seed, "markov-walker", walker_id)
        self.rng = random.Random(self.seed)
        self.pace = random.Random(self.seed ^ 0x5A5A)
        self.tag = f"{slice_.seed & 0xFFFFFFFF:08x}-{walker_id}"
        self.username = f"walker-{self.tag}"
        self.password = "pw-" + hashlib.sha256(f"{slice_.seed}:{walker_id}".encode()).hexdigest()[:16]
        self.conn: Connection = slice_.connection_factory()
        self.jar = CookieJar()
        self.token: str | None = None
        self.csrf: str | None = None  # X-CSRF-Token for unsafe methods, once a response handed one out
        self.logged_in = False
        self.state: State | None = None
        self.bindings = Bindings()
        self.trace: deque[tuple[str, str, int | str]] = deque(maxlen=TRACE_LEN)
        self.sent_log: deque[bytes] = deque(maxlen=REPLAY_LEN)  # raw requests, for repro.py
        self.history: list[Step] = []  # this session's recent steps, for shrinking (see `remember`)
        self.deadline = float("inf")
        self.steps = 0
        self.kv_n = 0
        self.conn_errors = 0

    def headers(self, content_type: str | None = None) -> list[tuple[str, str]]:
        return session_headers(USER_AGENT, self.jar, self.token, self.csrf, content_type)

    def end_session(self) -> None:
        self.jar.clear()
        self.token = None
        self.csrf = None
        self.logged_in = False
        self.state = None
        self.bindings.clear()
        self.history.clear()


USER_AGENT = f"probatorium-markov/{__version__}"


class MarkovSlice(SliceBase):
    """Session-shaped traffic from a Markov model, from any number of walkers."""

    name = "markov"

    def __init__(self, host: str, port: int, *, openapi: Path | str | list[Operation] | None = None,
                 markov: Path | str | MarkovModel | None = None, seed: int = 0,
                 report: Callable[[Evidence], None] | None = None,
                 credentials: Callable[[int], tuple[str, str]] | None = None,
                 kv: bool = True, kv_ratio: float = 0.25, timeout: float = 10.0,
                 alive: Callable[[], Awaitable[bool]] | None = None,
                 recover: Callable[[], Awaitable[bool]] | None = None,
                 connection_factory: Callable[[], Connection] | None = None,
                 max_steps: int | None = None, think: float = 0.0, shrink: bool = True,
                 crashlog: Any = None, held: Any = None) -> None:
        self.host, self.port = host, port
        self.crashlog = crashlog  # crash.CrashLog: what was in flight when the target died
        self.seed = seed
        self.report = report or (lambda ev: None)
        self.credentials = credentials
        self.timeout = timeout
        self.alive, self.recover = alive, recover
        self.max_steps = max_steps
        self.think = think  # mean pause between steps (s); 0 = back to back
        self.connection_factory: Callable[[], Connection] = connection_factory or (
            lambda: H1Connection(self.host, self.port, timeout=self.timeout, held=held))
        self.openapi_path = None if openapi is None or isinstance(openapi, list) else str(Path(openapi).resolve())
        self.markov_path = str(Path(markov).resolve()) if isinstance(markov, (str, Path)) else None
        if isinstance(openapi, list):
            self.operations = openapi
        elif openapi is not None:
            self.operations = load_operations(openapi)
        else:
            self.operations = []
        if isinstance(markov, MarkovModel):
            self.model = markov
        elif markov is not None:
            self.model = load_markov(markov)
        else:
            self.model = default_chain(self.operations)
        self.notes: list[str] = list(self.model.notes)
        if self.operations and isinstance(markov, (str, Path)):
            self.notes += check_against(self.model, self.operations)
        self.ops = {(o.method, o.path): o for o in self.operations}
        self.declared = {o.key: frozenset(o.responses) for o in self.operations}  # op key → declared statuses
        self.kv = kv_operations(self.operations) if kv else None
        self.kv_ratio = kv_ratio if self.kv else 0.0
        if self.kv is not None:
            self.notes.append("key/value contract found: walkers check read-after-write on walker-owned keys")
        self.templates = Templates([s.path for s in self.model.states.values()] + [o.path for o in self.operations])
        self.tally: Counter = Counter()
        self.rfc: Counter = Counter()
        self.per_op: dict[str, Counter] = {}
        self.internal_errors: list[str] = []
        self.stopped_reason = ""
        self.walkers: dict[int, Walker] = {}
        self.shrink = shrink
        self.shrinking: set[tuple[str, str]] = set()  # findings being shrunk: their repeats wait
        self.shrunk: set[tuple[str, str]] = set()
        self.reported_5xx: set[str] = set()  # I-API-5XX cases already reported: repeats are only counted

    # ---- accounting ---------------------------------------------------------------------
    def _evidence_extra(self, w: Walker, **more: Any) -> dict[str, Any]:
        return {"slice": "markov", "walker": w.id, "walker_seed": f"0x{w.seed:016x}", "slice_seed": self.seed,
                "steps": w.steps, "username": w.username, "trace": [list(t) for t in w.trace], **more}

    def _evidence(self, w: Walker, predicate: str, detail: str, case: str, sent: bytes | None,
                  received: bytes | None, reproducer: dict[str, Any] | None = None, **more: Any) -> Evidence:
        reproducer = reproducer or {"walker_seed": f"0x{w.seed:016x}", "shrink": "not shrunk: not a Markov step "
                                    "(login or key/value check); repro.py replays the recorded requests"}
        raw = reproducer.get("raw")
        reproducer = {k: v for k, v in reproducer.items() if k != "raw"}
        seq = reproducer.get("sequence") if reproducer.get("reproduced") else None
        user, pw = self.credentials(w.id) if self.credentials else (w.username, w.password)
        return Evidence(predicate=predicate, detail=detail, case=case, sent=sent, received=received, seed=w.seed,
                        extra=self._evidence_extra(w, reproducer=reproducer, **more),
                        repro=markov_repro(predicate=predicate, detail=detail, slice_seed=self.seed, walker_id=w.id,
                                           steps=w.steps, requests=raw or list(w.sent_log),
                                           addr=f"{self.host}:{self.port}", version=__version__,
                                           sequence=seq, operation=more.get("operation"),
                                           status=more.get("status") if predicate == "I-API-5XX" else None,
                                           templates=self.templates.templates,
                                           login=list(self.model.login) if self.model.login else None,
                                           username=user, password=pw,
                                           fixed_credentials=self.credentials is not None,
                                           shrink=reproducer.get("shrink", "")))

    def _record(self, w: Walker, op_key: str, res: HttpResult) -> list[tuple]:
        """Tally one exchange; return the findings it shows, for `_report_findings`."""
        found: list[tuple] = []
        self.tally["requests"] += 1
        cls = status_class(res.status)
        self.tally[cls] += 1
        op = self.per_op.setdefault(op_key, Counter())
        op["requests"] += 1
        op[cls] += 1
        if res.status is not None and not 200 <= res.status < 300:
            op[str(res.status)] += 1
        w.trace.append((res.method, res.target, res.status if res.status is not None else (res.error or "error")))
        if res.response is not None:
            self.rfc["responses_checked"] += 1
        for v in res.violations:
            self.rfc["rfc1_violations" if v.predicate == "I-RFC-1" else "rfc2_violations"] += 1
            self.tally["rfc_violations"] += 1
            found.append((v.predicate, f"markov {op_key}: {v.detail}", f"markov {op_key}",
                          {"offset": v.offset, "operation": op_key}))
        tag = invariant_tag(res)
        if tag:
            self.tally["invariant_hits"] += 1
            self.tally[f"invariant_{tag}"] += 1
            op["invariant_hits"] += 1
            found.append((tag, f"the target reported {tag} (x-invariant) answering {res.method} {res.target} "
                               f"with {res.status}", f"markov {op_key}", {"operation": op_key, "status": res.status}))
        elif res.status is not None:
            found += self._api_5xx(w, op_key, res, op)
        return found

    def _api_5xx(self, w: Walker, op_key: str, res: HttpResult, op: Counter) -> list[tuple]:
        """I-API-5XX over one answered, untagged response: a finding per (operation, status) bucket."""
        self.tally["api5xx_checked"] += 1
        assert res.status is not None
        if res.status < 500:
            return []
        declared = self.declared.get(op_key, frozenset())
        undeclared_method = res.status == 501 and bool(self.operations) and op_key not in self.declared
        if undeclared_method or not server_error(res, declared):
            self.tally["api5xx_excepted"] += 1  # by design (declared 502/503/504) or RFC-correct (501)
            return []
        self.tally["api5xx_findings"] += 1
        op["api5xx"] += 1
        case = f"markov {op_key} {res.status}"
        if case in self.reported_5xx:
            return []
        sent = f"{res.method} {res.target}"
        detail = (f"{op_key} answered {res.status}" + (f" to {sent}" if sent != op_key else "")
                  + f" (markov walker {w.id}, seed 0x{w.seed:016x})"
                  + ("; declared, but only a declared 502/503/504 is by design" if str(res.status) in declared else ""))
        return [("I-API-5XX", detail, case, {"operation": op_key, "status": res.status})]

    async def _report_findings(self, w: Walker, found: list[tuple], res: HttpResult, step: Step | None) -> None:
        """Report each finding; the first of each (predicate, operation) found by a Markov step is
        first shrunk to a minimal replayable sequence (its repeats meanwhile are not reported: the
        incident path keeps one dossier per finding)."""
        for predicate, detail, case, more in found:
            key = (predicate, case)
            if key in self.shrinking:
                continue
            reproducer = None
            if predicate == "I-API-5XX":
                if case in self.reported_5xx:
                    continue
                self.reported_5xx.add(case)  # before shrinking: the other walkers' repeats are counted only
            if step is not None and key not in self.shrunk:
                self.shrinking.add(key)
                try:
                    status = more.get("status") if predicate == "I-API-5XX" else None
                    reproducer = await self._shrink(w, predicate, more["operation"], step, status)
                finally:
                    self.shrinking.discard(key)
                    self.shrunk.add(key)
            self.report(self._evidence(w, predicate, detail, case, res.sent, res.received, reproducer, **more))

    async def _shrink(self, w: Walker, predicate: str, op_key: str, failing: Step,
                      status: int | None = None) -> dict[str, Any]:
        """The shortest replayable sequence of this session's steps that still shows the finding."""
        recorded = list(w.history)
        info: dict[str, Any] = {"walker_seed": f"0x{w.seed:016x}", "length_before": len(recorded),
                                "length_after": len(recorded), "replays": 0, "seconds": 0.0, "reproduced": False,
                                "sequence": [s.to_json() for s in recorded]}
        seq = replayable(recorded)
        if not self.shrink:
            return {**info, "shrink": "not shrunk: shrinking is off"}
        if not seq or seq[-1] is not failing:
            return {**info, "shrink": "not shrunk: the failing step used values captured before the recorded "
                                      f"history (the last {HISTORY_LEN} steps of the session)"}
        if self.tally["shrinks"] >= MAX_SHRINKS:
            return {**info, "shrink": f"not shrunk: this cell already shrank {MAX_SHRINKS} findings"}
        if len(self.shrinking) > MAX_CONCURRENT_SHRINKS:
            return {**info, "shrink": "not shrunk: other walkers were shrinking"}
        if self.alive is not None and not await self.alive():
            return {**info, "shrink": "not shrunk: target down"}
        self.tally["shrinks"] += 1
        t0 = time.monotonic()
        # Bounded in time, and never long past the walker's own deadline.
        deadline = t0 + min(SHRINK_SECONDS, max(5.0, w.deadline - t0))
        creds = (lambda n: self.credentials(w.id)) if self.credentials else (
            lambda n: (f"{w.username}-s{n}", w.password))  # a fresh user per replay: a fresh session
        replayer = Replayer(self.connection_factory, self.templates, self.model.login, creds, USER_AGENT)
        best_raw: list[bytes] = []
        gone = ""

        async def oracle(cand: list[Step]) -> int | None:
            nonlocal best_raw, gone
            if gone:
                return None
            out = await replayer.replay(cand, predicate, op_key, status)
            self.tally["shrink_replays"] += 1
            if out.failed_at is not None:
                best_raw = out.sent
            elif out.target_gone:
                gone = out.error or "the target stopped answering"
            return out.failed_at

        # Cheap guesses first (the steps that touched the failing resource), then the whole session.
        got: int | None = None
        for cand in [*focus(seq), seq]:
            if gone or time.monotonic() >= deadline or replayer.attempts >= SHRINK_MAX_REPLAYS:
                break
            got = await oracle(cand)
            if got is not None:
                seq = cand[:got + 1]
                break
        if got is None:
            why = (f"not shrunk: the target stopped answering the replay ({gone})" if gone else
                   "not shrunk: replaying the session's steps on a fresh session did not show it again (it depends "
                   "on state outside the session: other walkers, earlier sessions, timing)")
            return {**info, "replays": replayer.attempts, "seconds": round(time.monotonic() - t0, 3), "shrink": why}
        res = await ddmin(seq, oracle, max_tests=SHRINK_MAX_REPLAYS - replayer.attempts, deadline=deadline,
                          valid=closed_under_captures)
        if gone:
            status = f"bounded: the target stopped answering ({gone})"
        else:
            status = "complete: " + res.reason if res.complete else "bounded: " + res.reason
        return {**info, "length_before": len(recorded), "length_after": len(res.sequence),
                "replays": replayer.attempts, "seconds": round(time.monotonic() - t0, 3), "reproduced": True,
                "shrink": status, "sequence": [s.to_json() for s in res.sequence], "raw": best_raw,
                "lines": [s.line() for s in res.sequence]}

    async def _send(self, w: Walker, op_key: str, method: str, target: str, body: bytes | None = None,
                    content_type: str | None = None, step: Step | None = None) -> HttpResult:
        headers = w.headers(content_type)
        crash = self.crashlog
        if crash is None:
            res = await w.conn.request(method, target, headers, body)
        else:
            await crash.gate()  # held back while a crash suspect is replayed alone
            host_header = getattr(w.conn, "host_header", f"{self.host}:{self.port}")
            token = crash.begin("markov", str(w.id), f"0x{w.seed:016x}", op_key, f"{method} {target}",
                                lambda: build_request(method, target, host_header, headers, body), host_header)
            try:
                res = await w.conn.request(method, target, headers, body)
            except BaseException:
                crash.end(token, "no_response")
                raise
            crash.end(token, "response" if res.status is not None else "no_response" if res.delivered
                      else "refused", res.sent)
        w.sent_log.append(res.sent)
        if step is not None:
            step.status = res.status if res.status is not None else (res.error or "error")
            remember(w.history, step, {kv for b in w.bindings.items for kv in b.items()})
        found = self._record(w, op_key, res)
        for v in res.header_values(b"set-cookie"):
            w.jar.update([v])
        if res.status is None:
            w.conn_errors += 1
        else:
            w.conn_errors = 0
        if found:
            await self._report_findings(w, found, res, step)
        return res

    # ---- login ----------------------------------------------------------------------------
    async def _login(self, w: Walker) -> bool:
        assert self.model.login is not None
        method, path = self.model.login
        user, pw = self.credentials(w.id) if self.credentials else (w.username, w.password)
        body = json.dumps({"username": user, "password": pw}).encode()
        w.jar.clear()
        w.token = None
        w.csrf = None
        res = await self._send(w, f"{method} {path}", method, path, body, "application/json")
        if res.status is not None and 200 <= res.status < 300:
            self.tally["logins"] += 1
            token = json_field(res, ("token", "access_token"))
            if isinstance(token, str) and token:
                w.token = token
            w.logged_in = True
            return True
        self.tally["login_failures"] += 1
        return False

    # ---- one Markov step ------------------------------------------------------------------
    def _fillable(self, w: Walker, st: State) -> bool:
        return w.bindings.can_fill(st.params)

    def _pick(self, w: Walker, options: list[tuple[str, float]]) -> State | None:
        cands = [(self.model.states[n], wt) for n, wt in options if self._fillable(w, self.model.states[n])]
        if not cands:
            return None
        total = sum(wt for _, wt in cands)
        x = w.rng.random() * total
        for st, wt in cands:
            x -= wt
            if x < 0:
                return st
        return cands[-1][0]

    def _entry_state(self, w: Walker) -> State | None:
        start = self.model.states.get(self.model.start)
        if start is not None and self._fillable(w, start):
            return start
        return self._pick(w, [(n, 1.0) for n in self.model.states])

    async def _run_state(self, w: Walker, st: State) -> HttpResult | None:
        used = w.bindings.choose(st.params, w.rng)
        if used is None:
            return None
        target = st.path
        for name, value in used.items():
            target = target.replace("{" + name + "}", quote(value, safe=""))
        op = self.ops.get((st.method, st.path))
        body = ctype = None
        query = ""
        if op is not None:
            query = _query(op, w.rng)
            target += query
            if op.body_media is not None and (op.body_required or st.method in ("POST", "PUT", "PATCH")):
                body, ctype = body_bytes(op.body_media, op.body_schema, w.rng, fill=used)
        elif st.method in ("POST", "PUT", "PATCH"):
            body, ctype = b"{}", "application/json"
        if used:
            self.tally["captured_used"] += 1
        step = Step(st.key, st.method, st.path, dict(used), query, body, ctype)
        res = await self._send(w, st.key, st.method, target, body, ctype, step)
        if res.status is not None and 200 <= res.status < 300:
            # A synchronizer CSRF token handed out in a JSON body is sent back on unsafe requests.
            token = json_field(res, ("csrf_token", "csrfToken"))
            if isinstance(token, str) and token:
                w.csrf = token
            if st.method == "DELETE":
                w.bindings.forget(used)
            else:
                got = captures(self.templates, st.path, used, res.status, res.header(b"location"), res.body,
                               res.header(b"content-type"))
                step.gives = got
                for b in got:
                    if w.bindings.add(b):
                        self.tally["captured"] += 1
        elif res.status in (404, 410) and used:
            w.bindings.forget(used)  # the resource is gone: stop using it
        return res

    async def step(self, w: Walker) -> None:
        """One unit of work: a login, a key/value check, or one Markov transition."""
        w.steps += 1
        if self.model.login is not None and not w.logged_in:
            if not await self._login(w):
                await asyncio.sleep(min(1.0, 0.05 * (1 + self.tally["login_failures"] % 10)))
                return
            # a new session starts at the entry state; after a re-login (401) the state is retried
        if self.kv is not None and (not self.model.states or w.rng.random() < self.kv_ratio):
            await self._kv_cycle(w)
            return
        if w.state is None:
            w.state = self._entry_state(w)
            if w.state is None:
                self.tally["dead_ends"] += 1
                await asyncio.sleep(0.05)
                return
        st = w.state
        res = await self._run_state(w, st)
        if res is None:  # lost its captured value (e.g. after a 404): go back to the entry state
            self.tally["dead_ends"] += 1
            w.state = None
            return
        if res.status == 401 and self.model.login is not None:
            self.tally["relogins"] += 1
            w.logged_in = False
            return  # log in again, then retry this state
        if res.status is None:
            await asyncio.sleep(0.05)
        if res.status == 429 or (res.status == 503 and res.header(b"retry-after") is not None):
            self.tally["backoffs"] += 1
            await asyncio.sleep(retry_after(res))
            return  # the same state again after the pause
        if st.terminal:
            self.tally["sessions"] += 1
            w.end_session()
            return
        nxt = self._pick(w, list(st.transitions))
        if nxt is None:
            self.tally["dead_ends"] += 1
            nxt = self._entry_state(w)
        w.state = nxt

    # ---- key/value contract (I-DRV-1 from outside) -------------------------------------------
    def _kv_target(self, method: str, key: str) -> str:
        assert self.kv is not None
        op = self.kv[method]
        return op.path.replace("{" + op.path_params[0] + "}", quote(key, safe=""))

    def _drv_mismatch(self, w: Walker, what: str, key: str, expected: str | None, reads: list[HttpResult],
                      detail: str) -> None:
        self.tally["drv_read_after_write_mismatch"] += 1
        if what == "delete":
            self.tally["drv_after_delete_mismatch"] += 1
        self.report(self._evidence(
            w, "I-DRV-1", f"markov kv read-after-{what}: {detail}", f"markov kv read-after-{what}",
            b"".join(r.sent for r in reads), b"".join(r.received for r in reads), key=key, expected=expected))

    async def _kv_cycle(self, w: Walker) -> None:
        assert self.kv is not None
        w.kv_n += 1
        key = f"pw-{w.tag}-{w.kv_n}"
        put_key, get_key, del_key = (f"{m} {self.kv[m].path}" for m in ("PUT", "GET", "DELETE"))
        for _round in range(1 + (w.rng.random() < 0.3)):
            value = "".join(w.rng.choice(string.ascii_letters + string.digits) for _ in range(w.rng.randint(8, 48)))
            put = await self._send(w, put_key, "PUT", self._kv_target("PUT", key), value.encode(),
                                   "application/octet-stream")
            if put.status is None or not 200 <= put.status < 300:
                return  # not acknowledged: nothing to check
            get = await self._send(w, get_key, "GET", self._kv_target("GET", key))
            if get.status is None or get.status == 429:
                self.tally["drv_unjudged"] += 1
                return
            self.tally["drv_checks"] += 1
            if get.status != 200 or get.body != value.encode():
                got = get.body[:80]
                self._drv_mismatch(w, "write", key, value, [put, get],
                                   f"PUT {key!r} answered {put.status}, then GET answered {get.status} with "
                                   f"{got!r} instead of {value!r}")
        dele = await self._send(w, del_key, "DELETE", self._kv_target("DELETE", key))
        if dele.status is None or not 200 <= dele.status < 300:
            return
        get = await self._send(w, get_key, "GET", self._kv_target("GET", key))
        if get.status is None or get.status == 429:
            self.tally["drv_unjudged"] += 1
            return
        self.tally["drv_checks"] += 1
        if get.status != 404:
            self._drv_mismatch(w, "delete", key, None, [dele, get],
                               f"DELETE {key!r} answered {dele.status}, then GET answered {get.status} "
                               f"(expected 404) with {get.body[:80]!r}")

    # ---- walkers ------------------------------------------------------------------------------
    async def walker(self, walker_id: int, deadline: float, stop: Callable[[], bool]) -> None:
        """Walk sessions until the deadline (or `max_steps` steps, for tests)."""
        w = Walker(self, walker_id)
        w.deadline = deadline
        self.walkers[walker_id] = w
        try:
            while time.monotonic() < deadline and not stop():
                if self.max_steps is not None and w.steps >= self.max_steps:
                    break
                try:
                    await self.step(w)
                except Exception:  # a probatorium bug must not stop the walker silently
                    self.tally["internal_errors"] += 1
                    if len(self.internal_errors) < 5:
                        self.internal_errors.append(f"markov walker {walker_id}: {traceback.format_exc()}")
                    await asyncio.sleep(0.05)
                if self.think > 0:  # jitter from its own RNG, so pacing never changes the walk
                    await asyncio.sleep(w.pace.uniform(0.5, 1.5) * self.think)
                if w.conn_errors >= 3:
                    if self.alive is not None and not await self.alive():
                        if self.recover is None or not await self.recover():
                            self.stopped_reason = "the target is gone and could not be restarted"
                            return
                        await w.conn.close()
                        w.conn = self.connection_factory()  # the restarted target may listen elsewhere
                        w.end_session()
                    w.conn_errors = 0
                    await asyncio.sleep(0.2)
        finally:
            await w.conn.close()

    def trace(self, walker_id: int) -> list[tuple[str, str, int | str]]:
        w = self.walkers.get(walker_id)
        return list(w.trace) if w else []

    async def prepare(self) -> str | None:
        """Nothing to walk without states or the key/value contract."""
        if self.model.states or self.kv is not None:
            return None
        self.stopped_reason = "nothing to walk: no markov.yaml and no session operation in the OpenAPI"
        return self.stopped_reason

    def evidence(self) -> dict[str, Any]:
        return {"kv_contract": self.kv is not None}

    def detail(self) -> dict[str, Any]:
        return {"model": self.model.describe(), "notes": self.notes, "per_operation": self.per_operation()}

    def counters(self) -> dict[str, int]:
        """The `tier_1.markov` string→int map."""
        base = {k: 0 for k in COUNTER_KEYS}
        base.update(self.tally)
        base["states"] = len(self.model.states)
        base["kv_contract"] = int(self.kv is not None)
        return dict(base)

    def per_operation(self) -> dict[str, dict[str, int]]:
        """Per operation ("GET /api/users/{id}") status-class counts, for tier1_tally.json."""
        return {k: dict(v) for k, v in sorted(self.per_op.items())}


def _query(op: Operation, rng: random.Random) -> str:
    """Required query parameters, generated from their schemas."""
    from .values import generate

    parts = []
    for p in op.parameters:
        if p.get("in") == "query" and p.get("required"):
            v = generate(p.get("schema") or {"type": "string"}, rng, name=str(p["name"]))
            v = v if isinstance(v, str) else json.dumps(v)
            parts.append(f"{quote(str(p['name']), safe='')}={quote(v, safe='')}")
    return ("?" + "&".join(parts)) if parts else ""
