"""Unit tests for the h2c cases and their pure grading: hand-written response bytes in, verdict out."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from probatorium.validate.invariants import predicate_for
from probatorium.validate.tier1.h2c.cases import (
    BODY,
    CASES,
    NOT_BASE64URL,
    NOT_MULTIPLE_OF_6,
    VALID_SETTINGS,
    b64url,
    settings_payload,
)
from probatorium.validate.tier1.h2c.grading import (
    H2cOutcome,
    grade,
    h2_frames,
    h2_stream1_body,
)

BY_NAME = {c.name: c for c in CASES}
INVALID = [c for c in CASES if not c.valid]
VALID = [c for c in CASES if c.valid and c.stage != "before_read"]
UPGRADE_101 = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"


def response(status: int, body: bytes = b"", *fields: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X", *fields, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def echo(body: bytes, method: str = "POST") -> bytes:
    import hashlib

    rec = {"method": method, "target": "/echo?h2c=n", "http_version": "1.1", "headers": [],
           "body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
    return response(200, json.dumps(rec).encode(), "Content-Type: application/json")


def frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack("!I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack("!I", stream) + payload


def test_settings_values_are_what_the_cases_claim() -> None:
    assert len(settings_payload()) % 6 == 0
    raw = base64.urlsafe_b64decode(VALID_SETTINGS + "=" * (-len(VALID_SETTINGS) % 4))
    assert raw == settings_payload() and "=" not in VALID_SETTINGS
    assert any(ch in NOT_BASE64URL for ch in "+/!*")
    padded = NOT_MULTIPLE_OF_6 + "=" * (-len(NOT_MULTIPLE_OF_6) % 4)
    assert len(base64.urlsafe_b64decode(padded)) % 6 != 0
    assert b64url(b"\xfb\xff") == "-_8"


def test_catalogue_covers_the_brief() -> None:
    stages = {c.stage for c in CASES if c.valid}
    assert {"before_read", "after_101", "partial_preface"} <= stages
    assert len(INVALID) == 4 and any(c.body is not None and c.valid for c in CASES)
    for c in CASES:
        raw = c.render(host="h:1", path="/echo", nonce="n")
        assert raw.startswith(f"{c.method} /echo?h2c=n HTTP/1.1\r\nHost: h:1\r\n".encode())
        head, _, body = raw.partition(b"\r\n\r\n")
        assert body == (c.body or b"")
        assert head.count(b"Upgrade: h2c") == 1
    dup = BY_NAME["HTTP2-Settings duplicated"].render(host="h", path="/e", nonce="n")
    assert dup.count(b"HTTP2-Settings: ") == 2
    miss = BY_NAME["HTTP2-Settings missing"].render(host="h", path="/e", nonce="n")
    assert b"HTTP2-Settings: " not in miss
    notconn = BY_NAME["HTTP2-Settings not a Connection option"].render(host="h", path="/e", nonce="n")
    assert b"Connection: Upgrade\r\n" in notconn


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.name)
def test_101_to_an_invalid_preamble_is_I_H2C_UPGRADE(case) -> None:
    v = grade(case, H2cOutcome(UPGRADE_101 + frame(4, 0, 0, b"")))
    assert v.verdict == "bad_upgrade_accepted" and predicate_for("h2c", v.verdict) == "I-H2C-UPGRADE"
    assert "3.2.1" in v.reason


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.name)
def test_an_invalid_preamble_answered_over_http1_is_fine(case) -> None:
    for status in (200, 400, 404):
        v = grade(case, H2cOutcome(response(status, b"x")))
        assert v.verdict == "declined" and v.status == status and not v.violations


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid_preamble_upgraded_or_declined_is_fine(case) -> None:
    assert grade(case, H2cOutcome(UPGRADE_101)).verdict == "upgraded"
    body = echo(case.body or b"", case.method)
    assert grade(case, H2cOutcome(body, methods=(case.method,))).verdict == "declined"


def test_silence_is_a_hang_and_a_silent_close_is_not() -> None:
    c = BY_NAME["valid upgrade, read answer"]
    assert grade(c, H2cOutcome(b"", timed_out=True)).verdict == "hang"
    assert predicate_for("h2c", "hang") == "I-H2C-HANG"
    assert grade(c, H2cOutcome(b"", timed_out=True, target_alive=True)).verdict == "hang"
    assert grade(c, H2cOutcome(b"", closed=True, target_alive=True)).verdict == "closed_no_answer"
    assert grade(c, H2cOutcome(b"HTTP/1.1 200 OK\r\nContent-Le", timed_out=True)).verdict == "hang"


def test_a_dead_target_is_crashed_whatever_came_back() -> None:
    for c in CASES:
        v = grade(c, H2cOutcome(b"", closed=True, target_alive=False))
        assert v.verdict == "crashed" and predicate_for("h2c", "crashed") == "I-H2C-CRASHED"
    c = BY_NAME["valid upgrade, reset before reading"]
    assert grade(c, H2cOutcome(b"", timed_out=True, target_alive=True)).verdict == "reset_unread"
    assert grade(c, H2cOutcome(b"", connect_error="refused", target_alive=False)).verdict == "crashed"
    assert grade(c, H2cOutcome(b"", connect_error="refused", target_alive=True)).verdict == "conn_error"


def test_body_case_declined_is_judged_from_the_echo_record() -> None:
    c = BY_NAME["valid upgrade with a request body"]
    ok = grade(c, H2cOutcome(echo(BODY), methods=("POST", "PRI")))
    assert ok.verdict == "declined" and ok.body_checked
    lost = grade(c, H2cOutcome(echo(b""), methods=("POST", "PRI")))
    assert lost.verdict == "body_mismatch" and predicate_for("h2c", "body_mismatch") == "I-ADV-ACCEPTED"
    assert "body_length=0" in lost.reason
    cut = grade(c, H2cOutcome(echo(BODY[:-1]), methods=("POST",)))
    assert cut.verdict == "body_mismatch"
    plain = grade(c, H2cOutcome(response(200, b"hello"), methods=("POST",)))
    assert plain.verdict == "declined" and not plain.body_checked  # no echo route: not judged
    rejected = grade(c, H2cOutcome(response(413, b""), methods=("POST",)))
    assert rejected.verdict == "declined" and not rejected.body_checked


def test_body_case_upgraded_is_judged_from_the_http2_answer() -> None:
    import hashlib

    c = BY_NAME["valid upgrade with a request body"]

    def h2_echo(body: bytes, pad: int = 0) -> bytes:
        rec = json.dumps({"method": "POST", "body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest()})
        data = rec.encode()
        half = len(data) // 2
        second = bytes([pad]) + data[half:] + b"\0" * pad if pad else data[half:]
        return (UPGRADE_101 + frame(4, 0, 0, b"") + frame(1, 4, 1, b"\x88") + frame(0, 0, 1, data[:half])
                + frame(0, 0x1 | (0x8 if pad else 0), 1, second))

    ok = grade(c, H2cOutcome(h2_echo(BODY)))
    assert ok.verdict == "upgraded" and ok.body_checked
    assert grade(c, H2cOutcome(h2_echo(BODY, pad=3))).body_checked
    bad = grade(c, H2cOutcome(h2_echo(b"")))
    assert bad.verdict == "body_mismatch"
    unfinished = grade(c, H2cOutcome(UPGRADE_101 + frame(4, 0, 0, b"")))
    assert unfinished.verdict == "upgraded" and not unfinished.body_checked


def test_h2_frame_split_stops_at_an_incomplete_frame() -> None:
    data = frame(4, 0, 0, b"") + frame(0, 1, 1, b"abc") + frame(0, 0, 3, b"xyz")[:-1]
    assert [f[0] for f in h2_frames(data)] == [4, 0]
    assert h2_stream1_body(data) == b"abc"
    assert h2_stream1_body(frame(0, 0, 1, b"abc")) is None  # no END_STREAM yet


def test_framing_violations_are_returned_with_the_verdict() -> None:
    c = BY_NAME["HTTP2-Settings missing"]
    v = grade(c, H2cOutcome(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc", closed=True))
    assert v.verdict == "declined" and any(x.predicate == "I-RFC-1" for x in v.violations)
