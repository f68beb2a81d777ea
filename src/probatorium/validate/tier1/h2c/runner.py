"""The h2c churn slice: walkers drive the h2c cases over raw sockets and tally verdicts.

Thin on purpose, like the adversarial runner: cases are data (cases.py), the
verdict is a pure function (grading.py), HTTP/1.1 framing is checked by
../http1.py; this module schedules cases, talks to the target through the one
raw-socket client (every connection ends with a reset, SO_LINGER 0), and hands
findings to the incident path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import traceback
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .... import __version__
from ....rawclient import Exchange, Segment, exchange
from ...incidents import Evidence
from ....seeds import derive_seed
from ...invariants import predicate_for
from ..base import SliceBase
from ...repro import accepts, build_repro, connect, read_until, rehost, reset_close, send_segments
from .. import http1
from ..adversarial.verdict import echo_record
from ..http1 import parse_response_stream
from . import cases as h2c_cases
from . import grading
from .cases import CASES, PREFACE, H2cCase, client_settings_frame
from .grading import COUNTER, VERDICTS, H2cOutcome, H2cVerdict, grade, h2_stream1_body

PREFACE_DELAY = 0.25  # seconds between the preamble and the (partial) connection preface
SEVERITY_ORDER = {v: i for i, v in enumerate(VERDICTS)}
OK_VERDICTS = ("upgraded", "declined", "closed_no_answer", "reset_unread")


@dataclass
class CaseTally:
    counts: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    example: dict | None = None  # the first finding (reason, nonce)


def _head_done(method: str) -> Callable[[bytes], bool]:
    """done() for exchange: a 101 head, or a complete final HTTP/1.1 response, arrived."""

    def done(data: bytes) -> bool:
        parsed = parse_response_stream(data, [method], eof=False)
        return any(r.status == 101 or (r.complete and not r.interim) for r in parsed.responses)

    return done


def _body_done(data: bytes) -> bool:
    """done() for the body case: a complete HTTP/1.1 answer, or after a 101 the stream-1 response."""
    parsed = parse_response_stream(data, ["POST"], eof=False)
    for r in parsed.responses:
        if r.status == 101:
            end = data.find(b"\r\n\r\n", r.offset)
            return end >= 0 and h2_stream1_body(data[end + 4:]) is not None
        if r.complete and not r.interim:
            return True
    return False


class H2cChurnSlice(SliceBase):
    """Runs the h2c cases against one target from any number of walkers."""

    name = "h2c"

    def __init__(self, host: str, port: int, *, echo_path: str = "/echo", seed: int = 0,
                 report: Callable[[Evidence], None] | None = None,
                 alive: Callable[[], Awaitable[bool]] | None = None,
                 recover: Callable[[], Awaitable[bool]] | None = None,
                 timeout: float = 3.0, cases: list[H2cCase] | None = None) -> None:
        self.host, self.port = host, port
        self.echo_path = echo_path
        self.seed = seed
        self.report = report or (lambda ev: None)
        self.alive, self.recover = alive, recover
        self.timeout = timeout
        self.cases = list(cases or CASES)
        self.tally: Counter = Counter()
        self.rfc: Counter = Counter()
        self.per_case: dict[str, CaseTally] = {c.name: CaseTally() for c in self.cases}
        self.stopped_reason = ""
        self.internal_errors: list[str] = []
        self._queue: deque[H2cCase] = deque()
        self._round = 0

    # ---- one case --------------------------------------------------------------------
    def _plan(self, case: H2cCase, nonce: str, rng: random.Random) -> tuple[list[Segment], dict, tuple[str, ...]]:
        """Segments and exchange options for a case (the cut of a partial preface is seeded)."""
        req = case.render(host=self.host_header, path=self.echo_path, nonce=nonce)
        segs = [Segment(req)]
        methods: tuple[str, ...] = (case.method,)
        opts: dict = {"quiet_timeout": self.timeout, "total_timeout": self.timeout + 5.0, "linger": 0.1,
                      "rst_at_end": True}
        extra: dict = {}
        if case.stage == "before_read":
            opts.update(quiet_timeout=0.0, total_timeout=1.0, linger=0.0)
        elif case.stage == "after_101":
            opts.update(done=_head_done(case.method), linger=0.0)
        elif case.stage == "partial_preface":
            cut = rng.randrange(1, len(PREFACE))
            extra["preface_cut"] = cut
            segs.append(Segment(PREFACE[:cut], PREFACE_DELAY))
            # Keep reading past the 101 long enough for the cut preface to go out, then reset.
            opts.update(done=_head_done(case.method), linger=PREFACE_DELAY + 0.25)
            methods += ("PRI",)
        elif case.body is not None:
            # After a 101 the client must send the preface; the HTTP/2 answer carries the echo record.
            segs.append(Segment(PREFACE + client_settings_frame(), PREFACE_DELAY))
            opts.update(done=_body_done, linger=0.05)
            methods += ("PRI",)
        else:
            opts.update(done=_head_done(case.method), linger=0.1)
        return segs, {**opts, "_extra": extra}, methods

    async def run_case(self, case: H2cCase, nonce: str, rng: random.Random) -> tuple[H2cVerdict, Exchange, dict]:
        segs, opts, methods = self._plan(case, nonce, rng)
        extra = opts.pop("_extra")
        ex = await exchange(self.host, self.port, segs, **opts)
        out = H2cOutcome(ex.received, ex.closed, ex.timed_out, ex.connect_error, methods=methods)
        silent = not ex.received and (case.stage == "before_read" or ex.closed or ex.timed_out)
        if (silent or ex.connect_error) and self.alive is not None:
            out.target_alive = await self.alive()
        extra.update(closed=ex.closed, timed_out=ex.timed_out, elapsed=round(ex.elapsed, 3))
        return grade(case, out), ex, extra

    def _account(self, case: H2cCase, v: H2cVerdict, ex: Exchange, nonce: str, extra: dict) -> None:
        self.tally["h2c_sent"] += 1
        self.tally[COUNTER[v.verdict]] += 1
        if v.body_checked:
            self.tally["h2c_body_checked"] += 1
        elif case.body is not None and v.verdict in ("upgraded", "declined"):
            self.tally["h2c_body_not_judged"] += 1
        self.rfc["responses_checked"] += v.responses
        for viol in v.violations:
            self.rfc["rfc1_violations" if viol.predicate == "I-RFC-1" else "rfc2_violations"] += 1
        ct = self.per_case[case.name]
        ct.counts[v.verdict] += 1
        if v.status is not None:
            ct.statuses[str(v.status)] += 1
        findings = []
        pred = predicate_for("h2c", v.verdict)
        if pred:
            findings.append((pred, v.reason))
            if ct.example is None:
                ct.example = {"verdict": v.verdict, "reason": v.reason, "nonce": nonce, **extra}
        findings += [(viol.predicate, viol.detail) for viol in v.violations]
        for predicate, detail in findings:
            self.report(Evidence(
                predicate=predicate, detail=f"h2c {case.name}: {detail}", case=f"h2c {case.name}", sent=ex.sent,
                received=ex.received, seed=self.seed,
                extra={"clause": case.clause, "verdict": v.verdict, "stage": case.stage, "valid": case.valid,
                       "nonce": nonce, **extra},
                repro=h2c_repro(case=case, predicate=predicate, detail=detail, segments=self._segments_of(ex),
                                addr=self.host_header, timeout=self.timeout),
            ))

    @staticmethod
    def _segments_of(ex: Exchange) -> list[bytes]:
        """The bytes as they went out, split per send call (from the exchange's events)."""
        out, pos = [], 0
        for _, kind, n in ex.events:
            if kind == "send":
                out.append(ex.sent[pos:pos + n])
                pos += n
        return out or [ex.sent]

    # ---- walkers -----------------------------------------------------------------------
    def _next_case(self) -> H2cCase:
        if not self._queue:
            self._round += 1
            order = list(self.cases)
            random.Random(derive_seed(self.seed, "h2c-round", self._round)).shuffle(order)
            self._queue.extend(order)
        return self._queue.popleft()

    async def walker(self, walker_id: int, deadline: float, stop: Callable[[], bool]) -> None:
        """Take cases from the shared seeded round until the deadline (or the target is gone)."""
        rng = random.Random(derive_seed(self.seed, "h2c-walker", walker_id))
        n = 0
        while time.monotonic() < deadline and not stop() and not self.stopped_reason:
            case = self._next_case()
            n += 1
            nonce = f"w{walker_id}-{n}"
            try:
                v, ex, extra = await self.run_case(case, nonce, rng)
            except Exception:  # a probatorium bug on one case must not stop the walker
                self._internal_error(case)
                continue
            if v.verdict == "conn_error":
                self.tally["h2c_conn_error"] += 1
                await asyncio.sleep(0.2)
                continue
            try:
                self._account(case, v, ex, nonce, extra)
            except Exception:
                self._internal_error(case)
            if v.verdict == "crashed":
                if self.recover is None or not await self.recover():
                    self.stopped_reason = f"the target died on h2c case {case.name!r} and could not be restarted"
                    return

    def _internal_error(self, case: H2cCase) -> None:
        self.tally["h2c_internal_error"] += 1
        if not self.internal_errors:
            self.internal_errors.append(f"{case.name}: {traceback.format_exc()}")

    def case_breakdown(self) -> dict:
        """Per-case detail (validate-diff compares the `verdict` field: the worst seen)."""
        out = {}
        for c in self.cases:
            ct = self.per_case[c.name]
            worst = min(ct.counts, key=lambda v: SEVERITY_ORDER.get(v, 99)) if ct.counts else "not_sent"
            out[c.name] = {"verdict": worst, "counts": dict(ct.counts), "statuses": dict(ct.statuses),
                           "stage": c.stage, "valid": c.valid, "clause": c.clause, "example": ct.example}
        return out

    def counters(self) -> dict[str, int]:
        """The `tier_1.h2c_churn` string→int map."""
        base = {k: 0 for k in ("h2c_sent", "h2c_upgraded", "h2c_declined", "h2c_crashed", "h2c_hang",
                               "h2c_bad_upgrade_accepted", "h2c_body_mismatch")}
        base.update(self.tally)
        base["h2c_cases"] = len(self.cases)
        base["h2c_cases_sent"] = sum(1 for ct in self.per_case.values() if ct.counts)
        return dict(base)


def judge_h2c(host: str, port: int, addr: str, payload: dict) -> tuple[bool, str]:
    """Send the recorded bytes (paced as they were), read as the walker did, reset, and grade with
    grading.py; reproduced when the verdict (or a framing violation) is the finding's predicate."""
    raw = payload["case"]
    case = H2cCase(**{**raw, "headers": tuple(raw["headers"]),
                      "body": None if raw["body"] is None else bytes.fromhex(raw["body"])})
    segments = [bytes.fromhex(h) for h in payload["segments"]]
    segments[0] = rehost(segments[0], payload["recorded_host"], addr)
    timeout, methods = payload["timeout"], tuple(payload["methods"])
    sock = connect(host, port)
    error = send_segments(sock, segments, payload["delay"])
    if case.stage == "before_read":
        data, how = read_until(sock, 1.0, 1.0)
    else:
        done = _body_done if case.body is not None and "PRI" in methods else _head_done(case.method)
        data, how = read_until(sock, timeout, timeout + 5.0, done)
    reset_close(sock)
    print(f"sent {sum(map(len, segments))} bytes{'; ' + error if error else ''}; received {len(data)} bytes; "
          f"connection: {how}")
    print(data[:2000].decode("latin-1"))
    closed = how.startswith(("closed", "reset"))
    out = H2cOutcome(data, closed, how.startswith("timeout"), methods=methods)
    if not data and (case.stage == "before_read" or closed or out.timed_out):
        time.sleep(0.5)
        out.target_alive = accepts(host, port)
    v = grade(case, out)
    bad = payload["verdict_predicates"].get(v.verdict) == payload["predicate"] or any(
        viol.predicate == payload["predicate"] for viol in v.violations)
    return bad, f"verdict {v.verdict} - {v.reason} (case {case.name}: {case.clause})"


def h2c_repro(*, case: H2cCase, predicate: str, detail: str, segments: list[bytes], addr: str,
              timeout: float) -> str:
    """Source of a standalone repro.py for one h2c finding."""
    raw = dataclasses.asdict(case)
    raw["body"] = None if case.body is None else case.body.hex()
    methods = (case.method, "PRI") if case.stage == "partial_preface" or case.body is not None else (case.method,)
    payload = {"case": raw, "segments": [s.hex() for s in segments], "recorded_host": addr,
               "delay": PREFACE_DELAY, "timeout": max(timeout, 1.0), "methods": list(methods)}
    how = (f"Case: {case.name} - {case.clause}.\nSends the recorded bytes (paced as they were), reads,"
           " resets the connection (SO_LINGER 0),\nand grades the answer with probatorium's h2c grading "
           "(embedded below).")
    return build_repro("h2c", payload, judge_h2c, predicate=predicate, detail=detail, addr=addr,
                       version=__version__, case=case.name, how=how, modules=(http1, h2c_cases, grading),
                       helpers=(echo_record, _head_done, _body_done), verdicts_of="h2c")
