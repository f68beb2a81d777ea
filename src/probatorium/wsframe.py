"""The one WebSocket framer (RFC 6455 §5.2): encode a frame, decode a frame header, mask.

Sans-IO and standard-library only, on purpose: the load generator
(loadgen/streams.py) frames its messages with it, the ws slice
(validate/tier1/ws/frames.py) builds its valid and deliberately malformed
frames on top of it, and a ws reproducer embeds this module's source verbatim.
"""

from __future__ import annotations

import base64
import hashlib
import struct

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_value(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2 item 5.4)."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """XOR the payload with the 4-byte masking key (RFC 6455 §5.3)."""
    if not payload:
        return b""
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True,
                 mask_key: bytes = b"\x00\x00\x00\x00", length: int | None = None,
                 length_form: int | None = None) -> bytes:
    """One frame (RFC 6455 §5.2). `rsv`, `length` (a lie about the payload length) and
    `length_form` (force 7, 16 or 64 bits; 64 allows the top bit, which the RFC forbids) exist so
    that callers can build malformed frames on purpose; the defaults build a valid one."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    mbit = 0x80 if mask else 0
    form = length_form or (7 if n < 126 else 16 if n < 65536 else 64)
    if form == 7:
        head = bytes([b0, mbit | n])
    elif form == 16:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if mask:
        return head + mask_key + mask_bytes(payload, mask_key)
    return head + payload


def decode_header(data: bytes, pos: int = 0) -> tuple[bool, int, int, bool, int, int] | None:
    """The frame header at data[pos:] as (fin, rsv, opcode, masked, payload length, header
    length including the masking key), or None while the header is incomplete (RFC 6455 §5.2)."""
    avail = len(data) - pos
    if avail < 2:
        return None
    b0, b1 = data[pos], data[pos + 1]
    n, hl = b1 & 0x7F, 2
    if n == 126:
        if avail < 4:
            return None
        n, hl = struct.unpack_from("!H", data, pos + 2)[0], 4
    elif n == 127:
        if avail < 10:
            return None
        n, hl = struct.unpack_from("!Q", data, pos + 2)[0], 10
    masked = bool(b1 & 0x80)
    if masked:
        hl += 4
        if avail < hl:
            return None
    return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, masked, n, hl
