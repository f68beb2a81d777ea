"""HTTP/1.1 response-stream parsing and framing checks, sans-IO.

Every byte a walker reads from a target goes through `parse_response_stream`,
which splits it into responses by the framing rules of RFC 9112 §6.3 and
reports what a strict client would object to:

* I-RFC-1 (response framing): malformed status line, invalid or conflicting
  Content-Length, Content-Length together with Transfer-Encoding, a body or
  framing header where none is allowed (HEAD, 1xx, 204, 304), bad chunked
  syntax, a truncated body, bytes that are not a response where one must start.
* I-RFC-2 (header injection): CR, LF or NUL inside a response header line, a
  field line that is not `token ":" value`, obs-fold in a response.

The grammar is transcribed once, here, with the RFC section beside each rule;
no socket is touched, so every rule is unit-testable with plain bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# RFC 9110 §5.6.2: tchar / token.
TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
TOKEN_RE = re.compile(rb"[" + TCHAR + rb"]+\Z")
# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ].
# Recipients SHOULD accept a missing SP before an empty reason, so it is optional.
STATUS_LINE_RE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?: ([\t \x21-\x7e\x80-\xff]*))?\Z")
# RFC 9112 §7.1: chunk-size = 1*HEXDIG; chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ).
CHUNK_SIZE_RE = re.compile(rb"([0-9A-Fa-f]+)((?:[ \t]*;[ \t]*[" + TCHAR + rb"]+(?:[ \t]*=[ \t]*(?:[" + TCHAR + rb"]+|\"(?:[^\"\\\r\n]|\\.)*\"))?)*)[ \t]*\Z")
DIGITS_RE = re.compile(rb"[0-9]+\Z")

MAX_HEAD = 1 << 20  # no real server sends a 1 MiB response head: beyond it, the head is unbounded
RFC1 = "I-RFC-1"
RFC2 = "I-RFC-2"


@dataclass(frozen=True)
class Violation:
    """One framing or header-injection problem found in a response stream."""

    predicate: str  # I-RFC-1 or I-RFC-2
    detail: str
    offset: int  # byte offset in the stream where the problem starts


def is_truncation(v: Violation) -> bool:
    """A response cut off by the connection closing (not malformed bytes): also what a crash leaves."""
    return v.detail.startswith("connection closed inside") or v.detail.startswith("body truncated")


@dataclass
class Response:
    """One parsed response."""

    version: str
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    framing: str  # "content-length" | "chunked" | "close" | "none"
    offset: int
    complete: bool = True

    def header(self, name: bytes) -> bytes | None:
        """First value of a header (case-insensitive), or None."""
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def header_values(self, name: bytes) -> list[bytes]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    @property
    def interim(self) -> bool:
        return 100 <= self.status < 200

    def connection_tokens(self) -> set[bytes]:
        toks: set[bytes] = set()
        for v in self.header_values(b"connection"):
            toks.update(t.strip().lower() for t in v.split(b",") if t.strip())
        return toks


@dataclass
class StreamParse:
    """Everything learned from one connection's received bytes."""

    responses: list[Response] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    incomplete: bytes = b""  # a response still arriving when reading stopped
    upgraded: bool = False  # a 101 switched protocols; bytes after it are not HTTP/1.1
    trailing_garbage: bytes = b""  # bytes where a status line had to start

    @property
    def final_responses(self) -> list[Response]:
        return [r for r in self.responses if not r.interim]


def _parse_head(head: bytes, offset: int, out: StreamParse) -> Response | None:
    """Parse a status line + header block (without the final CRLF CRLF)."""
    lines = head.split(b"\r\n")
    m = STATUS_LINE_RE.match(lines[0])
    if not m:
        out.violations.append(Violation(RFC1, f"malformed status line {lines[0][:80]!r}", offset))
        return None
    if not 100 <= int(m.group(3)) <= 599:
        # RFC 9110 §15: status codes are 100..599.
        out.violations.append(Violation(RFC1, f"status code out of range {lines[0][:80]!r}", offset))
        return None
    headers: list[tuple[bytes, bytes]] = []
    pos = offset + len(lines[0]) + 2
    for line in lines[1:]:
        if b"\x00" in line or b"\r" in line or b"\n" in line:
            # RFC 9110 §5.5: CR, LF and NUL are never allowed in a field value.
            out.violations.append(Violation(RFC2, f"CR/LF/NUL inside response header line {line[:80]!r}", pos))
        if line[:1] in (b" ", b"\t"):
            # RFC 9112 §5.2: a sender MUST NOT generate obs-fold.
            out.violations.append(Violation(RFC2, f"obs-fold in response header {line[:80]!r}", pos))
            if headers:
                k, v = headers[-1]
                headers[-1] = (k, v + b" " + line.strip(b" \t"))
            pos += len(line) + 2
            continue
        name, sep, value = line.partition(b":")
        if not sep or not TOKEN_RE.match(name):
            # RFC 9112 §5: field-line = field-name ":" OWS field-value OWS.
            out.violations.append(Violation(RFC2, f"malformed response header line {line[:80]!r}", pos))
            pos += len(line) + 2
            continue
        headers.append((name, value.strip(b" \t")))
        pos += len(line) + 2
    return Response(
        version=f"{m.group(1).decode()}.{m.group(2).decode()}",
        status=int(m.group(3)),
        reason=m.group(4) or b"",
        headers=headers,
        body=b"",
        framing="none",
        offset=offset,
    )


def _content_length(resp: Response, out: StreamParse) -> int | None:
    """The response's Content-Length, or None; records grammar violations."""
    values = resp.header_values(b"content-length")
    if not values:
        return None
    parts = [p.strip(b" \t") for v in values for p in v.split(b",")]
    if not all(DIGITS_RE.match(p) for p in parts):
        out.violations.append(Violation(RFC1, f"invalid Content-Length {values!r}", resp.offset))
        return -1
    if any(len(p.lstrip(b"0")) > 18 for p in parts):
        out.violations.append(Violation(RFC1, f"absurd Content-Length {values[0][:40]!r}", resp.offset))
        return -1
    if len({int(p) for p in parts}) > 1:
        out.violations.append(Violation(RFC1, f"conflicting Content-Length values {values!r}", resp.offset))
        return -1
    if len(parts) > 1:
        # RFC 9110 §8.6: a sender MUST NOT send a list or several Content-Length fields.
        out.violations.append(Violation(RFC1, f"repeated Content-Length {values!r}", resp.offset))
    return int(parts[0])


def _parse_chunked(data: bytes, pos: int, eof: bool, out: StreamParse, resp: Response) -> int | None:
    """Decode a chunked body starting at pos; return the position after it, None if incomplete,
    or -1 after recording a violation."""
    body = bytearray()
    while True:
        nl = data.find(b"\r\n", pos)
        if nl < 0:
            if eof or len(data) - pos > 65536:
                if b"\n" in data[pos : pos + 65536]:
                    out.violations.append(Violation(RFC1, "chunk-size line not terminated by CRLF", pos))
                elif eof:
                    out.violations.append(Violation(RFC1, "connection closed inside a chunked body", pos))
                else:
                    out.violations.append(Violation(RFC1, "chunk-size line too long", pos))
                return -1
            return None
        line = data[pos:nl]
        m = CHUNK_SIZE_RE.match(line)
        if not m or len(m.group(1).lstrip(b"0")) > 16:
            out.violations.append(Violation(RFC1, f"invalid chunk-size line {line[:60]!r}", pos))
            return -1
        size = int(m.group(1), 16)
        pos = nl + 2
        if size == 0:
            # trailer-section = *( field-line CRLF ) CRLF
            while True:
                nl = data.find(b"\r\n", pos)
                if nl < 0:
                    if eof:
                        out.violations.append(Violation(RFC1, "connection closed inside the trailer section", pos))
                        return -1
                    return None
                line = data[pos:nl]
                if line == b"":
                    resp.body = bytes(body)
                    return nl + 2
                if b"\x00" in line or b"\r" in line or b"\n" in line:
                    out.violations.append(Violation(RFC2, f"CR/LF/NUL inside a trailer line {line[:60]!r}", pos))
                    return -1
                if b":" not in line or not TOKEN_RE.match(line.partition(b":")[0]):
                    out.violations.append(Violation(RFC1, f"malformed trailer line {line[:60]!r}", pos))
                    return -1
                pos = nl + 2
        if len(data) < pos + size + 2:
            if eof:
                out.violations.append(Violation(RFC1, f"connection closed inside a chunk of {size} bytes", pos))
                return -1
            return None
        body += data[pos : pos + size]
        if data[pos + size : pos + size + 2] != b"\r\n":
            out.violations.append(Violation(RFC1, "chunk data not followed by CRLF", pos + size))
            return -1
        pos += size + 2


def parse_response_stream(
    data: bytes, request_methods: list[str] | None = None, eof: bool = True
) -> StreamParse:
    """Split bytes received on one connection into responses and framing violations.

    request_methods lists the methods of the requests sent on the connection, in
    order; it decides which responses carry no body (HEAD). eof says whether the
    server closed the connection (so a close-delimited body is complete and a
    short body is truncated) or reading merely stopped.
    """
    # long: one pass of the RFC 9112 §6.3 message-length rules over the byte stream, in the
    # order the RFC states them; split apart, the precedence between the rules would be lost.
    out = StreamParse()
    methods = list(request_methods or [])
    pos = 0
    n_final = 0
    prev: Response | None = None
    while pos < len(data):
        if prev is not None and b"close" in prev.connection_tokens() and not prev.interim:
            out.violations.append(
                Violation(RFC1, "bytes after a response that announced Connection: close", pos)
            )
            out.trailing_garbage = data[pos:]
            break
        if not data.startswith(b"HTTP/", pos) and not (len(data) - pos < 5 and b"HTTP/".startswith(data[pos:])):
            what = "bytes where a status line must start"
            if prev is not None and (prev.status in (204, 304) or prev.framing == "none"):
                what = f"body bytes after a bodiless {prev.status} response"
            elif prev is not None:
                what = f"bytes beyond the framed body of a {prev.status} response"
            out.violations.append(Violation(RFC1, f"{what}: {data[pos:pos+40]!r}", pos))
            out.trailing_garbage = data[pos:]
            break
        first_nl = data.find(b"\n", pos)
        if first_nl > pos and data[first_nl - 1 : first_nl] != b"\r":
            out.violations.append(Violation(RFC2, "response head uses bare LF line terminators", pos))
            out.trailing_garbage = data[pos:]
            break
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            if b"\n\n" in data[pos : pos + 65536] or (eof and b"\n" in data[pos:] and b"\r\n" not in data[pos:]):
                out.violations.append(Violation(RFC2, "response head uses bare LF line terminators", pos))
                out.trailing_garbage = data[pos:]
            elif eof:
                out.violations.append(Violation(RFC1, "connection closed inside a response head", pos))
                out.trailing_garbage = data[pos:]
            elif len(data) - pos > MAX_HEAD:
                out.violations.append(Violation(RFC1, f"response head longer than {MAX_HEAD} bytes without its end", pos))
                out.trailing_garbage = data[pos:]
            else:
                out.incomplete = data[pos:]
            break
        resp = _parse_head(data[pos:end], pos, out)
        if resp is None:
            out.trailing_garbage = data[pos:]
            break
        pos = end + 4
        method = methods[n_final] if n_final < len(methods) else "GET"
        te = resp.header_values(b"transfer-encoding")
        cl = _content_length(resp, out)
        if te and cl is not None:
            # RFC 9112 §6.2: a sender MUST NOT send Content-Length with Transfer-Encoding.
            out.violations.append(Violation(RFC1, "response carries both Content-Length and Transfer-Encoding", resp.offset))
        if resp.interim or resp.status in (204, 304) or method == "HEAD":
            # RFC 9112 §6.3 rule 1: no body, whatever the headers say.
            if resp.status == 204 or resp.interim:
                if cl is not None:
                    out.violations.append(Violation(RFC1, f"Content-Length on a {resp.status} response", resp.offset))
                if te:
                    out.violations.append(Violation(RFC1, f"Transfer-Encoding on a {resp.status} response", resp.offset))
            resp.framing = "none"
        elif te:
            codings = [c.strip(b" \t").lower() for v in te for c in v.split(b",") if c.strip(b" \t")]
            if codings.count(b"chunked") > 1:
                # RFC 9112 §6.1: a sender MUST NOT apply chunked more than once.
                out.violations.append(Violation(RFC1, f"chunked applied more than once {te!r}", resp.offset))
            if codings and codings[-1] == b"chunked":
                resp.framing = "chunked"
                after = _parse_chunked(data, pos, eof, out, resp)
                if after is None:
                    resp.complete = False
                    out.responses.append(resp)
                    out.incomplete = data[resp.offset :]
                    return out
                if after < 0:
                    resp.complete = False
                    out.responses.append(resp)
                    out.trailing_garbage = data[pos:]
                    return out
                pos = after
            else:
                resp.framing = "close"
                resp.body = data[pos:]
                resp.complete = eof
                pos = len(data)
        elif cl is not None and cl >= 0:
            resp.framing = "content-length"
            if len(data) - pos < cl:
                resp.body = data[pos:]
                resp.complete = False
                out.responses.append(resp)
                if eof:
                    out.violations.append(
                        Violation(RFC1, f"body truncated: Content-Length {cl}, {len(data) - pos} bytes before close", pos)
                    )
                else:
                    out.incomplete = data[resp.offset :]
                return out
            resp.body = data[pos : pos + cl]
            pos += cl
        elif cl is not None:  # invalid Content-Length, already recorded
            out.responses.append(resp)
            out.trailing_garbage = data[pos:]
            return out
        else:
            resp.framing = "close"
            resp.body = data[pos:]
            resp.complete = eof
            pos = len(data)
        out.responses.append(resp)
        if resp.status == 101:
            out.upgraded = True
            break
        if not resp.interim:
            n_final += 1
        prev = resp
    return out
