"""RFC 6455 on bytes: frame building and parsing, the torture catalogue as data, grading.

Sans-IO and standard-library only, on purpose: no socket is touched here, so
every grading rule is a pure function (bytes in, verdict out) and a
reproducer can embed this very module as its source (after probatorium's one
framer, ../../../wsframe.py, which this module builds its valid and its
deliberately malformed frames on).

Grading follows Autobahn's spirit:

* ``ws_closed_correctly``   a close frame whose code is one the case expects
  (bad frames: 1002/1007/1009; valid controls: the close we asked for).
* ``ws_wrong_close``        a close frame with another code or with no code
  (I-WS-CLOSE, MED).
* ``ws_unclean_close``      the TCP connection ended without a close frame
  (I-WS-CLOSE, MED).
* ``ws_accepted_bad_frame`` the bad frame was acted on: a data frame or a pong
  came back after it (including the pong to a probe ping sent right after it:
  the server skipped the bad frame instead of failing the connection), or a
  101 answered an invalid handshake (I-WS-ACCEPTED, HIGH).
* ``ws_hang_no_close``      nothing decisive within the close timeout; a
  timeout is never "closed correctly" (I-WS-HANG, HIGH). Also: both close
  frames were exchanged but the server kept TCP open past the timeout
  (RFC 6455 §5.5.1 MUST close it).
* ``ws_handshake_rejected`` an invalid handshake got a non-101 answer (good).
* ``ws_valid_refused``      a valid control (echo round trip, ping flood) did
  not get its answer although the server closed properly (not a predicate).
* ``ws_bad_accept``         a 101 to a valid handshake with a wrong or missing
  Sec-WebSocket-Accept (RFC 6455 §4.2.2 item 5.4; counted, not a predicate).
"""

from __future__ import annotations

import base64
import random
import struct
from dataclasses import dataclass, field
from typing import Callable

from ....wsframe import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, accept_value, decode_header,
                         encode_frame, mask_bytes)

CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})
DATA_OPCODES = frozenset({OP_CONT, OP_TEXT, OP_BINARY})

# Worst first: the verdict a case shows in the per-case breakdown.
VERDICTS = (
    "ws_accepted_bad_frame",
    "ws_hang_no_close",
    "ws_buffered_after_close",  # wt-wsasgi
    "ws_unclean_close",
    "ws_wrong_close",
    "ws_bad_accept",
    "ws_version_not_advertised",  # wt-wsasgi
    "ws_read_after_close_unmeasured",  # wt-wsasgi
    "ws_valid_refused",
    "ws_closed_correctly",
    "ws_handshake_rejected",
    "ws_endpoint_absent",
    "ws_conn_error",
)
# A copy of the ws rows of invariants.VERDICT_PREDICATES: this module is embedded whole in the
# standalone repro.py, which cannot import the catalogue. A test keeps the copy equal to it.
VERDICT_PREDICATE = {
    "ws_accepted_bad_frame": "I-WS-ACCEPTED",
    "ws_hang_no_close": "I-WS-HANG",
    "ws_wrong_close": "I-WS-CLOSE",
    "ws_unclean_close": "I-WS-CLOSE",
    "ws_version_not_advertised": "I-WS-HANDSHAKE",  # wt-wsasgi
    "ws_buffered_after_close": "I-WS-AFTER-CLOSE",  # wt-wsasgi
}

# Payloads above this are "oversize": uvicorn and hypercorn default to 16 MiB,
# the websockets library to 1 MiB. A server that takes a bigger message has no
# limit at all (a memory DoS); 1009 is the answer RFC 6455 §7.4.1 names for it.
OVERSIZE_BYTES = (16 << 20) + (1 << 20)
PING_FLOOD = 300
# The end of TCP after the close handshake is judged only when the client sent at most this much:
# after a large send our close reply may sit behind megabytes the closing server no longer reads.
JUDGE_CLOSE_TCP_MAX_SENT = 64 << 10


# --------------------------------------------------------------------------------------
# handshake


def new_key(rng: random.Random) -> str:
    """A valid Sec-WebSocket-Key: 16 random bytes, base64 (RFC 6455 §4.1 item 7)."""
    return base64.b64encode(bytes(rng.getrandbits(8) for _ in range(16))).decode("ascii")


@dataclass(frozen=True)
class HandshakeCase:
    """One opening handshake; `valid` says whether RFC 6455 §4.2.1 lets a server answer 101."""

    name: str
    clause: str
    valid: bool
    method: str = "GET"
    key: str = "valid"  # valid | missing | short | not-base64
    version: str | None = "13"
    upgrade: str | None = "websocket"
    connection: str | None = "Upgrade"
    note: str = ""
    http_version: str = "1.1"  # wt-wsasgi: the request line's version (an upgrade needs 1.1 or higher)
    # wt-wsasgi: the refusal must carry Sec-WebSocket-Version with the versions the server speaks
    # (RFC 6455 §4.4, §4.2.2 item 4: an unsupported version)
    advertise_version: bool = False


VALID_HANDSHAKE = HandshakeCase("handshake valid", "RFC 6455 §4.1, §4.2.2", True)

HANDSHAKE_CASES: tuple[HandshakeCase, ...] = (
    HandshakeCase("handshake missing key", "RFC 6455 §4.2.1 item 5", False, key="missing"),
    HandshakeCase("handshake short key (8 bytes)", "RFC 6455 §4.2.1 item 5", False, key="short",
                  note="the key must decode to exactly 16 bytes"),
    HandshakeCase("handshake key not base64", "RFC 6455 §4.2.1 item 5", False, key="not-base64"),
    HandshakeCase("handshake unknown version 99", "RFC 6455 §4.2.1 item 6, §4.4", False, version="99",
                  note="a server must answer 426 with Sec-WebSocket-Version, never 101; 99 is no registered "
                       "version (IANA: 0-13), whereas 8 (hybi-08..12) may lawfully be supported as well, "
                       "as Autobahn/daphne do"),
    HandshakeCase("handshake missing version", "RFC 6455 §4.2.1 item 6", False, version=None),
    HandshakeCase("handshake POST", "RFC 6455 §4.2.1 item 1", False, method="POST"),
    HandshakeCase("handshake missing Upgrade", "RFC 6455 §4.2.1 item 3", False, upgrade=None),
    # ---- wt-wsasgi (issue 12 item 9)
    HandshakeCase("handshake empty key", "RFC 6455 §4.2.1 item 5", False, key="empty",
                  note="Sec-WebSocket-Key present with an empty value: not 16 base64-encoded bytes"),
    HandshakeCase("handshake over HTTP/1.0", "RFC 6455 §4.2.1 item 1, §4.1", False, http_version="1.0",
                  note="the opening handshake is an HTTP/1.1 or higher GET request"),
    HandshakeCase("handshake unsupported version advertised", "RFC 6455 §4.4, §4.2.2 item 4", False, version="7",
                  advertise_version=True,
                  note="an unsupported version: refused (426 Upgrade Required is the example) with a "
                       "Sec-WebSocket-Version header field listing the versions the server understands"),
)


def render_handshake(case: HandshakeCase, host: str, path: str, key: str) -> bytes:
    """The request bytes for a handshake case (`key` is the valid key the case may spoil)."""
    lines = [f"{case.method} {path} HTTP/{case.http_version}", f"Host: {host}"]
    if case.upgrade is not None:
        lines.append(f"Upgrade: {case.upgrade}")
    if case.connection is not None:
        lines.append(f"Connection: {case.connection}")
    if case.key == "valid":
        lines.append(f"Sec-WebSocket-Key: {key}")
    elif case.key == "short":
        lines.append("Sec-WebSocket-Key: " + base64.b64encode(base64.b64decode(key)[:8]).decode())
    elif case.key == "not-base64":
        lines.append("Sec-WebSocket-Key: !!not*base64!!%%%%%%")
    elif case.key == "empty":
        lines.append("Sec-WebSocket-Key: ")
    if case.version is not None:
        lines.append(f"Sec-WebSocket-Version: {case.version}")
    if case.method == "POST":
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def split_head(data: bytes) -> tuple[int | None, dict[str, str], bytes, bool]:
    """(status, headers lower-cased, bytes after the head, head complete) of a response prefix.

    A minimal reading for the reproducer; the slice parses with tier1.http1.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None, {}, b"", False
    lines = data[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if sep:
            headers.setdefault(k.strip().lower(), v.strip())
    return status, headers, data[end + 4:], True


def check_accept(status: int | None, accept: str | None, upgrade: str | None, key: str) -> str | None:
    """Why a 101 to a valid handshake is not a correct one (RFC 6455 §4.2.2 item 5), or None."""
    if status != 101:
        return f"status {status}, not 101"
    if accept is None:
        return "101 without Sec-WebSocket-Accept"
    if accept.strip() != accept_value(key):
        return f"Sec-WebSocket-Accept {accept!r} != {accept_value(key)!r}"
    if upgrade is None or upgrade.strip().lower() != "websocket":
        return f"101 with Upgrade {upgrade!r}"
    return None


# --------------------------------------------------------------------------------------
# frames


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


@dataclass(frozen=True)
class Frame:
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes
    length: int  # the declared length (payload may be shorter when `complete` is False)
    complete: bool = True

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return struct.unpack("!H", self.payload[:2])[0]


@dataclass
class FrameParse:
    frames: list[Frame] = field(default_factory=list)
    error: str | None = None  # the server's bytes are not frames (offset and why)
    rest: bytes = b""
    consumed: int = 0  # bytes taken by the complete frames


def parse_frames(data: bytes) -> FrameParse:
    """Split bytes a server sent after its 101 into frames. A frame whose header arrived but
    whose payload did not is returned with complete=False (an oversize echo is seen by its header)."""
    out = FrameParse()
    pos = 0
    while pos < len(data):
        head = decode_header(data, pos)
        if head is None:
            out.rest = data[pos:]
            break
        fin, rsv, opcode, masked, n, hl = head
        mk = data[pos + hl - 4:pos + hl] if masked else b""
        avail = data[pos + hl:pos + hl + n]
        payload = mask_bytes(avail, mk) if masked else avail
        fr = Frame(fin, rsv, opcode, masked, payload, n, len(avail) == n)
        if masked and out.error is None:
            out.error = f"masked frame from the server at offset {pos} (RFC 6455 §5.1)"
        out.frames.append(fr)
        if not fr.complete:
            out.rest = data[pos:]
            break
        pos += hl + n
        out.consumed = pos
    return out


def valid_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --------------------------------------------------------------------------------------
# the catalogue: data. `build(rng)` returns the byte segments sent after the 101, in order;
# the rng supplies masking keys (and nothing else), so a (case, seed) pair replays exactly.

Build = Callable[[random.Random], "list[bytes | None]"]
AWAIT_REPLY = None  # in a segment list: wait for the server's first frame before the next write


@dataclass(frozen=True)
class WsCase:
    name: str
    clause: str
    expected_close: tuple[int, ...]  # close codes graded ws_closed_correctly
    build: Build
    bad: bool = True  # False: a valid control (baseline echo, close handshake, ping flood)
    expect_echo: bytes | None = None  # valid controls: the text that must come back
    expect_pong: bool = False
    # Bad cases that open with a VALID fragment: a server that streams fragments may echo it
    # before it reads the bad frame; echoing (a prefix of) this is not acting on the bad frame.
    harmless_echo: bytes = b""
    note: str = ""
    # wt-wsasgi: bytes the client keeps sending after the server's close (the oversize stream continued);
    # graded by grade_after_close from the target's RSS
    after_close: int = 0


def _mk(rng: random.Random) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(4))


def fr(opcode: int, payload: bytes = b"", **kw) -> Build:
    """A builder for one masked frame with a fresh masking key."""
    return lambda rng: [encode_frame(opcode, payload, mask_key=_mk(rng), **kw)]


def seq(*builders: Build) -> Build:
    """Builders whose frames go out in one segment."""
    return lambda rng: [b"".join(b"".join(b(rng)) for b in builders)]


def segments(*builders: Build) -> Build:
    """Builders whose frames go out as separate writes."""
    return lambda rng: [s for b in builders for s in b(rng)]


def _oversize(rng: random.Random) -> list[bytes]:
    # Zero bytes masked with key K are K repeated: 17 MiB of masked payload without a XOR loop.
    key = _mk(rng)
    head = encode_frame(OP_BINARY, b"", mask=False, length=OVERSIZE_BYTES)
    head = bytes([head[0], head[1] | 0x80]) + head[2:] + key
    chunk = key * ((1 << 20) // 4)
    n_full, tail = divmod(OVERSIZE_BYTES, len(chunk))
    return [head] + [chunk] * n_full + ([chunk[:tail]] if tail else [])


# ---- wt-wsasgi (issue 12 item 9): the oversize stream continued after the server's close 1009.
# RFC 6455 §7.1.7: an endpoint that fails the connection MUST NOT continue to attempt to process data
# from the remote endpoint. A server that goes on reading and BUFFERING the message shows it in its
# RSS: growth of at least BUFFERED_SHARE of what it took after its close (and at least
# BUFFERED_MIN_BYTES) is the verdict ws_buffered_after_close. Reading and discarding is not.
AFTER_CLOSE_BYTES = 48 << 20
AFTER_CLOSE_MAX_S = 8.0  # sending after the close stops after this long (a server that stopped reading blocks us)
BUFFERED_MIN_BYTES = 16 << 20
BUFFERED_SHARE = 0.5


def _oversize_stream(rng: random.Random) -> list[bytes]:
    key = _mk(rng)
    declared = OVERSIZE_BYTES + AFTER_CLOSE_BYTES + (1 << 20)
    head = encode_frame(OP_BINARY, b"", mask=False, length=declared)
    head = bytes([head[0], head[1] | 0x80]) + head[2:] + key
    chunk = key * ((1 << 20) // 4)
    return [head] + [chunk] * (declared // len(chunk))


def grade_after_close(sent_after: int, rss_before: int | None, rss_after: int | None) -> tuple[str, str] | None:
    """(verdict, reason) for what the server did with the bytes sent after its close 1009, None: fine.
    Evidence is the target's RSS; without it only the bytes taken are known (counted, no predicate)."""
    taken = f"the server took {sent_after >> 20} MiB sent after its close 1009"
    if rss_before is None or rss_after is None:
        if sent_after >= AFTER_CLOSE_BYTES:
            return "ws_read_after_close_unmeasured", f"{taken}; no local process: RSS not measured"
        return None
    growth = rss_after - rss_before
    if sent_after >= BUFFERED_MIN_BYTES and growth >= BUFFERED_SHARE * sent_after:
        return "ws_buffered_after_close", (f"{taken} and its RSS grew {growth >> 20} MiB: it kept buffering the "
                                           "message it had failed (RFC 6455 §7.1.7 MUST NOT process data)")
    return None


def _ping_flood(rng: random.Random) -> list[bytes]:
    pings = b"".join(encode_frame(OP_PING, b"p%04d" % i, mask_key=_mk(rng)) for i in range(PING_FLOOD))
    return [pings, encode_frame(OP_CLOSE, close_payload(1000), mask_key=_mk(rng))]


# A ping sent right after a bad frame, in the same write. A server that FAILS the connection on
# the bad frame (RFC 6455 §7.1.7: it stops processing input) never answers it; a server that
# silently skips the bad frame and goes on answers it with a pong, which grade() counts as
# acting on the bad frame. Only for frame-level violations a server might skip (RSV bits,
# reserved opcodes, masking, orphan continuations): never after a close frame (nothing may
# follow it) and not where the bad frame's declared length would swallow the ping.
PROBE_PING = b"probatorium probe"


def probed(build: Build) -> Build:
    """`build`'s frames followed, in the same write, by the probe ping."""
    return seq(build, fr(OP_PING, PROBE_PING))


CLOSE_1000 = fr(OP_CLOSE, close_payload(1000))
ECHO_TEXT = b"probatorium ws baseline \xe2\x9c\x93"
S52 = "RFC 6455 §5.2"

CASES: tuple[WsCase, ...] = (
    # ---- valid controls
    WsCase("baseline echo round trip", "RFC 6455 §5.6, §5.5.1", (1000,),
           segments(fr(OP_TEXT, ECHO_TEXT), lambda rng: [AWAIT_REPLY], CLOSE_1000), bad=False, expect_echo=ECHO_TEXT,
           note="a text message comes back; then our close 1000 is echoed"),
    WsCase("valid close handshake", "RFC 6455 §5.5.1, §7.1.2", (1000,),
           fr(OP_CLOSE, close_payload(1000, b"bye")), bad=False,
           note="an endpoint that receives a close frame sends a close frame in response"),
    WsCase("ping flood", "RFC 6455 §5.5.2, §5.5.3", (1000, 1001, 1008), _ping_flood, bad=False,
           expect_pong=True,
           note=f"{PING_FLOOD} pings then close 1000: pongs (at least for the last ping) and a close, "
                "or a policy close; no answer at all means the server stopped reading"),
    # ---- framing
    WsCase("unmasked client frame", "RFC 6455 §5.1", (1002,), probed(fr(OP_TEXT, b"unmasked", mask=False)),
           note="a server MUST close the connection upon receiving an unmasked frame"),
    *(WsCase(f"RSV{i} bit without extension", S52, (1002,), probed(fr(OP_TEXT, b"rsv", rsv=1 << (3 - i))))
      for i in (1, 2, 3)),
    *(WsCase(f"reserved opcode 0x{op:X}", S52, (1002,), probed(fr(op, b"reserved")))
      for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)),
    WsCase("fragmented control frame (ping FIN=0)", "RFC 6455 §5.5", (1002,),
           fr(OP_PING, b"frag", fin=False)),
    WsCase("control payload > 125 (ping of 126)", "RFC 6455 §5.5", (1002,), fr(OP_PING, b"x" * 126)),
    WsCase("continuation without start", "RFC 6455 §5.4", (1002,), probed(fr(OP_CONT, b"orphan"))),
    WsCase("data frame inside fragmented message", "RFC 6455 §5.4", (1002,),
           seq(fr(OP_TEXT, b"frag", fin=False), fr(OP_TEXT, b"ment")), harmless_echo=b"frag"),
    WsCase("64-bit length with top bit set", S52, (1002,),
           fr(OP_BINARY, b"top", length=(1 << 63) | 3, length_form=64),
           note="the most significant bit of a 64-bit length MUST be 0"),
    # ---- UTF-8
    WsCase("invalid UTF-8 text (0xFF)", "RFC 6455 §8.1", (1007,), fr(OP_TEXT, b"bad \xff utf8")),
    WsCase("invalid UTF-8 text (surrogate)", "RFC 6455 §8.1", (1007,),
           fr(OP_TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")),
    WsCase("invalid UTF-8 across fragments", "RFC 6455 §8.1", (1007,),
           seq(fr(OP_TEXT, b"ok ", fin=False), fr(OP_CONT, b"\xc0\xaf end")), harmless_echo=b"ok "),
    WsCase("invalid UTF-8 in close reason", "RFC 6455 §5.5.1, §8.1", (1007, 1002),
           fr(OP_CLOSE, close_payload(1000, b"bye \xff\xfe"))),
    # ---- close frames
    WsCase("close with 1-byte payload", "RFC 6455 §5.5.1", (1002,), fr(OP_CLOSE, b"\x03")),
    *(WsCase(f"close with invalid code {code}", "RFC 6455 §7.4.1, §7.4.2", (1002,),
             fr(OP_CLOSE, close_payload(code)))
      for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)),
    # ---- size
    WsCase("oversize message", "RFC 6455 §7.4.1 (1009), §10.4", (1009,), _oversize,
           note=f"one binary message of {OVERSIZE_BYTES} bytes (> the 16 MiB engine defaults); "
                "1009 is the code for it, 1002/1008 grade ws_wrong_close, an echo grades accepted"),
    # ---- wt-wsasgi (issue 12 item 9)
    WsCase("oversize message continued after close 1009", "RFC 6455 §7.1.7, §7.4.1 (1009), §10.4", (1009,),
           _oversize_stream, after_close=AFTER_CLOSE_BYTES,
           note=f"an oversize message whose payload keeps coming after the server's close: up to "
                f"{AFTER_CLOSE_BYTES >> 20} MiB more for {AFTER_CLOSE_MAX_S:.0f} s; RSS growing with them is "
                "ws_buffered_after_close"),
)
CASES_BY_NAME = {c.name: c for c in CASES}


# --------------------------------------------------------------------------------------
# grading


@dataclass
class Grade:
    verdict: str
    reason: str
    close_code: int | None = None
    close_seen: bool = False
    frames: list[Frame] = field(default_factory=list)
    pongs: int = 0


def grade_handshake(case: HandshakeCase, status: int | None, closed: bool, timed_out: bool,
                    accept_problem: str | None = None, version_header: str | None = None) -> Grade:
    """Grade the answer to a handshake. Valid handshakes are graded only when they fail
    (endpoint absent / bad accept); the frame case that follows carries the verdict.
    `version_header`: the refusal's Sec-WebSocket-Version value (None: absent)."""
    if case.valid:
        if status == 101 and accept_problem is None:
            return Grade("ws_closed_correctly", "101 with a correct Sec-WebSocket-Accept")
        if status == 101:
            return Grade("ws_bad_accept", accept_problem or "")
        if status is None:
            how = "no answer before the timeout" if timed_out else "closed without an answer"
            return Grade("ws_endpoint_absent", f"valid handshake: {how}")
        return Grade("ws_endpoint_absent", f"valid handshake answered {status}")
    if status == 101:
        return Grade("ws_accepted_bad_frame", f"{case.name}: 101 Switching Protocols to an invalid handshake "
                                              f"({case.clause})")
    if status is not None and case.advertise_version and not _lists_versions(version_header):
        return Grade("ws_version_not_advertised", f"{case.name}: answered {status} without a Sec-WebSocket-Version "
                                                  f"listing the supported versions (got {version_header!r}; "
                                                  "RFC 6455 §4.4 MUST)")
    if status is not None:
        return Grade("ws_handshake_rejected", f"{case.name}: answered {status}"
                     + (f", Sec-WebSocket-Version: {version_header}" if case.advertise_version else ""))
    if closed:
        return Grade("ws_handshake_rejected", f"{case.name}: closed without an answer")
    return Grade("ws_hang_no_close", f"{case.name}: no answer within the timeout")


def _lists_versions(value: str | None) -> bool:
    """A Sec-WebSocket-Version value that lists versions: 1#( 1*DIGIT ) with each 0..255 (RFC 6455 §11.3.5)."""
    if value is None:
        return False
    items = [v.strip() for v in value.split(",")]
    return bool(items) and all(v.isascii() and v.isdigit() and int(v) <= 255 for v in items)


def grade(case: WsCase, received: bytes, closed: bool, timed_out: bool, kept_open: bool = False) -> Grade:
    """Grade what the server sent after its 101 (`received`) for one case.

    closed: the server ended TCP (FIN or RST); timed_out: reading stopped because
    nothing decisive came within the close timeout; kept_open: both close frames were
    exchanged but the server had not ended TCP within the close timeout after that
    (RFC 6455 §5.5.1: it MUST close the connection; §7.1.1: the server closes first).
    """
    parsed = parse_frames(received)
    frames = parsed.frames
    close = next((f for f in frames if f.opcode == OP_CLOSE), None)
    before = frames[:frames.index(close)] if close is not None else frames
    pongs = sum(1 for f in before if f.opcode == OP_PONG)
    data = [f for f in before if f.opcode in DATA_OPCODES]
    g = Grade("", "", frames=frames, pongs=pongs)
    if close is not None:
        g.close_seen = True
        g.close_code = close.close_code
    if case.bad:
        acted = [f for f in before if f.opcode in DATA_OPCODES or f.opcode == OP_PONG]
        echoed = b"".join(f.payload for f in acted if f.opcode in DATA_OPCODES)
        if case.harmless_echo and acted and all(f.opcode in DATA_OPCODES for f in acted) \
                and case.harmless_echo.startswith(echoed) and all(f.complete for f in acted):
            acted = []  # only the valid first fragment came back, streamed before the bad frame arrived
        if acted:
            f = acted[0]
            what = {OP_PONG: "a pong"}.get(f.opcode, f"a data frame (opcode 0x{f.opcode:X}, {f.length} bytes)")
            g.verdict, g.reason = "ws_accepted_bad_frame", f"the server answered the bad frame with {what}"
            if f.opcode == OP_PONG and f.payload == PROBE_PING:
                g.reason = ("the server skipped the bad frame and went on: it answered the ping sent after it "
                            "(it must fail the connection, RFC 6455 §7.1.7)")
            if f.opcode == OP_TEXT and not valid_utf8(f.payload) and f.complete:
                g.reason += " carrying invalid UTF-8 (it echoed what it must reject)"
            return g
    if parsed.error:
        g.verdict, g.reason = "ws_wrong_close", f"unparseable server frames: {parsed.error}"
        return g
    if close is not None and not close.complete:
        close = None  # a close frame still arriving when reading stopped
        g.close_seen = False
    if close is None:
        if closed:
            g.verdict, g.reason = "ws_unclean_close", "TCP closed without a close frame"
        else:
            g.verdict, g.reason = "ws_hang_no_close", "no close frame within the timeout (connection still open)"
        if not case.bad and (case.expect_echo is not None or case.expect_pong):
            g.reason += f"; {len(data)} data frame(s), {pongs} pong(s) before"
        return g
    code = close.close_code
    if kept_open:
        g.verdict = "ws_hang_no_close"
        g.reason = (f"close {code} exchanged, but the server kept the TCP connection open past the close timeout "
                    "(RFC 6455 §5.5.1 MUST close it, §7.1.1)")
        return g
    if code is None:
        g.verdict = "ws_wrong_close"
        g.reason = "close frame without a status code" + (" (1-byte payload)" if len(close.payload) == 1 else "")
        return g
    if code not in case.expected_close:
        g.verdict, g.reason = "ws_wrong_close", f"close code {code}, expected {'/'.join(map(str, case.expected_close))}"
        return g
    if not case.bad:
        if case.expect_echo is not None:
            got = b"".join(f.payload for f in data)
            if got != case.expect_echo:
                g.verdict, g.reason = "ws_valid_refused", f"echo {got[:80]!r} != {case.expect_echo!r}"
                return g
        if case.expect_pong and pongs == 0 and code == 1000:
            g.verdict, g.reason = "ws_valid_refused", "no pong to any of the pings before the close"
            return g
    g.verdict, g.reason = "ws_closed_correctly", f"close {code}" + (f" after {pongs} pong(s)" if pongs else "")
    return g


def close_reply_frame(received: bytes) -> bytes:
    """The client's (masked) answer to the server's close frame: its code echoed when that code may
    be sent on the wire, else 1000 (RFC 6455 §5.5.1, §7.4.1: 1005/1006/1015 never are)."""
    code = next((f.close_code for f in parse_frames(received).frames if f.opcode == OP_CLOSE), None)
    reply = 1000 if code is None or not 1000 <= code <= 4999 or code in (1005, 1006, 1015) else code
    return encode_frame(OP_CLOSE, close_payload(reply), mask_key=b"\x01\x02\x03\x04")


def close_frame_complete(received: bytes) -> bool:
    """True once a complete close frame is among the server's frames (reading can stop)."""
    return any(f.opcode == OP_CLOSE and f.complete for f in parse_frames(received).frames)
