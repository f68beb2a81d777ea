"""The adversarial slice: walkers drive the catalogue over raw sockets and tally verdicts.

Thin on purpose: rendering, verdicts and framing checks are pure functions in
catalogue.py, verdict.py and ../http1.py; this module only schedules cases,
talks to the target through the one raw-socket client, and hands findings
to the incident path.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .... import __version__
from ....rawclient import Segment, exchange
from ....seeds import derive_seed
from ...incidents import Evidence
from ...invariants import predicate_for
from ..base import ContractPaths, SliceBase
from ..http1 import is_truncation, parse_response_stream
from ..held import HeldStreams
from .cases import CASES
from .catalogue import Case, Rendered, render
from .repro import adversarial_repro, requests_counter
from .slow import SlowClients, SlowConfig, slow_repro
from .slowcore import opening
from .verdict import VERDICTS, Outcome, Verdict, echo_record, judge
from ..asgi.judge import ORPHAN_VERDICTS, SCOPE_VERDICTS  # wt-wsasgi
from ..asgi.probe import AsgiProbes  # wt-wsasgi

# wt-smuggle (issue 12): bracketed runs of one counter check (their smallest delta is judged).
COUNTER_RUNS = 3
COUNTER_GAP = 0.3  # seconds between them
COUNTER_SHARE = 0.3  # of the walk's time at most spent in counter checks (the walkers wait)
# Worst first: the verdict a case shows in the per-case breakdown.
SEVERITY_ORDER = {v: i for i, v in enumerate(VERDICTS)}
ASGI_ORDER = {v: i for i, v in enumerate((*SCOPE_VERDICTS, *ORPHAN_VERDICTS))}  # wt-wsasgi


@dataclass
class Calibration:
    echo: bool
    target: str
    baseline_status: int | None
    reason: str


@dataclass
class CaseTally:
    counts: Counter = field(default_factory=Counter)
    example: dict | None = None  # the first non-passing example (reason, nonce)


class AdversarialSlice(SliceBase):
    """Runs the catalogue against one target from any number of walkers."""

    name = "adversarial"

    def __init__(self, host: str, port: int, *, echo_path: str = "/echo", health_path: str = "/healthz",
                 seed: int = 0, cases: list[Case] | None = None, quiet_timeout: float = 3.0,
                 report: Callable[[Evidence], None] | None = None,
                 alive: Callable[[], Awaitable[bool]] | None = None,
                 recover: Callable[[], Awaitable[bool]] | None = None,
                 sweep: list[tuple[str, str]] | None = None, crashlog=None,
                 say: Callable[[str], None] | None = None, held: HeldStreams | None = None,
                 identity: Callable[[], object] | None = None, slow: SlowConfig | None = None,
                 debug_path: str | None = None) -> None:
        self.host, self.port = host, port
        # The slow-client phase (slow.py): held connections, starvation and head-size memory, once per
        # cell beside walker 0; None (a slice built by hand) leaves it out.
        self.slow_config = slow
        self.slow: SlowClients | None = None
        # wt-smuggle (issue 12): the debug endpoint whose `requests` counter is app-side evidence
        self.debug_path = debug_path
        self._counter_checked: set[str] = set()  # cases judged from the counter (or tried twice)
        self._counter_tries: Counter = Counter()
        self._counter_spent = 0.0  # seconds the walkers waited for counter checks
        self._walk_started: float | None = None
        self._quiet: asyncio.Event | None = None  # cleared while a counter check runs alone
        self._inflight = 0  # this slice's exchanges in progress
        # The target process's identity (pid + start time): when it changes across one exchange,
        # the target died while the exchange ran, even if it was already restarted when we look.
        self.identity = identity or (lambda: None)
        self.say = say or (lambda msg: None)
        # Streams on the SSE path this slice's connections hold (a sweep GET /events waits out
        # the quiet timeout): shared with the SSE slice's I-CONN-2 judge.
        self.held = held
        # crash.CrashLog: requests in flight when the target died. With one, a death is attributed
        # (and confirmed by replay) by the orchestrator's I-LIVENESS incident, not per case here.
        self.crashlog = crashlog
        self.echo_path, self.health_path = echo_path, health_path
        self.seed = seed
        self.cases = list(cases or CASES)
        self.quiet_timeout = quiet_timeout
        self.report = report or (lambda ev: None)
        self.alive = alive
        self.recover = recover
        self.tally: Counter = Counter()
        self.rfc: Counter = Counter()
        self.per_case: dict[str, CaseTally] = {c.name: CaseTally() for c in self.cases}
        self.calibration: Calibration | None = None
        self.stopped_reason = ""
        self.internal_errors: list[str] = []
        self._queue: deque[Case] = deque()
        self._round = 0
        # (method, path) pairs to sweep for response framing: known contract paths plus the spec's.
        self.sweep_targets = list(dict.fromkeys(sweep or []))
        self.sweep_cases = [sweep_case(m, p) for m, p in self.sweep_targets] + [sweep_case("OPTIONS", "*")]
        for c in self.sweep_cases:
            self.per_case.setdefault(c.name, CaseTally())
        # wt-wsasgi (issue 12 items 10, 11): the raw-scope and orphan-stream probes, run by walker 0.
        self.asgi = AsgiProbes(lambda: self.host, lambda: self.port, lambda: self.host_header,
                                debug_path=debug_path or "/debug/vars",
                               report=self.report, quiet_timeout=quiet_timeout)

    # ---- calibration ---------------------------------------------------------------
    async def _probe(self, path: str) -> tuple[int | None, dict | None]:
        """One plain GET, judged like any case so framing findings are reported from the start."""
        case = sweep_case("GET", path, name=f"calibrate GET {path}")
        self.per_case.setdefault(case.name, CaseTally())
        rendered, outcome, verdict, sent = await self.run_case(case, "calibrate", echo=False, target=path)
        if verdict.verdict != "conn_error":
            self._account(case, rendered, outcome, verdict, sent, echo=False, target=path, calibration=True)
        if verdict.verdict == "crash" and self.recover is not None:
            await self.recover()  # a plain GET killed it: bring it back for the next probe
        parsed = parse_response_stream(outcome.received, ["GET"], eof=outcome.closed)
        if not parsed.final_responses:
            return None, None
        resp = parsed.final_responses[0]
        return resp.status, echo_record(resp)

    async def calibrate(self) -> Calibration:
        """Find out whether the echo route works, else which path answers, as the baseline."""
        joiner = "&" if "?" in self.echo_path else "?"
        status, rec = await self._probe(f"{self.echo_path}{joiner}adv=calibrate")
        if status == 200 and rec is not None:
            self.calibration = Calibration(True, self.echo_path, 200, "echo route answers: verdicts use it")
            return self.calibration
        tried = {self.echo_path: status}
        for path in ("/", self.health_path):
            st, _ = await self._probe(path)
            tried[path] = st
            if st is not None and st < 400:
                self.calibration = Calibration(False, path, st, f"no echo route ({tried}); judging by status on {path}")
                return self.calibration
        answered = [(p, s) for p, s in tried.items() if s is not None]
        if not answered:
            raise RuntimeError(f"the target answered none of the calibration requests {list(tried)}")
        path, st = answered[0]
        self.calibration = Calibration(False, path, st, f"no echo route and no 2xx path ({tried}); status only")
        return self.calibration

    async def prepare(self) -> str | None:
        """Calibrate (echo route or a baseline path); a target that answers nothing cannot be probed."""
        try:
            cal = await self.calibrate()
        except (RuntimeError, OSError) as e:
            self.stopped_reason = f"calibration failed: {e}"
            return self.stopped_reason
        self.say(f"  adversarial: {cal.reason}")
        return None

    def detail(self) -> dict:
        cal = self.calibration.__dict__ if self.calibration else {"error": self.stopped_reason}
        out = {"calibration": cal, "cases": self.case_breakdown()}
        # wt-slow (issue 12): the slow-client phase and segmentation-dependent limits
        out["segmentation"] = segmentation_divergences(self.cases, out["cases"])
        if self.slow is not None:
            out["slow_clients"] = self.slow.detail()
        return out

    def evidence(self) -> dict:
        """The slow-client phase's verdicts (I-ADV-SLOWLORIS, I-ADV-STARVE, I-ADV-MEMORY)."""
        return self.slow.evidence() if self.slow is not None else {}

    def _pid(self) -> int | None:
        ident = self.identity()
        return getattr(ident, "pid", None)

    async def run_slow(self, deadline: float, stop: Callable[[], bool]) -> None:
        """Run the slow-client phase once and report its findings."""
        cal = self.calibration
        echo = cal.echo if cal is not None else False
        target = cal.target if cal is not None else "/"
        self.slow = SlowClients(self.host, self.port, self.host_header, config=self.slow_config or SlowConfig(),
                                target=target, echo=echo, pid=self._pid, say=self.say)
        try:
            await self.slow.run(deadline, stop)
        except Exception:  # a probatorium bug must not take the catalogue's walkers down
            import traceback

            self.slow.reason = "internal error in the slow-client phase"
            self.internal_errors.append(f"slow clients: {traceback.format_exc()}")
            return
        for predicate, case, detail, payload in self.slow.findings():
            kind = payload.get("kind", "partial_line" if payload["mode"] == "starve" else "")
            sent = opening(kind, target, self.host_header) if kind else b""  # what one held connection sent
            self.report(Evidence(
                predicate=predicate, detail=f"{case}: {detail}", case=case, sent=sent, received=b"", seed=self.seed,
                extra={"clause": "RFC 9112 §9.5" if predicate != "I-ADV-MEMORY" else "RFC 9110 §5.4, RFC 6585 §5",
                       "evidence": "echo" if echo and predicate == "I-ADV-STARVE" else
                       "rss" if predicate == "I-ADV-MEMORY" else "connection",
                       "slow_clients": self.slow.detail()},
                repro=slow_repro(predicate=predicate, case=case, detail=detail, payload=payload,
                                 addr=self.host_header, version=__version__),
            ))

    # ---- one case --------------------------------------------------------------------
    async def run_case(self, case: Case, nonce: str, *, echo: bool | None = None,
                       target: str | None = None) -> tuple[Rendered, Outcome, Verdict, bytes]:
        cal = self.calibration
        echo = cal.echo if echo is None and cal is not None else bool(echo)
        target = target or (cal.target if cal is not None else self.echo_path)
        rendered = render(case, target=target, host=self.host_header, nonce=nonce, echo=echo)
        segments = [Segment(s, case.pause if i else 0.0) for i, s in enumerate(rendered.segments)]
        want = 1 + case.followups

        def done(data: bytes) -> bool:
            parsed = parse_response_stream(data, list(case.methods), eof=False)
            return len([r for r in parsed.final_responses if r.complete]) >= want

        crash = self.crashlog
        if crash is not None:
            await crash.gate()  # held back while a crash suspect is replayed alone
            token = crash.begin("adversarial", nonce, f"0x{self.seed:016x}", crash_signature(case, rendered),
                                f"{case.name}: {_request_line(rendered)}", b"".join(rendered.segments),
                                self.host_header)
        before = self.identity()
        self._inflight += 1
        try:
            ex = await exchange(
                self.host, self.port, segments, held=self.held, owner=self.name, quiet_timeout=self.quiet_timeout,
                total_timeout=self.quiet_timeout + 5.0 + case.pause * len(segments),
                done=None if case.close else done, linger=0.15,
                # an echo of a multi-MiB head (size-limit cases) is longer than the default cap
                max_bytes=max(4 << 20, 2 * sum(map(len, rendered.segments)) + (1 << 16)),
            )
        except BaseException:
            if crash is not None:
                crash.end(token, "no_response")
            raise
        finally:
            self._inflight -= 1
        parsed = parse_response_stream(ex.received, list(case.methods), eof=True)
        answered = bool(parsed.final_responses)
        if crash is not None:
            crash.end(token, "refused" if ex.connect_error else "response" if answered else "no_response")
        outcome = Outcome(ex.received, ex.closed, ex.timed_out, ex.connect_error)
        # No answer, or one cut off by the close: a dying target looks like that too.
        cut = any(is_truncation(v) for v in parsed.violations)
        if (ex.connect_error or ex.closed) and (not answered or cut):
            if before is not None and self.identity() != before:
                outcome.target_alive = False  # it died (and came back) while this exchange ran
            elif self.alive is not None:
                outcome.target_alive = await self.alive()
        verdict = judge(case, rendered, outcome, echo=echo)
        return rendered, outcome, verdict, ex.sent

    def _count_violations(self, violations) -> None:
        for v in violations:
            self.rfc["rfc1_violations" if v.predicate == "I-RFC-1" else "rfc2_violations"] += 1

    def _account(self, case: Case, rendered: Rendered, outcome: Outcome, verdict: Verdict, sent: bytes,
                 *, echo: bool | None = None, target: str | None = None, calibration: bool = False) -> None:
        v = verdict.verdict
        if calibration:  # a plain GET: its framing counts, it is not an adversarial evaluation
            self.tally["adv_calibration_probes"] += 1
        else:
            self.tally["adv_sent"] += 1
            self.tally[f"adv_{v}"] += 1
        if verdict.continued_after_reject:
            self.tally["adv_continued_after_reject"] += 1
        self.rfc["responses_checked"] += len(parse_response_stream(outcome.received, list(case.methods),
                                                                   eof=outcome.closed).final_responses)
        self._count_violations(verdict.violations)
        ct = self.per_case[case.name]
        ct.counts[v] += 1
        if ct.example is None and v not in ("served_ok", "well_rejected", "awaited"):
            ct.example = {"verdict": v, "reason": verdict.reason, "nonce": rendered.nonce}
        findings: list[tuple[str, str]] = []
        attributed = v == "crash" and self.crashlog is not None  # the orchestrator's I-LIVENESS carries it
        pred = predicate_for("adversarial", v)
        if pred and (not calibration or v == "crash") and not attributed:
            findings.append((pred, verdict.reason))
        for viol in verdict.violations:
            findings.append((viol.predicate, viol.detail))
        cal = self.calibration or Calibration(False, self.echo_path, None, "calibrating")
        echo = cal.echo if echo is None else echo
        target = cal.target if target is None else target
        for predicate, detail in findings:
            self.report(Evidence(
                predicate=predicate, detail=f"{case.name}: {detail}", case=case.name, sent=sent,
                received=outcome.received, seed=self.seed,
                extra={"clause": case.clause, "level": case.level, "expect": case.expect, "verdict": v,
                       "nonce": rendered.nonce, "echo_mode": echo, "probe_target": target,
                       "evidence": verdict.evidence,
                       "closed": outcome.closed, "timed_out": outcome.timed_out},
                repro=adversarial_repro(case=case, predicate=predicate, detail=detail, echo=echo,
                                        target=target, nonce=rendered.nonce, addr=self.host_header,
                                        quiet=self.quiet_timeout, version=__version__,
                                        debug_path=self.debug_path if verdict.evidence == "counter" else None),
            ))

    # ---- walkers -----------------------------------------------------------------------
    def _next_case(self) -> Case:
        """The next case of the current round: all walkers share one seeded shuffle of the
        catalogue plus the sweep, so a round covers every case once as fast as C walkers can."""
        if not self._queue:
            self._round += 1
            order = list(self.cases) + list(self.sweep_cases)
            random.Random(derive_seed(self.seed, "adversarial-round", self._round)).shuffle(order)
            self._queue.extend(order)
        return self._queue.popleft()

    def _internal_error(self, case: Case) -> None:
        self.tally["adv_internal_error"] += 1
        if not self.internal_errors:
            import traceback

            self.internal_errors.append(f"{case.name}: {traceback.format_exc()}")

    async def walker(self, walker_id: int, deadline: float, stop: Callable[[], bool]) -> None:
        """Take cases from the shared round until the deadline (walker 0 also runs the slow-client phase)."""
        slow = None
        if walker_id == 0 and self.slow_config is not None:
            slow = asyncio.create_task(self.run_slow(deadline, stop))
        try:
            await self._walk(walker_id, deadline, stop)
        finally:
            if slow is not None:
                await slow

    async def _walk(self, walker_id: int, deadline: float, stop: Callable[[], bool]) -> None:
        n = 0
        while time.monotonic() < deadline and not stop():
            await self._quiet_event().wait()  # a counter check runs alone (bounded: see counter_check)
            if walker_id == 0:  # wt-wsasgi: the ASGI probes that are due
                try:
                    await self.asgi.tick(deadline)
                except Exception:
                    self._internal_error(sweep_case("GET", "/", name="asgi probes"))
            case = self._next_case()
            n += 1
            try:
                t_case = time.monotonic()
                rendered, outcome, verdict, sent = await self.run_case(case, f"w{walker_id}-{n}")
                span = time.monotonic() - t_case
            except Exception:  # a probatorium bug on one case must not stop the walker
                self._internal_error(case)
                continue
            if verdict.verdict == "conn_error":
                self.tally["adv_conn_error"] += 1
                await asyncio.sleep(0.2)
                continue
            try:
                self._account(case, rendered, outcome, verdict, sent)
            except Exception:
                self._internal_error(case)
            if self._wants_counter(case, verdict):  # wt-smuggle (issue 12): app-side evidence
                try:
                    await self.counter_check(case, f"w{walker_id}-{n}c", span)
                except Exception:
                    self._internal_error(case)
            if case.name.startswith("sweep GET "):
                cond = conditional_case(case, outcome.received)
                if cond is not None:
                    self.per_case.setdefault(cond.name, CaseTally())
                    self._queue.appendleft(cond)
            if verdict.verdict == "crash":
                if self.recover is None or not await self.recover():
                    self.stopped_reason = f"the target died on case {case.name} and could not be restarted"
                    return

    # ---- wt-smuggle (issue 12): the debug counter as app-side evidence -------------------
    def _wants_counter(self, case: Case, verdict: Verdict) -> bool:
        """Re-run a case once per cell between counter reads when the status-judged verdict says the
        application did not run (or one request ran where the body held another)."""
        if not self.debug_path or case.group == "sweep" or case.name in self._counter_checked:
            return False
        now = time.monotonic()
        if self._walk_started is None:
            self._walk_started = now
        if self._counter_spent > COUNTER_SHARE * (now - self._walk_started):
            return False  # the walkers stand still during a check: at most this share of the walk
        if verdict.evidence == "echo" and not case.inner:
            return False
        if case.inner:
            return verdict.verdict not in ("wrong_accepted", "crash")
        return len(case.methods) == 1 and verdict.verdict in (
            "well_rejected", "server_error", "refused_valid", "not_routed", "misrouted")

    async def app_count(self) -> int | None:
        """The debug endpoint's `requests` counter (None: no endpoint, no such field)."""
        raw = f"GET {self.debug_path} HTTP/1.1\r\nHost: {self.host_header}\r\nConnection: close\r\n\r\n"
        ex = await exchange(self.host, self.port, [Segment(raw.encode("latin-1"), 0.0)], quiet_timeout=2.0,
                            total_timeout=4.0, linger=0.0,
                            done=lambda d: any(r.complete for r in
                                               parse_response_stream(d, ["GET"], eof=False).final_responses))
        return requests_counter(ex.received)

    async def counter_check(self, case: Case, nonce: str, span: float | None = None) -> None:
        """Run the case between two counter reads, with a control window of the same length
        before and after in which nothing may be counted; judge it with `app_requests` when both
        controls are quiet, and account it as one more evaluation either way."""
        quiet = self._quiet_event()
        if not quiet.is_set():
            return  # another walker's check is running: this case waits for its next turn
        self._counter_tries[case.name] += 1
        if self._counter_tries[case.name] >= 2:
            self._counter_checked.add(case.name)
        quiet.clear()
        t0 = time.monotonic()
        try:
            # Most other exchanges end within this; one still waiting out its quiet timeout has been
            # answered already (a late one lands in at most one window: the minimum discards it).
            limit = time.monotonic() + 1.0
            while self._inflight and time.monotonic() < limit:
                await asyncio.sleep(0.05)
            await self._counter_check(case, nonce, span)
        finally:
            quiet.set()
            self._counter_spent += time.monotonic() - t0

    def _quiet_event(self) -> asyncio.Event:
        if self._quiet is None:
            self._quiet = asyncio.Event()
            self._quiet.set()
        return self._quiet

    async def _counter_check(self, case: Case, nonce: str, span: float | None) -> None:
        """COUNTER_RUNS bracketed runs, 0.3 s apart, after a quiet control window of the same
        length: other traffic only ever ADDS to a delta, so the smallest delta is the case's own
        (a periodic request such as the watchdog's health check lands in at most one window)."""
        async def control(seconds: float) -> bool:
            a = await self.app_count()
            await asyncio.sleep(seconds)
            b = await self.app_count()
            return a is not None and b is not None and b - a == 1  # only the second read itself

        if span is None:  # how long one exchange of this case takes
            t0 = time.monotonic()
            _, _, first, _ = await self.run_case(case, nonce)
            span = time.monotonic() - t0
            if first.verdict in ("conn_error", "crash"):
                return
        span = min(max(span, 0.2), 5.0)
        if not await control(span):
            self.tally["adv_counter_busy"] += 1
            return
        deltas: list[int] = []
        for _ in range(COUNTER_RUNS):
            c0 = await self.app_count()
            rendered, outcome, verdict, sent = await self.run_case(case, nonce)
            c1 = await self.app_count()
            if verdict.verdict in ("conn_error", "crash") or c0 is None or c1 is None:
                return
            deltas.append(c1 - c0 - 1)  # the second read counts itself
            await asyncio.sleep(COUNTER_GAP)
        outcome.app_requests = min(deltas)
        verdict = judge(case, rendered, outcome, echo=bool(self.calibration and self.calibration.echo))
        self._counter_checked.add(case.name)
        self.tally["adv_counter_judged"] += 1
        self._account(case, rendered, outcome, verdict, sent)

    def case_breakdown(self) -> dict:
        """Per-case detail for tier1_tally.json (validate-diff compares the `verdict` field)."""
        out = {}
        known = {c.name: c for c in self.cases + self.sweep_cases}
        for name, ct in self.per_case.items():
            c = known.get(name) or sweep_case("GET", "/", name=name)
            worst = min(ct.counts, key=lambda v: SEVERITY_ORDER.get(v, 99)) if ct.counts else "not_sent"
            out[name] = {
                "verdict": worst, "counts": dict(ct.counts), "level": c.level, "clause": c.clause,
                "group": c.group, "expect": c.expect, "example": ct.example,
            }
        out.update(self.asgi.case_breakdown(ASGI_ORDER))  # wt-wsasgi
        return out

    def counters(self) -> dict[str, int]:
        """The `tier_1.adversarial` string→int map."""
        base = {f"adv_{v}": 0 for v in VERDICTS if v != "conn_error"}
        base["adv_sent"] = 0
        base.update(self.tally)
        base["adv_cases"] = len(self.cases)
        base.update(self.asgi.counters())  # wt-wsasgi: asgi_* counters of the ASGI probes
        return dict(base)


def segmentation_divergences(cases: list[Case], breakdown: dict) -> list[dict]:
    """Pairs of cases (same `segmentation-pair:` tag: the same bytes at once and in small segments)
    whose verdicts differ between acceptance and rejection: a limit that depends on TCP segmentation."""
    pairs: dict[str, list[str]] = {}
    for c in cases:
        for tag in c.tags:
            if tag.startswith("segmentation-pair:"):
                pairs.setdefault(tag.split(":", 1)[1], []).append(c.name)
    accepted = ("wrong_accepted", "lenient_accepted", "served_ok")
    out = []
    for pair, names in pairs.items():
        verdicts = {n: breakdown.get(n, {}).get("verdict", "not_sent") for n in names}
        if "not_sent" in verdicts.values() or len(verdicts) < 2:
            continue
        kinds = {v in accepted for v in verdicts.values()}
        if len(kinds) > 1:
            out.append({"pair": pair, "verdicts": verdicts,
                        "detail": "the limit depends on TCP segmentation: " +
                                  ", ".join(f"{n} {v}" for n, v in verdicts.items())})
    return out


def _request_line(rendered: Rendered) -> str:
    first = rendered.segments[0].split(b"\r\n", 1)[0] if rendered.segments else b""
    return first[:200].decode("latin-1")


def crash_signature(case: Case, rendered: Rendered) -> str:
    """What a death suspect is compared by across deaths: "METHOD path" for a plain (sweep or
    calibration) request, so it meets the Markov walkers' "METHOD /template"; the case otherwise."""
    if case.group == "sweep":
        parts = _request_line(rendered).split(" ")
        if len(parts) == 3:
            return f"{parts[0]} {parts[1].split('?', 1)[0]}"
    return f"adversarial {case.name}"


def sweep_case(method: str, path: str, name: str | None = None) -> Case:
    """A valid request to a known path, sent to check the framing of whatever the target answers."""
    body = ""
    extra = ""
    if method in ("POST", "PUT", "PATCH"):
        body, extra = "{}", "Content-Type: application/json\r\nContent-Length: 2\r\n"
    return Case(
        name=name or f"sweep {method} {path}", group="sweep", clause="RFC 9112 §6.3, RFC 9110 §6.4.1",
        level="MAY", expect="either", template=f"{method} {path} HTTP/1.1\r\nHost: $H\r\n{extra}\r\n{body}",
        methods=(method,), note="response framing of a declared route (204/304/HEAD/chunked bodies)",
    )


def conditional_case(plain: Case, received: bytes) -> Case | None:
    """Revalidate a GET that returned a validator: the 304 it provokes must carry no body."""
    parsed = parse_response_stream(received, ["GET"], eof=True)
    if not parsed.final_responses:
        return None
    resp = parsed.final_responses[0]
    etag, lm = resp.header(b"etag"), resp.header(b"last-modified")
    if not etag and not lm:
        return None
    cond = f"If-None-Match: {etag.decode('latin-1')}\r\n" if etag else \
        f"If-Modified-Since: {lm.decode('latin-1')}\r\n"
    head, _, rest = plain.template.partition("\r\n")
    return Case(
        name=plain.name.replace("sweep GET", "sweep conditional GET", 1), group="sweep", clause="RFC 9110 §13.1, §15.4.5",
        level="MAY", expect="either", template=f"{head}\r\n{cond}{rest}", methods=("GET",),
        note="a 304 has no body whatever its headers say",
    )


def sweep_targets(operations: list, paths: ContractPaths) -> list[tuple[str, str]]:
    """(method, path) pairs whose responses the slice checks for framing each round: the contract
    paths, and from the OpenAPI operations every GET (also as HEAD) and every operation that
    declares a 204 or 304 (path parameters filled with 1)."""
    out = [("GET", "/"), ("HEAD", "/"), ("GET", paths.health), ("HEAD", paths.health),
           ("GET", paths.debug), ("HEAD", paths.echo), ("OPTIONS", paths.echo)]
    for op in operations:
        path = op.concrete_path()
        bodiless = any(code in ("204", "304") for code in op.responses)
        if op.method == "GET":
            out += [("GET", path), ("HEAD", path)]
        elif bodiless and op.method in ("DELETE", "PUT", "POST", "PATCH", "OPTIONS"):
            out.append((op.method, path))
    return list(dict.fromkeys(out))
