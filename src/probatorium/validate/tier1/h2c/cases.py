"""h2c upgrade cases as DATA: what is sent, at which stage the client resets, what the RFC requires.

A case renders to exact bytes. `valid` says whether the preamble is a correct
RFC 7540 §3.2 upgrade request (a 101 is then fine); for an invalid one, a 101
is I-H2C-UPGRADE. `stage` says when the client gives up on the connection
with a reset (SO_LINGER 0):

- ``full``: send, read the whole answer, then reset;
- ``before_read``: send, reset before reading anything;
- ``after_101``: send, read up to the 101 (or the HTTP/1.1 answer), reset;
- ``partial_preface``: send, read the 101, send a connection preface cut short, reset.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 7540 §3.5
STAGES = ("full", "before_read", "after_101", "partial_preface")

# SETTINGS parameters (RFC 7540 §6.5.2): 6 bytes each, 16-bit id + 32-bit value.
SETTINGS_PARAMS = ((0x3, 100), (0x4, 65535))  # MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE


def settings_payload(params: tuple[tuple[int, int], ...] = SETTINGS_PARAMS) -> bytes:
    return b"".join(struct.pack("!HI", ident, value) for ident, value in params)


def b64url(data: bytes) -> str:
    """base64url without padding, as RFC 7540 §3.2.1 requires for HTTP2-Settings."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


VALID_SETTINGS = b64url(settings_payload())
NOT_BASE64URL = "AAMAAABk+AAQAA/!*"  # '+', '/', '!', '*' are outside the base64url alphabet
NOT_MULTIPLE_OF_6 = b64url(settings_payload()[:9])  # 9 bytes: not a whole number of parameters


def client_settings_frame() -> bytes:
    """An empty SETTINGS frame (type 0x4, stream 0), sent after the client preface."""
    return struct.pack("!I", 0)[1:] + bytes([0x4, 0x0]) + struct.pack("!I", 0)


@dataclass(frozen=True)
class H2cCase:
    name: str
    valid: bool
    stage: str
    headers: tuple[str, ...]  # header lines after Host, without CRLF
    clause: str
    method: str = "GET"
    body: bytes | None = None
    note: str = ""

    def render(self, *, host: str, path: str, nonce: str) -> bytes:
        """The exact request bytes; the echo path gets an `h2c=<nonce>` query to find it again."""
        joiner = "&" if "?" in path else "?"
        lines = [f"{self.method} {path}{joiner}h2c={nonce} HTTP/1.1", f"Host: {host}", *self.headers]
        if self.body is not None:
            lines.append(f"Content-Length: {len(self.body)}")
            lines.append("Content-Type: application/octet-stream")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (self.body or b"")

    @property
    def body_sha256(self) -> str | None:
        return hashlib.sha256(self.body).hexdigest() if self.body is not None else None


_UPGRADE = ("Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c")
_VALID = (*_UPGRADE, f"HTTP2-Settings: {VALID_SETTINGS}")
_RFC = "RFC 7540 §3.2.1"
BODY = bytes(range(256)) * 4 + b"h2c upgrade body end"

CASES: list[H2cCase] = [
    H2cCase("valid upgrade, read answer", True, "full", _VALID, "RFC 7540 §3.2",
            note="a correct upgrade: 101 or an HTTP/1.1 answer are both fine"),
    H2cCase("valid upgrade, reset before reading", True, "before_read", _VALID, "RFC 7540 §3.2",
            note="the client resets as soon as the preamble is out"),
    H2cCase("valid upgrade, reset after 101", True, "after_101", _VALID, "RFC 7540 §3.2",
            note="the client resets once the 101 (or the HTTP/1.1 answer) arrived"),
    H2cCase("valid upgrade, reset inside the preface", True, "partial_preface", _VALID, "RFC 7540 §3.5",
            note="after the 101 the client sends a cut-short connection preface, then resets"),
    H2cCase("HTTP2-Settings missing", False, "full", _UPGRADE, _RFC,
            note="a server MUST NOT upgrade without the HTTP2-Settings header field"),
    H2cCase("HTTP2-Settings duplicated", False, "full",
            (*_VALID, f"HTTP2-Settings: {VALID_SETTINGS}"), _RFC,
            note="a server MUST NOT upgrade if more than one HTTP2-Settings is present"),
    H2cCase("HTTP2-Settings not base64url", False, "full", (*_UPGRADE, f"HTTP2-Settings: {NOT_BASE64URL}"), _RFC,
            note="the value must be a base64url SETTINGS payload"),
    H2cCase("HTTP2-Settings not a multiple of 6 bytes", False, "full",
            (*_UPGRADE, f"HTTP2-Settings: {NOT_MULTIPLE_OF_6}"), "RFC 7540 §3.2.1, §6.5",
            note="a SETTINGS payload whose length is not a multiple of 6 is a FRAME_SIZE_ERROR"),
    H2cCase("HTTP2-Settings not a Connection option", True, "full",
            ("Connection: Upgrade", "Upgrade: h2c", f"HTTP2-Settings: {VALID_SETTINGS}"), _RFC,
            note="listing HTTP2-Settings in Connection is the CLIENT's MUST; the server's rule (RFC 7540 "
                 "§3.2.1) is exactly one valid HTTP2-Settings, which is present: upgrading is allowed"),
    H2cCase("valid upgrade with a request body", True, "full", _VALID, "RFC 7540 §3.2", method="POST", body=BODY,
            note="an upgrade request may carry a body; it must reach the application intact"),
]
