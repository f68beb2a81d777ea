"""The invariant catalogue: every predicate the validator can report, in ONE place.

Slices and tiers only count; this catalogue says what each count means, how
severe it is, and how it is judged. Extend it, never weaken it (SPEC.md §5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["HIGH", "MED", "LOW"]


@dataclass(frozen=True)
class Invariant:
    """One predicate: a property that must hold, and how a violation is counted."""

    id: str
    severity: Severity
    property: str  # one sentence: what must hold
    judged_by: str  # how it is evaluated
    counter: str | None = None  # tier_1 counter path whose non-zero value violates it


CATALOGUE: dict[str, Invariant] = {
    inv.id: inv
    for inv in [
        Invariant("I-ADV-ACCEPTED", "HIGH",
                  "A request that a MUST-level rule of RFC 9110/9112 says must be rejected is never acted on, "
                  "no request smuggled inside another's body is executed, and MUST-close rules are kept.",
                  "adversarial slice: verdict wrong_accepted, judged from the echo route when present",
                  "adversarial.adv_wrong_accepted"),
        Invariant("I-ADV-HANG", "MED", "Every adversarial probe is answered or closed before the timeout.",
                  "adversarial slice: verdict hang_until_timeout", "adversarial.adv_hang_until_timeout"),
        Invariant("I-ADV-LENIENT", "LOW",
                  "Requests that SHOULD/MAY be rejected are rejected (informational).",
                  "adversarial slice: verdict lenient_accepted", "adversarial.adv_lenient_accepted"),
        Invariant("I-RFC-1", "HIGH",
                  "Every response is framed correctly: valid Content-Length, no Content-Length with "
                  "Transfer-Encoding, no body on HEAD/1xx/204/304, valid chunked syntax, no extra bytes.",
                  "every response any walker reads is parsed strictly (RFC 9112 §6)", "rfc.rfc1_violations"),
        Invariant("I-RFC-2", "HIGH", "No response header line carries CR, LF or NUL, or breaks the field grammar.",
                  "every response head any walker reads (RFC 9110 §5.5, RFC 9112 §5)", "rfc.rfc2_violations"),
        Invariant("I-LIVENESS", "HIGH", "The target process stays up while it is wanted up.",
                  "watchdog: process exit, or a walker finding the target gone"),
        Invariant("I-HANG", "HIGH", "The health path keeps answering: never 4 time-outs in a row.",
                  "watchdog: GET health path every 2 s with a 5 s time-out; refused connections do not count"),
        Invariant("I-H2C-CRASHED", "HIGH", "An h2c upgrade attempt never kills the target.",
                  "h2c slice", "h2c_churn.h2c_crashed"),
        Invariant("I-H2C-UPGRADE", "HIGH", "A 101 to h2c only follows exactly one valid HTTP2-Settings.",
                  "h2c slice (RFC 7540 §3.2.1)", "h2c_churn.h2c_bad_upgrade_accepted"),
        Invariant("I-H2C-HANG", "MED", "An h2c preamble is answered.", "h2c slice", "h2c_churn.h2c_hang"),
        Invariant("I-WS-ACCEPTED", "HIGH", "A WebSocket frame that violates RFC 6455 is never acted on.",
                  "ws slice", "ws_torture.ws_accepted_bad_frame"),
        Invariant("I-WS-HANG", "HIGH", "A bad WebSocket frame is followed by a close within the timeout.",
                  "ws slice", "ws_torture.ws_hang_no_close"),
        Invariant("I-WS-CLOSE", "MED", "A bad WebSocket frame is answered by a close frame with the right code.",
                  "ws slice: wrong or missing close code, or TCP dropped without a close frame",
                  "ws_torture.ws_wrong_close"),
        Invariant("I-CONN-2", "HIGH", "Server-side SSE slots are released after clients reset.",
                  "sse slice, from the debug endpoint's sse_open"),
        Invariant("I-DRV-1", "HIGH", "An acknowledged write is read back exactly.",
                  "key/value contract and refapp self-checks", "markov.drv_read_after_write_mismatch"),
        Invariant("I-MEM-1", "HIGH", "RSS does not grow without bound.", "robust slope over 1 Hz samples"),
        Invariant("I-FD-1", "HIGH", "Open file descriptors do not grow without bound.", "robust slope"),
        Invariant("I-TASK-1", "HIGH", "asyncio tasks do not grow without bound.", "robust slope of debug tasks"),
        Invariant("I-MW-SESSION", "HIGH", "Session middleware keeps sessions intact.", "refapp self-check"),
        Invariant("I-MW-RATELIMIT", "HIGH", "The rate limiter never over-admits.", "refapp self-check"),
        Invariant("I-MW-JWT", "HIGH", "Forged JWTs are rejected.", "refapp self-check"),
        Invariant("I-MW-CSRF", "HIGH", "Requests without a valid CSRF token are rejected.", "refapp self-check"),
        Invariant("I-OBS-1", "HIGH", "Histogram counters never decrease.", "refapp self-check and /metrics scrape"),
        Invariant("I-OBS-2", "HIGH", "No log line is dropped.", "refapp self-check"),
        Invariant("I-MW-XFF", "HIGH", "A reverse proxy never forwards an untrusted client's X-Forwarded-For as is.",
                  "refapp self-check (static_swagger_proxy)"),
    ]
}

# Counter path → (predicate, severity): what validate-diff compares between cells.
COUNTER_PREDICATES: dict[str, tuple[str, str]] = {
    inv.counter: (inv.id, inv.severity) for inv in CATALOGUE.values() if inv.counter
}


def severity(predicate: str) -> Severity:
    """Severity of a predicate; unknown predicates reported from inside a target are HIGH."""
    inv = CATALOGUE.get(predicate)
    return inv.severity if inv else "HIGH"

# Predicate → severity, for predicates judged without a counter (validate-diff grades with it).
PREDICATE_SEVERITIES: dict[str, str] = {inv.id: inv.severity for inv in CATALOGUE.values()}
