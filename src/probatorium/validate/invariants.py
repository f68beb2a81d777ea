"""The invariant catalogue: every predicate the validator can report, and the judge that decides it.

Slices, tiers and observers only count and collect evidence; this catalogue
says what each count means, how severe a violation is, and decides each
property passed / failed / not_judged (SPEC.md §5; Schemathesis keeps its
checks the same way). The gate, the console summary, ``tier1_tally.json``
and ``validate-diff`` all read it: there is no second mapping anywhere.
Extend it, never weaken it. ``docs/invariants.md`` is generated from it
(``probatorium invariants --markdown``) and a test keeps the file current.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..results.schema import PropertyResult

Severity = Literal["HIGH", "MED", "LOW"]
SEVERITIES: tuple[Severity, ...] = ("HIGH", "MED", "LOW")


@dataclass
class Observed:
    """What one cell measured, as the judges see it.

    ``tallies`` is the cell's ``tier_1`` map of sub-tallies (``adversarial``,
    ``markov``, ``ws_torture``, ``h2c_churn``, ``sse_kill``, ``rfc``); a sub-tally
    is present only when its source ran. ``reasons`` says, per sub-tally, why
    its source measured less than asked (a slice's stopped reason). ``evidence``
    holds what is judged from series rather than counters (verdicts of the
    pure series judges: SSE slots, leak slopes, /metrics monotonicity, the
    watchdog's health checks). ``incidents`` are the predicates with an incident.
    """

    tallies: Mapping[str, Any] = field(default_factory=dict)
    reasons: Mapping[str, str] = field(default_factory=dict)
    evidence: Mapping[str, Any] = field(default_factory=dict)
    incidents: frozenset[str] = frozenset()

    def count(self, path: str) -> int | None:
        """The counter at ``"<sub-tally>.<counter>"`` (or a top-level counter), None if absent."""
        return counter_value(self.tallies, path)

    def has(self, source: str) -> bool:
        return isinstance(self.tallies.get(source), Mapping)


Judge = Callable[[Observed], "PropertyResult | None"]  # None: the property does not apply to this cell


def counter_value(tier_1: Mapping[str, Any], path: str) -> int | None:
    """A counter of a ``tier_1`` map by dotted path; None when it is absent or not a number."""
    node: Any = tier_1
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    return int(node)


def counted(evaluations: int, violations: int, why_not: str) -> PropertyResult:
    """failed on any violation, passed when something was evaluated, else not_judged with the reason."""
    if violations:
        return PropertyResult(status="failed", evaluations=evaluations)
    if evaluations:
        return PropertyResult(status="passed", evaluations=evaluations)
    return PropertyResult(status="not_judged", reason=why_not)


def not_judged(reason: str) -> PropertyResult:
    return PropertyResult(status="not_judged", reason=reason)


def _sources(paths: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys(p.split(".")[0] for p in paths))


def count_judge(evaluations: tuple[str, ...], violations: tuple[str, ...], why_not: str) -> Judge:
    """The common judge: sum the evaluation and the violation counters of the sources that ran."""
    sources = _sources(evaluations + violations)

    def judge(obs: Observed) -> PropertyResult | None:
        ran = [s for s in sources if obs.has(s)]
        if not ran:
            return None
        evals = sum(obs.count(p) or 0 for p in evaluations if p.split(".")[0] in ran)
        bad = sum(obs.count(p) or 0 for p in violations if p.split(".")[0] in ran)
        why = next((obs.reasons[s] for s in ran if obs.reasons.get(s)), "") or why_not
        return counted(evals, bad, why)

    return judge


def _ws_judge(violations: tuple[str, ...]) -> Judge:
    """WebSocket predicates: nothing is passed unless a real handshake succeeded."""
    inner = count_judge(("ws_torture.ws_sent",), violations, "no WebSocket frame was judged")

    def judge(obs: Observed) -> PropertyResult | None:
        if not obs.has("ws_torture"):
            return None
        if not obs.count("ws_torture.ws_upgraded") or obs.evidence.get("ws_endpoint_absent"):
            return not_judged(obs.reasons.get("ws_torture") or "no WebSocket handshake succeeded")
        res = inner(obs)
        if res is not None:
            res.reason = ""
        return res

    return judge


def _evidence_judge(key: str) -> Judge:
    """A property judged by a pure series judge upstream; its verdict is the evidence."""

    def judge(obs: Observed) -> PropertyResult | None:
        verdict = obs.evidence.get(key)
        return None if verdict is None else PropertyResult.model_validate(verdict)

    return judge


def _drv1(obs: Observed) -> PropertyResult | None:
    if not obs.has("markov"):
        return None
    if not obs.evidence.get("kv_contract"):
        return not_judged("the OpenAPI document offers no PUT/GET/DELETE /kv/{key} (key/value contract); "
                          "refapp self-checks still report it")
    return count_judge(("markov.drv_checks",), ("markov.drv_read_after_write_mismatch",),
                       "no acknowledged write was read back")(obs)


def self_check_count(obs: Observed, pred: str) -> int | None:
    """How many times the target's own check of `pred` ran in the cell (the debug endpoint's
    ``self_checks``, docs/contracts.md); None when the target does not list the predicate."""
    checks = obs.evidence.get("self_checks")
    if not isinstance(checks, Mapping):
        return None
    n = checks.get(pred)
    return None if isinstance(n, bool) or not isinstance(n, int) else n


def _self_check(pred: str) -> Judge:
    """A refapp self-check property: passed with n evaluations when the target ran its check n > 0
    times; not_judged when it lists the predicate with 0; None (does not apply) when it does not
    list it. A violation is an x-invariant incident, which judge_cell turns into failed."""

    def judge(obs: Observed) -> PropertyResult | None:
        n = self_check_count(obs, pred)
        if n is None:
            return None
        if n > 0:
            return PropertyResult(status="passed", evaluations=n, reason="target self-checks (debug endpoint)")
        return not_judged(f"the target ran 0 self-checks of {pred}: no request reached the checked code")

    return judge


def _obs1(obs: Observed) -> PropertyResult | None:
    m = obs.evidence.get("metrics")
    if m is None:
        # no /metrics to scrape: the target's own check is the only evidence
        return _self_check("I-OBS-1")(obs)
    own = self_check_count(obs, "I-OBS-1")
    if m.get("comparisons") and not m.get("violations") and own:
        # judged from outside; the target's own comparisons are named, not added (another view
        # of the same counters)
        return PropertyResult(status="passed", evaluations=m["comparisons"],
                              reason=f"/metrics scrapes; the target also ran {own} self-check(s)")
    if m.get("violations"):
        return PropertyResult(status="failed", evaluations=m.get("comparisons", 0))
    if m.get("comparisons"):
        return PropertyResult(status="passed", evaluations=m["comparisons"])
    return not_judged(m.get("absent_reason") or "fewer than two /metrics scrapes")


def _leak(pred: str) -> Judge:
    def judge(obs: Observed) -> PropertyResult | None:
        leaks = obs.evidence.get("leaks")
        if isinstance(leaks, str):  # why the leak judges could not run (e.g. no local process)
            return not_judged(leaks)
        verdict = (leaks or {}).get(pred)
        return None if verdict is None else PropertyResult.model_validate(verdict)

    return judge


def _liveness(obs: Observed) -> PropertyResult | None:
    wd = obs.evidence.get("watchdog")
    if wd is None:
        return None
    if not wd.get("has_process"):
        return not_judged(wd.get("no_process_reason") or "url target: no process to watch")
    dead = "I-LIVENESS" in wd.get("events", ()) or "I-LIVENESS" in obs.incidents
    return PropertyResult(status="failed" if dead else "passed", evaluations=max(1, wd.get("health_checks", 0)))


def _hang(obs: Observed) -> PropertyResult | None:
    wd = obs.evidence.get("watchdog")
    if wd is None:
        return None
    checks = wd.get("health_checks", 0)
    if "I-HANG" in wd.get("events", ()):
        return PropertyResult(status="failed", evaluations=checks)
    return PropertyResult(status="passed", evaluations=checks) if checks else not_judged("no health check ran")


def _tier2(pred: str, why_not: str) -> Judge:
    """A Tier 2 checker's predicate, from the ``tier_2`` tally (evidence "tier_2"):
    ``checked_<ID>`` exchanges evaluated, ``findings_<ID>`` findings of the predicate's severity."""

    def judge(obs: Observed) -> PropertyResult | None:
        t2 = obs.evidence.get("tier_2")
        if not isinstance(t2, Mapping):
            return None
        evals = counter_value(t2, f"checked_{pred}") or 0
        bad = counter_value(t2, f"findings_{pred}") or 0
        res = counted(evals, bad, obs.reasons.get("tier_2") or why_not)
        if pred == "I-API-SCHEMA" and res.status == "passed" and counter_value(t2, "schema_undeclared_status"):
            res.reason = f"{counter_value(t2, 'schema_undeclared_status')} undeclared status code(s) (MED incidents)"
        return res

    return judge


def _api_5xx(obs: Observed) -> PropertyResult | None:
    """I-API-5XX from Tier 2's exchanges and/or the Markov walk's responses (``markov.api5xx_*``):
    failed on a finding from either, passed when either evaluated something; the reason names the
    evidence used. Neither ran: the property does not apply; both ran empty: not_judged."""
    # (evidence, evaluated, violations, how the counts read, why nothing was evaluated)
    used: list[tuple[str, int, int, str, str]] = []
    t2 = obs.evidence.get("tier_2")
    if isinstance(t2, Mapping):
        n, bad = counter_value(t2, "checked_I-API-5XX") or 0, counter_value(t2, "findings_I-API-5XX") or 0
        used.append(("tier 2", n, bad, f"{n} exchange(s), {bad} confirmed finding(s)",
                     obs.reasons.get("tier_2") or "no Tier 2 request was answered"))
    if obs.has("markov"):
        n, bad = obs.count("markov.api5xx_checked") or 0, obs.count("markov.api5xx_findings") or 0
        used.append(("markov", n, bad, f"{n} response(s), {bad} 5xx",
                     obs.reasons.get("markov") or "no Markov request was answered"))
    if not used:
        return None
    res = counted(sum(u[1] for u in used), sum(u[2] for u in used), "; ".join(f"{u[0]}: {u[4]}" for u in used))
    if res.status != "not_judged":
        res.reason = "evidence: " + ", ".join(f"{name} ({counts})" if n else f"{name} (none: {why})"
                                              for name, n, _, counts, why in used)
    return res


def _tier3(pred: str) -> Judge:
    """A Tier 3 predicate: the pure timeline judges' verdicts (validate/tier3/judges.py), over every seed."""

    def judge(obs: Observed) -> PropertyResult | None:
        verdict = (obs.evidence.get("tier3") or {}).get(pred)
        return None if verdict is None else PropertyResult.model_validate(verdict)

    return judge


@dataclass(frozen=True)
class Invariant:
    """One predicate: the property that must hold, how severe a violation is, and its judge."""

    id: str
    severity: Severity
    property: str  # one sentence: what must hold
    judged_by: str  # where the evidence comes from
    violations: tuple[str, ...] = ()  # tier_1 counters whose non-zero value violates it
    evaluations: tuple[str, ...] = ()  # tier_1 counters of the checks made
    verdicts: tuple[str, ...] = ()  # "<slice>:<verdict>" per-case verdicts that violate it
    judge: Judge | None = None  # None: reported only through incidents (a refapp's self-check)

    def decide(self, obs: Observed) -> PropertyResult | None:
        """passed / failed / not_judged for this cell, or None when the property does not apply."""
        if self.judge is not None:
            return self.judge(obs)
        if self.violations:
            return count_judge(self.evaluations, self.violations, "nothing was evaluated")(obs)
        return None

    def violation_count(self, tier_1: Mapping[str, Any]) -> dict[str, int]:
        """The violation counters present in a recorded ``tier_1`` map (validate-diff reads these)."""
        out = {}
        for path in self.violations:
            v = counter_value(tier_1, path)
            if v is not None:
                out[path] = v
        return out


def _inv(id: str, severity: Severity, prop: str, judged_by: str, *, violations: tuple[str, ...] = (),
         evaluations: tuple[str, ...] = (), verdicts: tuple[str, ...] = (), judge: Judge | None = None,
         why_not: str = "") -> Invariant:
    if judge is None and violations:
        judge = count_judge(evaluations, violations, why_not or "nothing was evaluated")
    return Invariant(id, severity, prop, judged_by, violations, evaluations, verdicts, judge)


_ADV_SENT = ("adversarial.adv_sent",)
_H2C_SENT = ("h2c_churn.h2c_sent",)
_RFC = ("rfc.responses_checked",)

CATALOGUE: dict[str, Invariant] = {inv.id: inv for inv in [
    _inv("I-ADV-ACCEPTED", "HIGH",
         "A request that a MUST-level rule of RFC 9110/9112 says must be rejected is never acted on, "
         "no request smuggled inside another's body is executed, MUST-close rules are kept, and the body "
         "of a valid h2c upgrade request reaches the application intact.",
         "adversarial slice: verdict wrong_accepted, judged from the echo route when present; h2c slice: "
         "an upgrade request's body lost or altered",
         violations=("adversarial.adv_wrong_accepted", "h2c_churn.h2c_body_mismatch"),
         evaluations=("adversarial.adv_sent", "h2c_churn.h2c_body_checked"),
         verdicts=("adversarial:wrong_accepted", "h2c:body_mismatch"), why_not="no adversarial case was judged"),
    _inv("I-ADV-HANG", "MED", "Every adversarial probe is answered or closed before the timeout.",
         "adversarial slice: verdict hang_until_timeout", violations=("adversarial.adv_hang_until_timeout",),
         evaluations=_ADV_SENT, verdicts=("adversarial:hang_until_timeout",),
         why_not="no adversarial case was judged"),
    _inv("I-ADV-LENIENT", "LOW", "Requests that SHOULD/MAY be rejected are rejected (informational).",
         "adversarial slice: verdict lenient_accepted", violations=("adversarial.adv_lenient_accepted",),
         evaluations=_ADV_SENT, verdicts=("adversarial:lenient_accepted",),
         why_not="no adversarial case was judged"),
    _inv("I-RFC-1", "HIGH",
         "Every response is framed correctly: valid Content-Length, no Content-Length with Transfer-Encoding, "
         "no body on HEAD/1xx/204/304, valid chunked syntax, no extra bytes.",
         "every response any walker reads is parsed strictly (RFC 9112 §6)", violations=("rfc.rfc1_violations",),
         evaluations=_RFC, why_not="no response was read"),
    _inv("I-RFC-2", "HIGH", "No response header line carries CR, LF or NUL, or breaks the field grammar.",
         "every response head any walker reads (RFC 9110 §5.5, RFC 9112 §5)", violations=("rfc.rfc2_violations",),
         evaluations=_RFC, why_not="no response was read"),
    _inv("I-LIVENESS", "HIGH", "The target process stays up while it is wanted up (planned kills excepted).",
         "watchdog: process exit outside a planned fault window, or a walker finding the target gone",
         verdicts=("adversarial:crash",), judge=_liveness),
    _inv("I-HANG", "HIGH", "The health path keeps answering: never 4 time-outs in a row outside a planned pause.",
         "watchdog: GET health path every 2 s with a 5 s time-out; refused connections do not count",
         judge=_hang),
    _inv("I-H2C-CRASHED", "HIGH", "An h2c upgrade attempt never kills the target.", "h2c slice",
         violations=("h2c_churn.h2c_crashed",), evaluations=_H2C_SENT, verdicts=("h2c:crashed",),
         why_not="no h2c preamble was judged"),
    _inv("I-H2C-UPGRADE", "HIGH", "A 101 to h2c only follows exactly one valid HTTP2-Settings.",
         "h2c slice (RFC 7540 §3.2.1)", violations=("h2c_churn.h2c_bad_upgrade_accepted",),
         evaluations=_H2C_SENT, verdicts=("h2c:bad_upgrade_accepted",), why_not="no h2c preamble was judged"),
    _inv("I-H2C-HANG", "MED", "An h2c preamble is answered.", "h2c slice", violations=("h2c_churn.h2c_hang",),
         evaluations=_H2C_SENT, verdicts=("h2c:hang",), why_not="no h2c preamble was judged"),
    _inv("I-WS-ACCEPTED", "HIGH", "A WebSocket frame that violates RFC 6455 is never acted on.", "ws slice",
         violations=("ws_torture.ws_accepted_bad_frame",), verdicts=("ws:ws_accepted_bad_frame",),
         judge=_ws_judge(("ws_torture.ws_accepted_bad_frame",))),
    _inv("I-WS-HANG", "HIGH", "A bad WebSocket frame is followed by a close within the timeout.", "ws slice",
         violations=("ws_torture.ws_hang_no_close",), verdicts=("ws:ws_hang_no_close",),
         judge=_ws_judge(("ws_torture.ws_hang_no_close",))),
    _inv("I-WS-CLOSE", "MED", "A bad WebSocket frame is answered by a close frame with the right code.",
         "ws slice: wrong or missing close code, or TCP dropped without a close frame",
         violations=("ws_torture.ws_wrong_close", "ws_torture.ws_unclean_close"),
         verdicts=("ws:ws_wrong_close", "ws:ws_unclean_close"),
         judge=_ws_judge(("ws_torture.ws_wrong_close", "ws_torture.ws_unclean_close"))),
    _inv("I-CONN-2", "HIGH",
         "Server-side SSE slots are released after clients reset or close: the target's sse_open comes back "
         "within the streams the validator holds (+2 +5 %) inside a 10 s settle window.",
         "sse slice, from the debug endpoint's sse_open against every stream the validator holds on the SSE path",
         judge=_evidence_judge("I-CONN-2")),
    _inv("I-DRV-1", "HIGH", "An acknowledged write is read back exactly.",
         "key/value contract and refapp self-checks", violations=("markov.drv_read_after_write_mismatch",),
         evaluations=("markov.drv_checks",), judge=_drv1),
    _inv("I-MEM-1", "HIGH", "RSS does not grow without bound.", "robust slope over 1 Hz samples",
         judge=_leak("I-MEM-1")),
    _inv("I-FD-1", "HIGH", "Open file descriptors do not grow without bound.", "robust slope",
         judge=_leak("I-FD-1")),
    _inv("I-TASK-1", "HIGH", "asyncio tasks do not grow without bound.", "robust slope of debug tasks",
         judge=_leak("I-TASK-1")),
    _inv("I-MW-SESSION", "HIGH", "Session middleware keeps sessions intact.",
         "refapp self-check (x-invariant incidents; evaluations: the debug endpoint's self_checks)",
         judge=_self_check("I-MW-SESSION")),
    _inv("I-MW-RATELIMIT", "HIGH", "The rate limiter never over-admits.",
         "refapp self-check (x-invariant incidents; evaluations: the debug endpoint's self_checks)",
         judge=_self_check("I-MW-RATELIMIT")),
    _inv("I-MW-JWT", "HIGH", "Forged JWTs are rejected.",
         "refapp self-check (x-invariant incidents; evaluations: the debug endpoint's self_checks)",
         judge=_self_check("I-MW-JWT")),
    _inv("I-MW-CSRF", "HIGH", "Requests without a valid CSRF token are rejected.",
         "refapp self-check (x-invariant incidents; evaluations: the debug endpoint's self_checks)",
         judge=_self_check("I-MW-CSRF")),
    _inv("I-OBS-1", "HIGH", "Histogram counters never decrease.", "refapp self-check and /metrics scrape",
         judge=_obs1),
    _inv("I-OBS-2", "HIGH", "No log line is dropped.",
         "refapp self-check (x-invariant incidents; evaluations: the debug endpoint's self_checks)",
         judge=_self_check("I-OBS-2")),
    _inv("I-T3-LOST-WRITE", "HIGH",
         "A write acknowledged with a 2xx is read back with its value after recovery, across every fault "
         "the durability model covers.", "tier 3: the reads after recovery of each seed's timeline",
         judge=_tier3("I-T3-LOST-WRITE")),
    _inv("I-T3-NO-RECOVERY", "HIGH",
         "After every fault window ends, the health path and one read succeed within the recovery deadline.",
         "tier 3: the recovery probe after each fault (default deadline 10 s, --recovery-deadline)",
         judge=_tier3("I-T3-NO-RECOVERY")),
    _inv("I-T3-5XX", "HIGH", "No request outside every fault window (plus a 2 s grace) is answered 5xx.",
         "tier 3: every answered request of each seed's timeline", judge=_tier3("I-T3-5XX")),
    _inv("I-T3-DRAIN", "HIGH",
         "On SIGTERM, a request in flight for at least 100 ms is completed, not reset or cut, and the process "
         "exits within its grace period.", "tier 3: the requests in flight across each target-term",
         judge=_tier3("I-T3-DRAIN")),
    _inv("I-MW-XFF", "HIGH", "A reverse proxy never forwards an untrusted client's X-Forwarded-For as is.",
         "refapp self-check (static_swagger_proxy; evaluations: the debug endpoint's self_checks)",
         judge=_self_check("I-MW-XFF")),
    _inv("I-API-5XX", "HIGH",
         "No request, valid or mutated, is answered with a 5xx (a 502/503/504 the operation declares by design "
         "excepted; a declared 500 is still a finding).",
         "tier 2 checker over every exchange, and every response of Tier 1's Markov walk (bucketed by operation "
         "and status, shrunk); a 5xx tagged x-invariant counts for the predicate it names",
         violations=("markov.api5xx_findings",), evaluations=("markov.api5xx_checked",), judge=_api_5xx),
    _inv("I-API-UAF", "HIGH", "A deleted resource is no longer readable or writable.",
         "tier 2 checker: requests on a path after its 2xx DELETE",
         judge=_tier2("I-API-UAF", "no request followed a successful DELETE")),
    _inv("I-API-LEAK", "HIGH", "A create that was refused leaves no resource behind.",
         "tier 2 checker: the collection listed before and after a refused (400/409/422) POST",
         judge=_tier2("I-API-LEAK", "no refused create was bracketed by two collection reads")),
    _inv("I-API-AUTHZ", "HIGH", "A second user never reads, changes or deletes the first user's resource.",
         "tier 2 checker: a secured operation on another user's resource answered 2xx",
         judge=_tier2("I-API-AUTHZ", "no secured operation was tried on another user's resource")),
    _inv("I-API-HIERARCHY", "HIGH", "A child resource is reachable only through the parent it belongs to.",
         "tier 2 checker: a child id used under another parent answered 2xx",
         judge=_tier2("I-API-HIERARCHY", "no child id was tried under another parent")),
    _inv("I-API-OBJ", "HIGH", "A request whose id is replaced by a malformed one is refused with a 4xx, never a 5xx.",
         "tier 2 checker: malformed ids (non-numeric, huge, negative, control characters) in path parameters",
         judge=_tier2("I-API-OBJ", "no malformed id was sent")),
    _inv("I-API-SCHEMA", "HIGH",
         "Every response carries the content type and a body conforming to the schema its operation declares; "
         "a status the operation does not declare while it has no default response is reported MED.",
         "tier 2 checker over every exchange (status, Content-Type, JSON Schema of the declared response)",
         judge=_tier2("I-API-SCHEMA", "no Tier 2 response was checked")),
    _inv("I-API-LAX", "MED", "A request that violates an explicit schema constraint is not answered 2xx.",
         "tier 2 checker: mutated requests (maxLength, enum, type, required, additionalProperties: false, ...)",
         judge=_tier2("I-API-LAX", "no mutated request was sent")),
    # ---- wt-slow (issue 12): the adversarial slice's slow-client phase ----
    _inv("I-ADV-SLOWLORIS", "MED",
         "A partial request (half a request-line, a head trickled one byte every 2 s, a stalled body) is not "
         "held open indefinitely: the server closes it before the cap (62 s).",
         "adversarial slice, slow-client phase: K connections held at once (--slowloris-connections), the "
         "seconds each stays open per kind (RFC 9112 §9.5); an idle connection is measured, never judged",
         judge=_evidence_judge("I-ADV-SLOWLORIS")),
    _inv("I-ADV-STARVE", "HIGH",
         "While K slow connections are held, new legitimate requests are still served (availability).",
         "adversarial slice, slow-client phase: a legitimate request every 2 s (5 s time-out) while at least "
         "half the held connections are open, judged by the echo route's nonce when present, else by status; "
         "2 refused or timed-out requests fail it",
         judge=_evidence_judge("I-ADV-STARVE")),
    _inv("I-ADV-MEMORY", "HIGH",
         "The target's memory does not grow with what a client sends: unfinished request heads are bounded "
         "(RFC 9110 §5.4, RFC 6585 §5: 431).",
         "adversarial slice, slow-client phase: 8 unfinished heads of up to 8 MiB each, RSS of the target's "
         "process tree before and at peak; fails when the server took at least 16 MiB of head bytes and grew by "
         "at least half of them (and 16 MiB)",
         judge=_evidence_judge("I-ADV-MEMORY")),
    # ---- wt-smuggle (issue 12: items 2, 3, 8) ----
    _inv("I-ADV-MISREPORT", "MED",
         "A request whose handler ran is not answered as rejected (4xx/5xx): MED, not HIGH, because no MUST "
         "is broken by the status itself, but a client told its request failed may retry a non-idempotent "
         "request that already took effect (RFC 9110 §9.2.2, §15.5, §15.6), and a status-only judge would "
         "count the execution as a rejection.",
         "adversarial slice: verdict misreported, from app-side evidence only (the echo record, or the debug "
         "endpoint's requests counter read around a quiet exchange)",
         violations=("adversarial.adv_misreported",), evaluations=_ADV_SENT,
         verdicts=("adversarial:misreported",), why_not="no adversarial case was judged"),
    _inv("I-ADV-5XX", "MED",
         "A malformed request is answered with a 4xx, not a 5xx (501/505 excepted): a 5xx reports the "
         "client's error as the server's (RFC 9110 §15.6) and is not counted as a rejection.",
         "adversarial slice: verdict server_error", violations=("adversarial.adv_server_error",),
         evaluations=_ADV_SENT, verdicts=("adversarial:server_error",), why_not="no adversarial case was judged"),
    _inv("I-ADV-AUTHORITY", "MED",
         "An absolute-form request reaches the application routed by its target, with the target's authority "
         "(RFC 9112 §3.2.2: the origin server MUST ignore Host and MUST accept the absolute-form); MED because "
         "it misattributes the authority, it executes nothing unintended.",
         "adversarial slice: verdict misrouted, from the echo record (what path and authority the application "
         "received; a non-echo answer is not routed)", violations=("adversarial.adv_misrouted",),
         evaluations=_ADV_SENT, verdicts=("adversarial:misrouted",), why_not="no adversarial case was judged"),
    # ---- wt-wsasgi (issue 12 items 9, 10, 11) ----
    _inv("I-ASGI-SCOPE", "MED",
         "The ASGI scope the engine hands the application is what the ASGI HTTP spec states: http_version one "
         "of \"1.0\", \"1.1\", \"2\" and the request's; server and client [str host, int port]; path decoded "
         "without query or fragment; raw_path, query_string and header names/values byte strings.",
         "adversarial slice: the raw scope the refapps' /_probatorium/scope route returns (application "
         "evidence; a target without the route is not judged); optional keys missing are notes, not violations",
         violations=("adversarial.asgi_scope_violation",), evaluations=("adversarial.asgi_scope_checked",),
         verdicts=("adversarial:scope_violation",), why_not="no scope record was served"),
    _inv("I-CONN-ORPHAN", "MED",
         "Application code streaming with raw send() and never calling receive() is stopped once its client "
         "reset: the target's orphans_open comes back to its baseline within 10 s (ASGI HTTP \"Disconnected "
         "Client\": send should raise an OSError; a SHOULD of spec version 2.4, hence MED).",
         "adversarial slice: orphan rounds of 3 streams on /_probatorium/orphan, judged from the debug endpoint's "
         "orphans_open (application evidence; without it not judged)",
         violations=("adversarial.asgi_orphan_kept",), evaluations=("adversarial.asgi_orphan_checked",),
         verdicts=("adversarial:orphans_kept",), why_not="no orphan round could be judged"),
    _inv("I-WS-HANDSHAKE", "MED",
         "A WebSocket handshake with an unsupported version is refused with a Sec-WebSocket-Version header "
         "field listing the versions the server understands (RFC 6455 §4.4, §4.2.2 item 4).",
         "ws slice: verdict ws_version_not_advertised", violations=("ws_torture.ws_version_not_advertised",),
         verdicts=("ws:ws_version_not_advertised",), judge=_ws_judge(("ws_torture.ws_version_not_advertised",))),
    _inv("I-WS-AFTER-CLOSE", "HIGH",
         "After failing a connection with Close 1009 a server stops processing the oversize message: its RSS "
         "does not grow with the bytes sent after its close (RFC 6455 §7.1.7 MUST NOT continue to process data).",
         "ws slice: the oversize stream continued after the close, judged from the target's RSS (resource "
         "sampler's procfs reading); without a local process it is only counted (ws_read_after_close_unmeasured)",
         violations=("ws_torture.ws_buffered_after_close",), verdicts=("ws:ws_buffered_after_close",),
         judge=_ws_judge(("ws_torture.ws_buffered_after_close",))),
]}

# Counter path → (predicate, severity): what validate-diff compares between cells.
COUNTER_PREDICATES: dict[str, tuple[str, str]] = {
    path: (inv.id, inv.severity) for inv in CATALOGUE.values() for path in inv.violations
}
# Predicate → severity for every catalogued predicate.
PREDICATE_SEVERITIES: dict[str, str] = {inv.id: inv.severity for inv in CATALOGUE.values()}
# (slice, per-case verdict) → predicate: the one verdict→predicate mapping every slice uses.
VERDICT_PREDICATES: dict[tuple[str, str], str] = {
    tuple(v.split(":", 1)): inv.id for inv in CATALOGUE.values() for v in inv.verdicts  # type: ignore[misc]
}


def severity(predicate: str) -> Severity:
    """Severity of a predicate; unknown predicates reported from inside a target are HIGH."""
    inv = CATALOGUE.get(predicate)
    return inv.severity if inv else "HIGH"


def predicate_for(slice_name: str, verdict: str) -> str | None:
    """The predicate a per-case verdict of a slice violates, or None when the verdict is fine."""
    return VERDICT_PREDICATES.get((slice_name, verdict))


def verdict_severity(slice_name: str, verdict: str) -> Severity | None:
    """Severity of a per-case verdict (validate-diff's per-case rows), None when it is fine."""
    pred = predicate_for(slice_name, verdict)
    return severity(pred) if pred else None


def judge_cell(obs: Observed, incidents: Mapping[str, str] | None = None) -> dict[str, PropertyResult]:
    """Every property that applies to the cell, judged; a predicate with an incident has failed,
    whoever reported it (a slice, the watchdog, or the target itself through an x-invariant 5xx).
    ``incidents`` maps predicate → the first incident's detail."""
    props: dict[str, PropertyResult] = {}
    for inv in CATALOGUE.values():
        res = inv.decide(obs)
        if res is not None:
            props[inv.id] = res
    for pred, detail in (incidents or {}).items():
        prev = props.get(pred)
        if prev is None or prev.status != "failed":
            props[pred] = PropertyResult(status="failed", evaluations=max(1, prev.evaluations if prev else 0),
                                         reason=f"incident: {detail}"[:300])
    return props


def markdown() -> str:
    """docs/invariants.md, generated from the catalogue."""
    lines = ["# Invariants", "",
             "Generated from `src/probatorium/validate/invariants.py` by `probatorium invariants --markdown`;",
             "a test fails when this file is not current. HIGH predicates fail the release gate.", "",
             "| ID | severity | property | judged by | violation counters | per-case verdicts |",
             "|---|---|---|---|---|---|"]
    for inv in CATALOGUE.values():
        cells = [inv.id, inv.severity, inv.property, inv.judged_by,
                 ", ".join(f"`{c}`" for c in inv.violations) or "-", ", ".join(f"`{v}`" for v in inv.verdicts) or "-"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "A property is `passed` only when something was evaluated; a property that could not be",
              "evaluated is `not_judged` with the reason, never passed. A predicate with an incident is",
              "`failed`, whoever reported it. Predicates a target reports itself (a 5xx whose JSON body",
              "carries `\"x-invariant\": \"<ID>\"`) and predicates not in this table are HIGH.", ""]
    return "\n".join(lines)
