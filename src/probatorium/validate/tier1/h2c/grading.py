"""Pure grading of one h2c case from the bytes that came back (no I/O here).

Verdicts (each maps to a `h2c_<verdict>` counter):
- ``upgraded``: a 101 to a valid preamble (fine);
- ``declined``: the upgrade was ignored and the request answered over HTTP/1.1 (fine);
- ``closed_no_answer``: the server closed without a byte and is still up (fine: a refusal);
- ``reset_unread``: the client reset before reading and the target is still up (fine);
- ``bad_upgrade_accepted``: a 101 to an invalid preamble → I-H2C-UPGRADE (HIGH, RFC 7540 §3.2.1);
- ``body_mismatch``: the upgrade request's body did not reach the application intact → I-ADV-ACCEPTED;
- ``hang``: no answer before the timeout → I-H2C-HANG (MED);
- ``crashed``: the target died → I-H2C-CRASHED (HIGH);
- ``conn_error``: could not connect while the target is up (not an evaluation).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

from ..adversarial.verdict import echo_record
from ..http1 import Response, Violation, parse_response_stream
from .cases import H2cCase

VERDICTS = ("crashed", "bad_upgrade_accepted", "body_mismatch", "hang", "upgraded", "declined",
            "closed_no_answer", "reset_unread")
COUNTER = {  # verdict → the tier_1.h2c_churn counter it increments
    "crashed": "h2c_crashed", "bad_upgrade_accepted": "h2c_bad_upgrade_accepted", "body_mismatch": "h2c_body_mismatch",
    "hang": "h2c_hang", "upgraded": "h2c_upgraded", "declined": "h2c_declined",
    "closed_no_answer": "h2c_closed_no_answer", "reset_unread": "h2c_reset_unread", "conn_error": "h2c_conn_error",
}


@dataclass
class H2cOutcome:
    """What happened on the connection, as the runner saw it."""

    received: bytes = b""
    closed: bool = False  # the server closed (FIN or RST) before we did
    timed_out: bool = False
    connect_error: str | None = None
    target_alive: bool | None = None  # asked after a connection with no answer; None = not asked
    methods: tuple[str, ...] = ("GET",)  # HTTP/1.1 requests the bytes may answer, in order


@dataclass
class H2cVerdict:
    verdict: str
    reason: str
    status: int | None = None
    violations: list[Violation] = field(default_factory=list)
    body_checked: bool = False  # the body case was judged from an echo record
    responses: int = 0  # complete HTTP/1.1 responses parsed (framing-checked)


def h2_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """Split HTTP/2 frames (type, flags, stream id, payload); stops at the first incomplete frame."""
    out, pos = [], 0
    while len(data) - pos >= 9:
        length = int.from_bytes(data[pos:pos + 3], "big")
        ftype, flags = data[pos + 3], data[pos + 4]
        stream = struct.unpack("!I", data[pos + 5:pos + 9])[0] & 0x7FFFFFFF
        if len(data) - pos - 9 < length:
            break
        out.append((ftype, flags, stream, data[pos + 9:pos + 9 + length]))
        pos += 9 + length
    return out


def h2_stream1_body(after_101: bytes) -> bytes | None:
    """The DATA of stream 1 (the upgraded request's response) once END_STREAM arrived, else None."""
    body = bytearray()
    for ftype, flags, stream, payload in h2_frames(after_101):
        if ftype != 0x0 or stream != 1:
            continue
        if flags & 0x8 and payload:  # PADDED
            pad = payload[0]
            payload = payload[1:len(payload) - pad] if pad < len(payload) else b""
        body += payload
        if flags & 0x1:  # END_STREAM
            return bytes(body)
    return None


def _body_check(case: H2cCase, record: dict | None) -> tuple[bool | None, str]:
    """(intact?, why) for the body case from an echo record; None when it cannot be judged."""
    if record is None:
        return None, "no echo record in the answer: the body could not be checked"
    want_len, want_sha = len(case.body or b""), case.body_sha256
    got_len, got_sha = record.get("body_length"), record.get("body_sha256")
    if got_len == want_len and (got_sha is None or got_sha == want_sha):
        return True, f"the application received the {want_len}-byte body intact"
    return False, (f"the application received body_length={got_len} sha256={str(got_sha)[:16]}…, "
                   f"sent {want_len} bytes sha256={str(want_sha)[:16]}…")


def grade(case: H2cCase, out: H2cOutcome) -> H2cVerdict:
    """The verdict for one case; strict: silence is a hang, never a refusal."""
    if out.target_alive is False:
        how = out.connect_error or ("no answer, connection closed" if out.closed else "no answer")
        return H2cVerdict("crashed", f"the target died ({how})")
    if out.connect_error:
        return H2cVerdict("conn_error", out.connect_error)
    if case.stage == "before_read":
        return H2cVerdict("reset_unread", "reset before reading; the target is still up")
    parsed = parse_response_stream(out.received, list(out.methods), eof=out.closed)
    finals = [r for r in parsed.responses if not r.interim or r.status == 101]
    complete = [r for r in parsed.responses if r.complete]
    first: Response | None = finals[0] if finals else None
    v = H2cVerdict("declined", "", violations=list(parsed.violations), responses=len(complete))
    if first is None:
        if not out.received:
            if out.closed:
                return H2cVerdict("closed_no_answer", "the server closed without answering; it is still up",
                                  violations=v.violations)
            return H2cVerdict("hang", "no bytes back before the timeout", violations=v.violations)
        if not out.closed and not parsed.violations:
            return H2cVerdict("hang", f"only a partial answer ({len(out.received)} bytes) before the timeout",
                              violations=v.violations)
        return H2cVerdict("declined", "an unparseable answer (framing findings recorded)",
                          violations=v.violations, responses=v.responses)
    v.status = first.status
    if first.status == 101:
        if not case.valid:
            v.verdict = "bad_upgrade_accepted"
            v.reason = f"101 Switching Protocols to an invalid preamble ({case.name}); {case.clause} forbids it"
            return v
        v.verdict = "upgraded"
        v.reason = "101 to a valid preamble"
        if case.body is not None:
            head_end = out.received.find(b"\r\n\r\n", first.offset)
            data = h2_stream1_body(out.received[head_end + 4:]) if head_end >= 0 else None
            record = None
            if data is not None:
                try:
                    doc = json.loads(data)
                    record = doc if isinstance(doc, dict) and "body_length" in doc else None
                except ValueError:
                    record = None
            ok, why = _body_check(case, record)
            if ok is False:
                v.verdict, v.reason = "body_mismatch", f"after the upgrade {why}"
            v.body_checked = ok is not None
            if ok is not None:
                v.reason += f"; {why}"
        return v
    v.verdict = "declined"
    v.reason = f"upgrade ignored, answered {first.status} over HTTP/1.1"
    if case.body is not None and 200 <= first.status < 300:
        ok, why = _body_check(case, echo_record(first))
        if ok is False:
            v.verdict, v.reason = "body_mismatch", f"upgrade ignored, but {why}"
        v.body_checked = ok is not None
        if ok is not None and ok:
            v.reason += f"; {why}"
    return v
