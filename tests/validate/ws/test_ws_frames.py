"""Pure tests of RFC 6455 frame building/parsing, the catalogue, and every grading rule."""

from __future__ import annotations

import random
import struct

import pytest

from probatorium.validate.tier1.ws import frames as F
from probatorium.validate.tier1.ws.frames import (
    CASES, CASES_BY_NAME, HANDSHAKE_CASES, VALID_HANDSHAKE, accept_value, encode_frame, grade, grade_handshake,
    parse_frames,
)


def srv(opcode: int, payload: bytes = b"", **kw) -> bytes:
    """A frame as a server sends it (unmasked)."""
    return encode_frame(opcode, payload, mask=False, **kw)


def close(code: int | None, reason: bytes = b"") -> bytes:
    return srv(F.OP_CLOSE, F.close_payload(code, reason))


BAD = CASES_BY_NAME["invalid UTF-8 text (0xFF)"]
UNMASKED = CASES_BY_NAME["unmasked client frame"]
BASELINE = CASES_BY_NAME["baseline echo round trip"]
FLOOD = CASES_BY_NAME["ping flood"]
OVERSIZE = CASES_BY_NAME["oversize message"]


# ---- handshake ---------------------------------------------------------------------------

def test_accept_value_rfc_example() -> None:
    # RFC 6455 §1.3 worked example.
    assert accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_render_valid_handshake() -> None:
    key = F.new_key(random.Random(1))
    raw = F.render_handshake(VALID_HANDSHAKE, "127.0.0.1:80", "/ws", key).decode()
    assert raw.startswith("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:80\r\n") and raw.endswith("\r\n\r\n")
    for line in ("Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"):
        assert f"\r\n{line}\r\n" in raw
    assert len(F.base64.b64decode(key)) == 16


@pytest.mark.parametrize("case", HANDSHAKE_CASES, ids=lambda c: c.name)
def test_invalid_handshakes_differ_from_valid(case: F.HandshakeCase) -> None:
    key = F.new_key(random.Random(2))
    valid = F.render_handshake(VALID_HANDSHAKE, "h", "/ws", key)
    raw = F.render_handshake(case, "h", "/ws", key)
    assert raw != valid and not case.valid and case.clause.startswith("RFC 6455")
    if case.key == "short":
        line = [x for x in raw.split(b"\r\n") if x.startswith(b"Sec-WebSocket-Key")][0]
        assert len(F.base64.b64decode(line.split(b": ")[1])) == 8


def test_check_accept() -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    assert F.check_accept(101, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "websocket", key) is None
    assert "!=" in F.check_accept(101, "AAAA", "websocket", key)
    assert "without" in F.check_accept(101, None, "websocket", key)
    assert "Upgrade" in F.check_accept(101, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None, key)


def test_grade_handshake_rules() -> None:
    bad = HANDSHAKE_CASES[0]
    assert grade_handshake(bad, 101, False, False).verdict == "ws_accepted_bad_frame"
    assert grade_handshake(bad, 400, True, False).verdict == "ws_handshake_rejected"
    assert grade_handshake(bad, 426, False, False).verdict == "ws_handshake_rejected"
    assert grade_handshake(bad, None, True, False).verdict == "ws_handshake_rejected"
    assert grade_handshake(bad, None, False, True).verdict == "ws_hang_no_close"
    assert grade_handshake(VALID_HANDSHAKE, 101, False, False).verdict == "ws_closed_correctly"
    assert grade_handshake(VALID_HANDSHAKE, 101, False, False, "bad accept").verdict == "ws_bad_accept"
    assert grade_handshake(VALID_HANDSHAKE, 404, True, False).verdict == "ws_endpoint_absent"
    assert grade_handshake(VALID_HANDSHAKE, None, False, True).verdict == "ws_endpoint_absent"


def test_split_head() -> None:
    st, h, rest, done = F.split_head(b"HTTP/1.1 101 X\r\nUpgrade: websocket\r\n\r\n\x88\x02\x03\xe8")
    assert (st, h["upgrade"], rest, done) == (101, "websocket", b"\x88\x02\x03\xe8", True)
    assert F.split_head(b"HTTP/1.1 101 X\r\n")[3] is False


# ---- frames ------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 5, 125, 126, 65535, 65536, 70000])
def test_roundtrip_lengths(n: int) -> None:
    payload = bytes(i % 251 for i in range(n))
    raw = encode_frame(F.OP_BINARY, payload, mask_key=b"\x11\x22\x33\x44")
    hl = 2 + (0 if n < 126 else 2 if n < 65536 else 8) + 4
    assert len(raw) == hl + n
    p = parse_frames(raw)
    assert len(p.frames) == 1 and p.consumed == len(raw)
    f = p.frames[0]
    assert (f.fin, f.rsv, f.opcode, f.masked, f.payload, f.length, f.complete) == \
        (True, 0, F.OP_BINARY, True, payload, n, True)


def test_mask_rfc_example() -> None:
    # RFC 6455 §5.7: a masked "Hello".
    assert encode_frame(F.OP_TEXT, b"Hello", mask_key=bytes.fromhex("37fa213d")) == \
        bytes.fromhex("818537fa213d7f9f4d5158")
    assert srv(F.OP_TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")


def test_header_bits_and_forms() -> None:
    f = encode_frame(F.OP_TEXT, b"x", fin=False, rsv=4, mask=False)
    assert f[0] == 0x41 and f[1] == 1
    top = encode_frame(F.OP_BINARY, b"abc", mask=False, length=(1 << 63) | 3, length_form=64)
    assert top[1] == 127 and struct.unpack("!Q", top[2:10])[0] >> 63 == 1
    assert encode_frame(F.OP_PING, b"x" * 126, mask=False)[1] == 126


def test_parse_partial_and_several() -> None:
    data = srv(F.OP_TEXT, b"a") + srv(F.OP_PONG, b"pp") + close(1000)
    p = parse_frames(data)
    assert [f.opcode for f in p.frames] == [F.OP_TEXT, F.OP_PONG, F.OP_CLOSE] and p.frames[2].close_code == 1000
    big = srv(F.OP_BINARY, b"z" * 100000)[:5000]
    p = parse_frames(big)
    assert p.frames[0].length == 100000 and not p.frames[0].complete and p.consumed == 0
    assert parse_frames(b"\x81").frames == [] and parse_frames(b"\x81").rest == b"\x81"
    assert parse_frames(encode_frame(F.OP_TEXT, b"m")).error  # a masked server frame is an error


# ---- the catalogue ---------------------------------------------------------------------

def test_catalogue_shape() -> None:
    names = [c.name for c in CASES] + [h.name for h in HANDSHAKE_CASES]
    assert len(names) == len(set(names))
    for c in CASES:
        assert c.clause.startswith("RFC 6455") and c.expected_close
        assert set(c.expected_close) <= {1000, 1001, 1002, 1007, 1008, 1009}
        if c.bad:
            assert set(c.expected_close) <= {1002, 1007, 1009}
    assert OVERSIZE.expected_close == (1009,)
    assert CASES_BY_NAME["invalid UTF-8 in close reason"].expected_close == (1007, 1002)
    assert len([c for c in CASES if c.name.startswith("reserved opcode")]) == 10
    assert len([c for c in CASES if c.name.startswith("close with invalid code")]) >= 6


@pytest.mark.parametrize("case", [c for c in CASES if c is not OVERSIZE and not c.after_close], ids=lambda c: c.name)
def test_builders_are_deterministic_and_frame_the_violation(case: F.WsCase) -> None:
    a, b = case.build(random.Random(5)), case.build(random.Random(5))
    assert a == b and a
    frames = [f for seg in a if seg is not None for f in parse_frames(seg).frames]
    assert frames
    first = frames[0]
    name = case.name
    if name == "unmasked client frame":
        assert not first.masked
    else:
        assert all(f.masked for f in frames)
    if name.startswith("RSV"):
        assert first.rsv == 1 << (3 - int(name[3]))
    if name.startswith("reserved opcode"):
        assert first.opcode == int(name.split("0x")[1], 16)
    if name.startswith("fragmented control"):
        assert first.opcode == F.OP_PING and not first.fin
    if name.startswith("control payload"):
        assert first.length == 126
    if name == "continuation without start":
        assert first.opcode == F.OP_CONT
    if name == "data frame inside fragmented message":
        assert [(f.opcode, f.fin) for f in frames] == [(F.OP_TEXT, False), (F.OP_TEXT, True)]
    if name.startswith("invalid UTF-8 text"):
        assert not F.valid_utf8(first.payload)
    if name.startswith("close with invalid code"):
        assert first.close_code == int(name.rsplit(" ", 1)[1])
    if name == "close with 1-byte payload":
        assert len(first.payload) == 1
    if name.startswith("64-bit"):
        assert first.length >> 63 == 1
    if name == "ping flood":
        assert sum(f.opcode == F.OP_PING for f in frames) == F.PING_FLOOD and frames[-1].opcode == F.OP_CLOSE


def test_oversize_builder() -> None:
    segs = OVERSIZE.build(random.Random(3))
    head = parse_frames(segs[0] + segs[1][:10]).frames[0]
    assert head.length == F.OVERSIZE_BYTES > 16 << 20 and head.masked and head.opcode == F.OP_BINARY
    assert sum(map(len, segs)) == 14 + F.OVERSIZE_BYTES
    # the masked zeros unmask to zeros
    assert set(parse_frames(segs[0] + segs[1][:1000]).frames[0].payload) == {0}


# ---- grading -----------------------------------------------------------------------------

def test_grade_closed_correctly() -> None:
    g = grade(BAD, close(1007), closed=True, timed_out=False)
    assert (g.verdict, g.close_code) == ("ws_closed_correctly", 1007)
    assert grade(UNMASKED, close(1002, b"masked"), False, False).verdict == "ws_closed_correctly"


def test_grade_wrong_code_and_no_code() -> None:
    assert grade(BAD, close(1002), True, False).verdict == "ws_wrong_close"
    assert grade(BAD, close(1000), True, False).verdict == "ws_wrong_close"
    g = grade(BAD, close(None), True, False)
    assert g.verdict == "ws_wrong_close" and "without a status code" in g.reason
    assert grade(OVERSIZE, close(1002), True, False).verdict == "ws_wrong_close"
    assert grade(OVERSIZE, close(1008), True, False).verdict == "ws_wrong_close"
    assert grade(OVERSIZE, close(1009), True, False).verdict == "ws_closed_correctly"


def test_grade_either_code_for_close_reason() -> None:
    c = CASES_BY_NAME["invalid UTF-8 in close reason"]
    assert grade(c, close(1007), True, False).verdict == "ws_closed_correctly"
    assert grade(c, close(1002), True, False).verdict == "ws_closed_correctly"
    assert grade(c, close(1000, b"bye \xff\xfe"), True, False).verdict == "ws_wrong_close"  # echoed as if valid


def test_grade_unclean_and_hang() -> None:
    assert grade(BAD, b"", closed=True, timed_out=False).verdict == "ws_unclean_close"
    g = grade(BAD, b"", closed=False, timed_out=True)
    assert g.verdict == "ws_hang_no_close"
    # a timeout is never "closed correctly", whatever the case expects
    for c in CASES:
        assert grade(c, b"", closed=False, timed_out=True).verdict == "ws_hang_no_close"
    # a close frame cut short by the end of reading is no close
    assert grade(BAD, close(1007, b"reason")[:4], closed=False, timed_out=True).verdict == "ws_hang_no_close"
    assert grade(BAD, close(1007, b"reason")[:4], closed=True, timed_out=False).verdict == "ws_unclean_close"


def test_grade_accepted() -> None:
    g = grade(BAD, srv(F.OP_TEXT, b"bad \xff utf8") + close(1000), True, False)
    assert g.verdict == "ws_accepted_bad_frame" and "invalid UTF-8" in g.reason
    # acted on even when the close code is right afterwards, and even without a close
    assert grade(BAD, srv(F.OP_TEXT, b"x") + close(1007), True, False).verdict == "ws_accepted_bad_frame"
    assert grade(BAD, srv(F.OP_TEXT, b"x"), False, True).verdict == "ws_accepted_bad_frame"
    # a pong to a bad ping is acting on it
    ping126 = CASES_BY_NAME["control payload > 125 (ping of 126)"]
    assert grade(ping126, srv(F.OP_PONG, b"x" * 126) + close(1002), True, False).verdict == "ws_accepted_bad_frame"
    # an oversize echo is seen by its header alone
    assert grade(OVERSIZE, srv(F.OP_BINARY, b"\0" * 1000, length=F.OVERSIZE_BYTES)[:1010], False, False).verdict \
        == "ws_accepted_bad_frame"
    # a streamed echo of the valid first fragment is not acting on the bad one; more than it is
    frag = CASES_BY_NAME["invalid UTF-8 across fragments"]
    assert grade(frag, srv(F.OP_TEXT, b"ok ", fin=False) + close(1007), True, False).verdict == "ws_closed_correctly"
    assert grade(frag, srv(F.OP_TEXT, b"ok \xc0\xaf end") + close(1007), True, False).verdict \
        == "ws_accepted_bad_frame"
    inside = CASES_BY_NAME["data frame inside fragmented message"]
    assert grade(inside, srv(F.OP_TEXT, b"frag", fin=False) + close(1002), True, False).verdict \
        == "ws_closed_correctly"
    assert grade(inside, srv(F.OP_TEXT, b"ment") + close(1002), True, False).verdict == "ws_accepted_bad_frame"
    # frames after the close frame do not count
    assert grade(BAD, close(1007) + srv(F.OP_TEXT, b"late"), True, False).verdict == "ws_closed_correctly"


def test_grade_valid_controls() -> None:
    ok = srv(F.OP_TEXT, BASELINE.expect_echo) + close(1000)
    assert grade(BASELINE, ok, True, False).verdict == "ws_closed_correctly"
    g = grade(BASELINE, close(1000), True, False)
    assert g.verdict == "ws_valid_refused" and "echo" in g.reason
    assert grade(BASELINE, srv(F.OP_TEXT, b"other") + close(1000), True, False).verdict == "ws_valid_refused"
    assert grade(BASELINE, srv(F.OP_TEXT, BASELINE.expect_echo), True, False).verdict == "ws_unclean_close"
    assert grade(BASELINE, srv(F.OP_TEXT, BASELINE.expect_echo) + close(1002), True, False).verdict == "ws_wrong_close"
    vc = CASES_BY_NAME["valid close handshake"]
    assert grade(vc, close(1000), True, False).verdict == "ws_closed_correctly"
    assert grade(vc, b"", False, True).verdict == "ws_hang_no_close"
    # ping flood: pongs then the close echo; or a policy close; no pong and a normal close is refused
    pongs = b"".join(srv(F.OP_PONG, b"p%04d" % i) for i in range(3))
    assert grade(FLOOD, pongs + close(1000), True, False).pongs == 3
    assert grade(FLOOD, pongs + close(1000), True, False).verdict == "ws_closed_correctly"
    assert grade(FLOOD, close(1008), True, False).verdict == "ws_closed_correctly"
    assert grade(FLOOD, close(1000), True, False).verdict == "ws_valid_refused"
    assert grade(FLOOD, pongs, False, True).verdict == "ws_hang_no_close"
    assert grade(FLOOD, b"", False, True).verdict == "ws_hang_no_close"


def test_verdicts_map_to_predicates() -> None:
    from probatorium.validate.invariants import VERDICT_PREDICATES

    # frames.py is embedded whole in the standalone repro.py, so it keeps a copy of the ws rows of
    # the catalogue's one verdict→predicate mapping; the copy must equal the catalogue.
    assert F.VERDICT_PREDICATE == {v: p for (s, v), p in VERDICT_PREDICATES.items() if s == "ws"}
    assert F.VERDICT_PREDICATE == {"ws_accepted_bad_frame": "I-WS-ACCEPTED", "ws_hang_no_close": "I-WS-HANG",
                                   "ws_wrong_close": "I-WS-CLOSE", "ws_unclean_close": "I-WS-CLOSE",
                                   "ws_version_not_advertised": "I-WS-HANDSHAKE",
                                   "ws_buffered_after_close": "I-WS-AFTER-CLOSE"}
    assert F.VERDICTS[0] == "ws_accepted_bad_frame" and F.VERDICTS[1] == "ws_hang_no_close"


def test_probe_ping_follows_frame_level_violations() -> None:
    probed = [c for c in CASES if not c.after_close and any(f.opcode == F.OP_PING and f.payload == F.PROBE_PING
                                      for seg in c.build(random.Random(1)) if seg is not None
                                      for f in parse_frames(seg).frames)]
    names = {c.name for c in probed}
    assert "unmasked client frame" in names and "continuation without start" in names
    assert {f"reserved opcode 0x{op:X}" for op in (3, 7, 0xB, 0xF)} <= names
    # never after a close frame, never where a declared length would swallow it
    assert not any(c.name.startswith("close ") or c is OVERSIZE or c.name.startswith("64-bit") for c in probed)
    for c in probed:  # the violation comes first, the probe last, in one write
        segs = c.build(random.Random(2))
        assert len(segs) == 1
        frames = parse_frames(segs[0]).frames
        assert frames[-1].opcode == F.OP_PING and frames[-1].payload == F.PROBE_PING and len(frames) >= 2


def test_grade_pong_to_the_probe_is_acceptance() -> None:
    rsv = CASES_BY_NAME["RSV1 bit without extension"]
    g = grade(rsv, srv(F.OP_PONG, F.PROBE_PING), False, True)
    assert g.verdict == "ws_accepted_bad_frame" and "skipped the bad frame" in g.reason
    # a pong after the server's close frame does not count
    assert grade(rsv, close(1002) + srv(F.OP_PONG, F.PROBE_PING), True, False).verdict == "ws_closed_correctly"


def test_grade_tcp_kept_open_after_the_close_handshake_is_a_hang() -> None:
    vc = CASES_BY_NAME["valid close handshake"]
    g = grade(vc, close(1000), closed=False, timed_out=False, kept_open=True)
    assert g.verdict == "ws_hang_no_close" and "5.5.1" in g.reason
    assert grade(BAD, close(1007), False, False, kept_open=True).verdict == "ws_hang_no_close"
    # acting on the bad frame still ranks first
    assert grade(BAD, srv(F.OP_TEXT, b"x") + close(1007), False, False, kept_open=True).verdict \
        == "ws_accepted_bad_frame"
    assert grade(vc, close(1000), closed=True, timed_out=False).verdict == "ws_closed_correctly"
