"""Verdict rules for adversarial cases: pure functions, bytes in → classification out.

The judge sees what the server sent back (and how the connection ended) and,
when the target offers the echo route, what its APPLICATION received. A
status code alone is weak evidence, so the rules prefer the echo record:

* accepted  — the application received the primary request (its nonce shows up
  in an echo record, whatever the status), or, without an echo record, the
  response is neither a status a parser rejects with nor a 5xx (an error is
  not acting on the bytes).
* rejected  — a parser-level rejection status or a 5xx, or the server closed
  without answering.
* smuggled  — a request that lies inside the primary's body (by RFC framing)
  was executed.
* continued — a request after the primary was executed although the RFC says
  the server MUST close after responding (Connection: close, HTTP/1.0,
  invalid framing).

Verdicts (worst first): crash, wrong_accepted, misreported, hang_until_timeout,
server_error, misrouted, lenient_accepted, well_rejected, served_ok, not_routed,
refused_valid, awaited.

Each verdict says which evidence it used (`evidence`): "echo" (an echo record),
"counter" (the debug endpoint's `requests` counter read around the exchange:
`Outcome.app_requests`) or "status" (status codes and the connection only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from ..http1 import Response, StreamParse, Violation, is_truncation, parse_response_stream
from .catalogue import Case, Rendered

# Statuses with which a server's HTTP parser (not its application) refuses a message.
PARSER_REJECT_STATUSES = frozenset({400, 408, 411, 413, 414, 417, 421, 431, 501, 505})

VERDICTS = (
    "crash",
    "wrong_accepted",
    "misreported",  # wt-smuggle (issue 12 item 2)
    "hang_until_timeout",
    "server_error",  # wt-smuggle (issue 12 item 8)
    "misrouted",  # wt-smuggle (issue 12 item 3)
    "lenient_accepted",
    "well_rejected",
    "served_ok",
    "not_routed",  # wt-smuggle (issue 12 item 3): informational
    "refused_valid",
    "awaited",
    "conn_error",
)


@dataclass
class Outcome:
    """What a connection produced, as the judge needs it (built from a rawclient.Exchange)."""

    received: bytes
    closed: bool  # the server closed (FIN or RST)
    timed_out: bool  # reading stopped because nothing more came
    connect_error: str | None = None
    target_alive: bool = True  # the target still ran / accepted connections afterwards
    # Requests the APPLICATION handled during the exchange, from the debug endpoint's `requests`
    # counter read before and after it (None: not measured, or other traffic made it unattributable).
    app_requests: int | None = None


@dataclass
class Verdict:
    verdict: str
    reason: str
    violations: list[Violation] = field(default_factory=list)
    continued_after_reject: bool = False
    echo_seen: list[str] = field(default_factory=list)  # nonces the application reported
    evidence: str = "status"  # what the verdict was judged from: "echo", "counter" or "status"


CANARY_FIELD = b"x-probatorium-injected"


def injected_fields(parsed: StreamParse) -> list[Violation]:
    """A response field named like our canary exists only if request bytes were injected into the head."""
    return [
        Violation("I-RFC-2", f"header injection: request bytes became the response field {k!r}: {v[:60]!r}", r.offset)
        for r in parsed.responses for k, v in r.headers if k.lower() == CANARY_FIELD
    ]


def echo_record(resp: Response) -> dict | None:
    """The echo route's JSON record in a response body, if it is one (docs/contracts.md contract)."""
    body = resp.body.strip()
    if not body.startswith(b"{"):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if isinstance(doc, dict) and {"method", "target", "headers", "body_length"} <= doc.keys():
        return doc
    return None


def echo_nonce(record: dict) -> str | None:
    """The `adv` nonce in the target an echo record reports."""
    target = str(record.get("target", ""))
    if target.startswith(("http://", "https://")):
        target = urlsplit(target).path + ("?" + urlsplit(target).query if urlsplit(target).query else "")
    query = target.partition("?")[2].partition("#")[0]
    values = parse_qs(query, keep_blank_values=True).get("adv")
    return values[0].split("&")[0].split(" ")[0] if values else None


# ---- wt-smuggle (issue 12) ------------------------------------------------------------------
# 5xx statuses that name the client's request as the reason, so they do not misreport a client
# error as the server's: 501 (RFC 9110 §15.6.2: a method or coding it does not implement) and
# 505 (§15.6.6: a major version it refuses). Any other 5xx to a malformed request is
# `server_error` (RFC 9110 §15.6: "the server is aware that it has erred").
CLIENT_NAMING_5XX = frozenset({501, 505})


def app_authority(record: dict) -> str | None:
    """The authority the application would use for the request an echo record describes: an
    absolute-form target's own (RFC 9112 §3.2.2), else the Host field's value."""
    target = str(record.get("target", ""))
    if target.lower().startswith(("http://", "https://")):
        return urlsplit(target).netloc
    for item in record.get("headers") or []:
        if isinstance(item, (list, tuple)) and len(item) == 2 and str(item[0]).lower() == "host":
            return str(item[1])
    return None


def speaks_h2(received: bytes) -> bool:
    """The stream starts with an HTTP/2 SETTINGS frame on stream 0 (RFC 9113 §3.4, §6.5)."""
    return len(received) >= 9 and received[3] == 0x04 and received[5:9] == b"\x00\x00\x00\x00" \
        and int.from_bytes(received[:3], "big") % 6 == 0


def _is_rejection(resp: Response) -> bool:
    # A 5xx is an error, not an acceptance: the request was not acted on successfully.
    return resp.status in PARSER_REJECT_STATUSES or resp.status >= 500


@dataclass
class _Evidence:
    """What the response stream shows about the primary request and any request after it."""

    finals: list[Response]  # final responses, and a 101 (after which the stream is another protocol)
    primary: Response | None  # the first of them: the answer to the primary request
    primary_rec: dict | None  # its echo record
    seen: list[str]  # nonces the application reported
    accepted: bool  # the primary request reached the application
    rejected: bool  # refused by status, or the server closed without answering
    smuggled: bool  # a request inside the primary's body ran
    later: list[str]  # requests after the primary that ran ("?": a response without an echo record)
    app_ran: bool | None = None  # the application's handler ran for the primary (None: unknown)
    source: str = "status"  # the evidence used: "echo", "counter" or "status"


def _primary_accepted(primary: Response | None, primary_rec: dict | None, seen: list[str], nonce: str,
                      echo: bool) -> bool:
    """Whether the primary request reached the application: its nonce in an echo record, else its status."""
    if echo and any(n == nonce for n in seen):
        return True
    if primary is None:
        return False
    if primary.status == 101:
        return True
    rec_nonce = echo_nonce(primary_rec) if primary_rec is not None else None
    if echo and rec_nonce is not None and rec_nonce != nonce:
        return False  # the first answer belongs to another request: the primary was not served
    # Judge by status: anything but a parser rejection or a 5xx means the request was routed,
    # i.e. it reached the application.
    return not _is_rejection(primary)


def _evidence(case: Case, nonce: str, parsed: StreamParse, outcome: Outcome, echo: bool) -> _Evidence:
    finals = [r for r in parsed.responses if not r.interim or r.status == 101]
    records = [echo_record(r) for r in finals]
    seen = [n for rec in records if rec is not None and (n := echo_nonce(rec)) is not None]
    primary = finals[0] if finals else None
    primary_rec = records[0] if records else None
    accepted = _primary_accepted(primary, primary_rec, seen, nonce, echo)
    # The counter speaks for the primary only when the bytes hold one request by RFC framing.
    app = outcome.app_requests if len(case.methods) == 1 else None
    app_ran: bool | None = None
    source = "status"
    if echo and (nonce in seen or primary_rec is not None):
        app_ran, source = nonce in seen, "echo"
    elif app is not None:
        app_ran, source = app >= 1, "counter"
        accepted = app_ran or (primary is not None and primary.status == 101)
    rejected = not accepted and (primary is not None or outcome.closed)
    counter_smuggled = bool(case.inner) and outcome.app_requests is not None and outcome.app_requests >= 2
    if echo:
        smuggled = bool(case.inner) and (f"{nonce}-s" in seen or counter_smuggled)
        later = [n for n in seen if n in (f"{nonce}-s", f"{nonce}-u")]
        if len(finals) > 1 and not later:  # a second response without an echo record still ran something
            later = ["?"] * (len(finals) - 1)
    else:
        # Without echo records the count of responses tells how many requests ran.
        smuggled = bool(case.inner) and (len(finals) > 1 or counter_smuggled)
        later = ["?"] * max(0, len(finals) - 1)
    if counter_smuggled and not (echo and f"{nonce}-s" in seen):
        source = "counter"
    return _Evidence(finals, primary, primary_rec, seen, accepted, rejected, smuggled, later, app_ran, source)


def _must_violation(case: Case, rendered: Rendered, ev: _Evidence, parsed: StreamParse, outcome: Outcome,
                    echo: bool) -> str | None:
    """The MUST-level violation the exchange shows whatever the case expects (None: none)."""
    if ev.smuggled:
        return "executed a request smuggled inside the body of another request"
    if case.no_interim and any(r.status == 100 for r in parsed.responses):
        return "sent 100 Continue to an HTTP/1.0 request (the expectation MUST be ignored)"
    if case.no_upgrade and any(r.status == 101 for r in parsed.responses):
        return "switched protocols on an invalid upgrade request"
    if case.close and ev.later:
        return "processed a request after one that requires closing the connection"
    if case.close and (ev.accepted or (ev.rejected and not case.keep_open_ok)) and ev.primary is not None \
            and not outcome.closed:
        return "kept the connection open where it MUST be closed after the response"
    if ev.accepted and echo and ev.primary_rec is not None:
        return _served_problem(case, rendered, ev.primary_rec)
    return None


def _misreport(ev: _Evidence, echo: bool) -> str | None:
    """The application ran the primary but the client was told it failed (issue 12 item 2)."""
    primary = ev.primary
    if not ev.app_ran or primary is None or primary.status < 400:
        return None
    if ev.primary_rec is not None:
        return None  # the application's own answer (its echo record), whatever status it chose
    # The error did not come from the echo handler: with the counter, only a parser-rejection
    # status or a 5xx is the server's word (the application itself may say 404/405).
    if _is_rejection(primary):
        return (f"the application handled the request ({ev.source} evidence) but the client got "
                f"{primary.status}: a retried non-idempotent request would run twice")
    return None


def _server_error(primary: Response | None) -> bool:
    return primary is not None and primary.status >= 500 and primary.status not in CLIENT_NAMING_5XX


def _routing(case: Case, rendered: Rendered, ev: _Evidence, echo: bool) -> tuple[str, str] | None:
    """(verdict, reason) when an accepted request aimed at the echo route did not arrive there as
    sent: `misrouted` for an authority case (RFC 9112 §3.2.2), `not_routed` otherwise."""
    if not echo or ev.primary is None or ev.primary.status == 101 or "$T" not in case.template \
            or case.methods[:1] == ("HEAD",):
        return None  # no echo route, a protocol switch, not aimed at the echo route, or a bodiless HEAD
    rec = ev.primary_rec
    if rec is None or echo_nonce(rec) != rendered.nonce:
        why = f"answered {ev.primary.status} without the echo record: not routed to the application's route"
        return ("misrouted" if case.authority else "not_routed"), why
    if case.authority:
        got = app_authority(rec)
        if got is None or got.lower() != rendered.host.lower():
            return "misrouted", (f"the application saw authority {got!r} where the absolute-form target "
                                 f"says {rendered.host!r} (Host MUST be ignored)")
    return None


def _expected(case: Case, ev: _Evidence, outcome: Outcome, viol: list[Violation], rendered: Rendered | None = None,
              echo: bool = False) -> Verdict:
    """The verdict against the case's own expectation (reject / serve / either), once no MUST was broken."""
    v = _expected_inner(case, ev, outcome, viol, rendered, echo)
    v.evidence = ev.source
    return v


def _expected_inner(case: Case, ev: _Evidence, outcome: Outcome, viol: list[Violation], rendered: Rendered | None,
                    echo: bool) -> Verdict:
    primary, seen = ev.primary, ev.seen
    if primary is None and not outcome.closed:
        if case.wait_ok:
            return Verdict("awaited", "the server kept waiting for the announced body", viol, echo_seen=seen)
        return Verdict("hang_until_timeout", "no response and no close before the timeout", viol, echo_seen=seen)
    continued = ev.rejected and bool(ev.later)
    misreport = _misreport(ev, echo)
    if case.expect == "reject":
        if ev.accepted:
            status = primary.status if primary is not None else "-"
            if misreport and ev.source == "counter":
                # The handler was started (a streaming engine runs it before the body is validated)
                # and the client was told it failed: what the client sees is the misreport; the
                # application's own answer (an echo record) would be the acceptance.
                return Verdict("misreported", misreport, viol, echo_seen=seen)
            if case.level == "MUST":
                return Verdict("wrong_accepted", f"accepted (status {status}) a request that MUST be rejected",
                               viol, echo_seen=seen)
            if misreport:
                return Verdict("misreported", misreport, viol, echo_seen=seen)
            return Verdict("lenient_accepted", f"accepted (status {status}); the RFC only says {case.level}",
                           viol, echo_seen=seen)
        if _server_error(primary):
            return Verdict("server_error", f"answered a client's error with {primary.status} (RFC 9110 §15.6)",
                           viol, continued, seen)
        return Verdict("well_rejected", _rejection_text(primary), viol, continued, seen)
    if ev.accepted:
        if misreport:
            return Verdict("misreported", misreport, viol, echo_seen=seen)
        routing = _routing(case, rendered, ev, echo) if rendered is not None else None
        if routing is not None:
            return Verdict(routing[0], routing[1], viol, echo_seen=seen)
        return Verdict("served_ok", "served as the RFC requires", viol, echo_seen=seen)
    if case.expect == "either":
        if _server_error(primary):
            return Verdict("server_error", f"answered a request it may reject with {primary.status}, not a 4xx "
                           "(RFC 9110 §15.6)", viol, continued, seen)
        return Verdict("well_rejected", _rejection_text(primary), viol, continued, seen)
    return Verdict("refused_valid", f"refused a valid request: {_rejection_text(primary)}", viol, continued, seen)


def judge(case: Case, rendered: Rendered, outcome: Outcome, *, echo: bool) -> Verdict:
    """Classify one adversarial exchange against the outcome the case's RFC clause requires."""
    if outcome.connect_error:
        return Verdict("conn_error", outcome.connect_error)
    parsed: StreamParse = parse_response_stream(outcome.received, list(case.methods), eof=outcome.closed)
    viol = parsed.violations + injected_fields(parsed)
    if not outcome.target_alive:
        # A body or head cut off by the target's death is the crash, not a framing bug.
        return Verdict("crash", "the target died during the case", [v for v in viol if not is_truncation(v)])
    if case.h2_preface and speaks_h2(outcome.received):
        return Verdict("well_rejected", "the server answered with HTTP/2 frames: it speaks HTTP/2 with prior "
                       "knowledge here (RFC 9113 §3.3), the preface reached no HTTP/1 application")
    ev = _evidence(case, rendered.nonce, parsed, outcome, echo)
    problem = _must_violation(case, rendered, ev, parsed, outcome, echo)
    if problem:
        return Verdict("wrong_accepted", problem, viol, echo_seen=ev.seen, evidence=ev.source)
    return _expected(case, ev, outcome, viol, rendered, echo)


def _rejection_text(primary: Response | None) -> str:
    return "closed without a response" if primary is None else f"rejected with {primary.status}"


def _served_problem(case: Case, rendered: Rendered, record: dict) -> str | None:
    """What is wrong with what the application received, if anything."""
    if rendered.body is not None and record.get("method") != "HEAD":
        want_len = len(rendered.body)
        got_len = record.get("body_length")
        got_sha = record.get("body_sha256")
        if got_len != want_len or (got_sha is not None and got_sha != rendered.body_sha256):
            return f"the application received a {got_len}-byte body where the RFC framing gives {want_len}: misframed"
    headers = record.get("headers") or []
    for item in headers:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            continue
        name, value = str(item[0]), str(item[1])
        if case.sanitize and any(c in value for c in "\r\n\x00"):
            return f"the application received CR/LF/NUL in the value of {name!r}"
        if name.lower() in case.forbid_headers:
            return f"the application received field {name!r} from a line it had to reject or ignore"
    return None


def outcome_violations(received: bytes, methods: list[str], closed: bool) -> list[Violation]:
    """Framing (I-RFC-1) and header (I-RFC-2) violations in any response stream."""
    return parse_response_stream(received, methods, eof=closed).violations
