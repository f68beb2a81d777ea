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

Verdicts (worst first): crash, wrong_accepted, hang_until_timeout,
lenient_accepted, well_rejected, served_ok, refused_valid, awaited.
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
    "hang_until_timeout",
    "lenient_accepted",
    "well_rejected",
    "served_ok",
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


@dataclass
class Verdict:
    verdict: str
    reason: str
    violations: list[Violation] = field(default_factory=list)
    continued_after_reject: bool = False
    echo_seen: list[str] = field(default_factory=list)  # nonces the application reported


CANARY_FIELD = b"x-probatorium-injected"


def injected_fields(parsed: StreamParse) -> list[Violation]:
    """A response field named like our canary exists only if request bytes were injected into the head."""
    return [
        Violation("I-RFC-2", f"header injection: request bytes became the response field {k!r}: {v[:60]!r}", r.offset)
        for r in parsed.responses for k, v in r.headers if k.lower() == CANARY_FIELD
    ]


def echo_record(resp: Response) -> dict | None:
    """The echo route's JSON record in a response body, if it is one (SPEC.md §3 contract)."""
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


def _is_rejection(resp: Response) -> bool:
    # A 5xx is an error, not an acceptance: the request was not acted on successfully.
    return resp.status in PARSER_REJECT_STATUSES or resp.status >= 500


def judge(case: Case, rendered: Rendered, outcome: Outcome, *, echo: bool) -> Verdict:
    """Classify one adversarial exchange against the outcome the case's RFC clause requires."""
    if outcome.connect_error:
        return Verdict("conn_error", outcome.connect_error)
    parsed: StreamParse = parse_response_stream(outcome.received, list(case.methods), eof=outcome.closed)
    viol = parsed.violations + injected_fields(parsed)
    if not outcome.target_alive:
        # A body or head cut off by the target's death is the crash, not a framing bug.
        return Verdict("crash", "the target died during the case", [v for v in viol if not is_truncation(v)])

    # Final responses, and a 101 (after which the stream is another protocol).
    finals = [r for r in parsed.responses if not r.interim or r.status == 101]
    records = [(r, echo_record(r)) for r in finals]
    nonce = rendered.nonce
    seen = [n for _, rec in records if rec is not None and (n := echo_nonce(rec)) is not None]
    primary = finals[0] if finals else None
    primary_rec = records[0][1] if records else None

    def wrong(reason: str) -> Verdict:
        return Verdict("wrong_accepted", reason, viol, echo_seen=seen)

    # --- evidence about the primary request -------------------------------------------
    if echo and any(n == nonce for n in seen):
        accepted = True
    elif primary is None:
        accepted = False
    elif primary.status == 101:
        accepted = True
    else:
        rec_nonce = echo_nonce(primary_rec) if primary_rec is not None else None
        if echo and rec_nonce is not None and rec_nonce != nonce:
            accepted = False  # the first answer belongs to another request: the primary was not served
        else:
            # Judge by status: anything but a parser rejection or a 5xx means the request was routed,
            # i.e. it reached the application.
            accepted = not _is_rejection(primary)
    rejected = not accepted and (primary is not None or outcome.closed)

    if echo:
        smuggled = case.inner and f"{nonce}-s" in seen
        later = [n for n in seen if n in (f"{nonce}-s", f"{nonce}-u")]
        if len(finals) > 1 and not later:  # a second response without an echo record still ran something
            later = ["?"] * (len(finals) - 1)
    else:
        # Without echo records the count of responses tells how many requests ran.
        smuggled = case.inner and len(finals) > 1
        later = ["?"] * max(0, len(finals) - 1)

    # --- MUST-level violations, whatever the expectation ------------------------------
    if smuggled:
        return wrong("executed a request smuggled inside the body of another request")
    if case.no_interim and any(r.status == 100 for r in parsed.responses):
        return wrong("sent 100 Continue to an HTTP/1.0 request (the expectation MUST be ignored)")
    if case.no_upgrade and any(r.status == 101 for r in parsed.responses):
        return wrong("switched protocols on an invalid upgrade request")
    if case.close and later:
        return wrong("processed a request after one that requires closing the connection")
    if case.close and (accepted or (rejected and not case.keep_open_ok)) and primary is not None \
            and not outcome.closed:
        return wrong("kept the connection open where it MUST be closed after the response")

    if accepted and echo and primary_rec is not None:
        problem = _served_problem(case, rendered, primary_rec)
        if problem:
            return wrong(problem)

    # --- the case's own expectation ----------------------------------------------------
    if primary is None and not outcome.closed:
        if case.wait_ok:
            return Verdict("awaited", "the server kept waiting for the announced body", viol, echo_seen=seen)
        return Verdict("hang_until_timeout", "no response and no close before the timeout", viol, echo_seen=seen)

    continued = rejected and bool(later)
    if case.expect == "reject":
        if accepted:
            status = primary.status if primary is not None else "-"
            if case.level == "MUST":
                return wrong(f"accepted (status {status}) a request that MUST be rejected")
            return Verdict("lenient_accepted", f"accepted (status {status}); the RFC only says {case.level}",
                           viol, echo_seen=seen)
        return Verdict("well_rejected", _rejection_text(primary), viol, continued, seen)
    if accepted:
        return Verdict("served_ok", "served as the RFC requires", viol, echo_seen=seen)
    if case.expect == "either":
        return Verdict("well_rejected", _rejection_text(primary), viol, continued, seen)
    return Verdict("refused_valid", f"refused a valid request: {_rejection_text(primary)}", viol, continued, seen)


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
