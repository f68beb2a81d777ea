"""The h2c churn slice: walkers drive the h2c cases over raw sockets and tally verdicts.

Thin on purpose, like the adversarial runner: cases are data (cases.py), the
verdict is a pure function (grading.py), HTTP/1.1 framing is checked by
../http1.py; this module schedules cases, talks to the target through the one
raw-socket client (every connection ends with a reset, SO_LINGER 0), and hands
findings to the incident path.
"""

from __future__ import annotations

import asyncio
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
from ..http1 import parse_response_stream
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


_REPRO = '''#!/usr/bin/env python3
"""probatorium {version} h2c reproducer: {predicate} on case {case!r} ({clause}).

Finding: {detail}
Usage: python3 repro.py HOST:PORT      (default {addr})
Standard library only. Sends the recorded bytes (paced as they were), reads,
resets the connection (SO_LINGER 0), then checks the target still accepts
connections. Exit status 1 when the finding reproduces.
"""
import re, socket, struct, sys, time

SEGMENTS = [bytes.fromhex(h) for h in {segments!r}]
DELAY = {delay!r}
VALID = {valid!r}
PREDICATE = {predicate!r}
TIMEOUT = {timeout!r}
BODY_LENGTH, BODY_SHA256 = {body_length!r}, {body_sha!r}  # what the application must receive (body case)


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else {addr!r}
    host, _, port = addr.rpartition(":")
    host, port = host.strip("[]"), int(port)
    sock = socket.create_connection((host, port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i, seg in enumerate(SEGMENTS):
        if i:
            time.sleep(DELAY)
        try:
            sock.sendall(seg)
        except OSError as e:
            print("send failed:", e)
            break
    sock.settimeout(TIMEOUT)
    data, how = b"", "timeout (connection still open)"
    try:
        while len(data) < 1 << 20:
            chunk = sock.recv(65536)
            if not chunk:
                how = "closed by the server"
                break
            data += chunk
    except socket.timeout:
        pass
    except OSError as e:
        how = "reset: %s" % e
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    print("received %d bytes; connection: %s" % (len(data), how))
    print(data[:2000].decode("latin-1"))
    time.sleep(0.5)
    try:
        socket.create_connection((host, port), timeout=3).close()
        up = True
    except OSError:
        up = False
    print("target still accepts connections:", up)
    status = data[9:12] if data.startswith(b"HTTP/1.") else b""
    got = re.search(rb'"body_length": ?(\\d+),.*?"body_sha256": ?"([0-9a-f]+)"', data)
    if got:
        print("the application received body_length=%s sha256=%s (sent %s, %s)" % (
            got.group(1).decode(), got.group(2).decode(), BODY_LENGTH, BODY_SHA256))
    body_bad = None
    if BODY_LENGTH is not None and got:
        body_bad = int(got.group(1)) != BODY_LENGTH or got.group(2).decode() != BODY_SHA256
    bad = {{"I-H2C-CRASHED": not up, "I-H2C-HANG": not data and how.startswith("timeout"),
            "I-H2C-UPGRADE": status == b"101" and not VALID, "I-ADV-ACCEPTED": body_bad}}.get(PREDICATE, None)
    if bad is None:
        print("judge the bytes above against the finding (%s)" % PREDICATE)
        return
    print("REPRODUCED" if bad else "NOT REPRODUCED")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
'''


def h2c_repro(*, case: H2cCase, predicate: str, detail: str, segments: list[bytes], addr: str,
              timeout: float) -> str:
    """Source of a standalone repro.py for one h2c finding."""
    return _REPRO.format(version=__version__, predicate=predicate, case=case.name, clause=case.clause,
                         detail=detail.replace('"""', "'''"), addr=addr, segments=[s.hex() for s in segments],
                         delay=PREFACE_DELAY, valid=case.valid, timeout=max(timeout, 1.0),
                         body_length=len(case.body) if case.body is not None else None, body_sha=case.body_sha256)
