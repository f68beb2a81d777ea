"""A small, strict, incremental HTTP/1.x response parser for the load generator's hot path.

It checks the status line, Content-Length and chunked framing and the
``Connection`` semantics, and nothing more: header values other than the
framing ones are not inspected. Bytes are scanned with C-level ``bytes``
methods (``find``, ``lower``, ``count``); the body is skipped by offset
arithmetic and never copied unless ``keep_body`` is set.

For each complete response the parser calls ``on_response(status, close, body)``
where ``close`` is True when the connection cannot be reused (``Connection:
close``, HTTP/1.0 without keep-alive, or a body delimited by end of stream) and
``body`` is the body bytes when ``keep_body`` is set, else None. Interim (1xx
other than 101) responses are skipped.

Framing violations raise :class:`ParseError`.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["ParseError", "ResponseParser"]


class ParseError(Exception):
    """The response violates HTTP/1.1 framing (counted as a ``protocol`` error)."""


_HEAD = 0
_BODY_CL = 1
_CHUNK_SIZE = 2
_CHUNK_DATA = 3
_CHUNK_CRLF = 4
_TRAILERS = 5
_BODY_EOF = 6

_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")
_MAX_CHUNK_LINE = 4096


def _header_value(lower: bytes, name: bytes) -> tuple[bytes | None, bool]:
    """First value of header ``name`` (lowercase, with leading CRLF and trailing colon),
    and whether it occurs more than once with a different value."""
    i = lower.find(name)
    if i < 0:
        return None, False
    start = i + len(name)
    end = lower.find(b"\r\n", start)
    if end < 0:
        end = len(lower)
    value = lower[start:end].strip(b" \t")
    j = lower.find(name, end)
    conflict = False
    while j >= 0:
        s2 = j + len(name)
        e2 = lower.find(b"\r\n", s2)
        if e2 < 0:
            e2 = len(lower)
        if lower[s2:e2].strip(b" \t") != value:
            conflict = True
            break
        j = lower.find(name, e2)
    return value, conflict


class ResponseParser:
    __slots__ = (
        "_buf",
        "_state",
        "_remaining",
        "_status",
        "_close",
        "_cb",
        "_keep_body",
        "_body",
        "_max_head",
        "no_body",
        "cache",
        "_sink",
        "on_head",
        "stream",
    )

    def __init__(
        self,
        on_response: Callable[[int, bool, bytes | None], None],
        *,
        keep_body: bool = False,
        max_head: int = 65536,
        no_body: bool = False,
    ) -> None:
        self._cb = on_response
        self._keep_body = keep_body
        self._max_head = max_head
        self._buf = b""
        self._state = _HEAD
        self._remaining = 0
        self._status = 0
        self._close = False
        self._body: list[bytes] | None = None
        #: True when the request was HEAD: responses carry no body whatever they declare.
        self.no_body = no_body
        #: head bytes (without the final CRLFCRLF) -> (status, content_length, close) for
        #: final responses framed by Content-Length: lets the caller skip re-parsing a head
        #: it has already validated (benchmarks answer the same head over and over).
        self.cache: dict[bytes, tuple[int, int, bool]] = {}
        #: optional: called with (status, lowercased head) when a final response head is parsed
        self.on_head: Callable[[int, bytes], None] | None = None
        #: optional: called with each piece of body as it arrives (streaming, e.g. SSE)
        self.stream: Callable[[bytes], None] | None = None
        self._sink: Callable[[bytes], None] | None = None

    @property
    def idle(self) -> bool:
        """True between responses (no partial response buffered)."""
        return self._state == _HEAD and not self._buf

    def reset(self) -> None:
        self._buf = b""
        self._state = _HEAD
        self._remaining = 0
        self._body = None

    # -- the hot path -------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Parse the next bytes of the stream, calling ``on_response`` for each response they complete."""
        # long: the byte-level state machine of the hot path, one loop over the states; a call per
        # state and per read would cost the load generator throughput it is there to measure.
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos = 0
        n = len(data)
        while pos < n:
            st = self._state
            if st == _HEAD:
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    if n - pos > self._max_head:
                        raise ParseError("response head too large")
                    self._buf = data[pos:]
                    return
                self._parse_head(data, pos, end)
                pos = end + 4
                st = self._state
                if st == _BODY_CL and self._remaining == 0:
                    self._complete()
                continue
            if st == _BODY_CL or st == _CHUNK_DATA:
                avail = n - pos
                rem = self._remaining
                if avail < rem:
                    if self._sink is not None:
                        self._sink(data[pos:])
                    self._remaining = rem - avail
                    return
                if self._sink is not None:
                    self._sink(data[pos : pos + rem])
                pos += rem
                self._remaining = 0
                if st == _BODY_CL:
                    self._complete()
                else:
                    self._state = _CHUNK_CRLF
                continue
            if st == _CHUNK_SIZE:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if n - pos > _MAX_CHUNK_LINE:
                        raise ParseError("chunk-size line too long")
                    self._buf = data[pos:]
                    return
                line = data[pos:eol]
                semi = line.find(b";")
                if semi >= 0:
                    line = line[:semi]
                line = line.rstrip(b" \t")
                if not line or len(line) > 16 or not _HEXDIGITS.issuperset(line):
                    raise ParseError(f"bad chunk size {data[pos:eol][:40]!r}")
                size = int(line, 16)
                pos = eol + 2
                if size == 0:
                    self._state = _TRAILERS
                else:
                    self._remaining = size
                    self._state = _CHUNK_DATA
                continue
            if st == _CHUNK_CRLF:
                if n - pos < 2:
                    self._buf = data[pos:]
                    return
                if data[pos] != 13 or data[pos + 1] != 10:
                    raise ParseError("chunk data not followed by CRLF")
                pos += 2
                self._state = _CHUNK_SIZE
                continue
            if st == _TRAILERS:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if n - pos > self._max_head:
                        raise ParseError("trailers too large")
                    self._buf = data[pos:]
                    return
                if eol == pos:
                    pos += 2
                    self._complete()
                else:
                    if data.find(b":", pos, eol) < 0:
                        raise ParseError("malformed trailer line")
                    pos = eol + 2
                continue
            # _BODY_EOF: everything until the peer closes belongs to the body.
            if self._sink is not None:
                self._sink(data[pos:])
            return

    def feed_eof(self) -> bool:
        """The peer closed. Returns True if that completed a response (read-until-close
        body). Raises ParseError if a response was cut short."""
        if self._state == _BODY_EOF:
            self._complete()
            return True
        if self._state == _HEAD and not self._buf:
            return False
        raise ParseError("connection closed in the middle of a response")

    # -- helpers ---------------------------------------------------------------------------
    def _parse_head(self, data: bytes, pos: int, end: int) -> None:
        if data[pos : pos + 7] != b"HTTP/1." or data[pos + 8] != 32:
            raise ParseError(f"bad status line {data[pos:pos + 40]!r}")
        minor = data[pos + 7]
        if minor != 49 and minor != 48:  # '1' / '0'
            raise ParseError(f"unsupported HTTP version {data[pos:pos + 8]!r}")
        code = data[pos + 9 : pos + 12]
        if len(code) != 3 or not code.isdigit() or (end > pos + 12 and data[pos + 12] not in (32, 13)):
            raise ParseError(f"bad status code {data[pos:pos + 40]!r}")
        status = int(code)
        if status < 100:
            raise ParseError(f"bad status code {status}")
        head = data[pos:end]
        lower = head.lower()
        if lower.count(b"\n") != lower.count(b"\r\n"):
            raise ParseError("bare LF in response head")
        if 100 <= status < 200:
            if status == 101:
                raise ParseError("unexpected 101 Switching Protocols")
            # interim response: skip it, the final one follows
            self._state = _HEAD
            return
        conn, _ = _header_value(lower, b"\r\nconnection:")
        if minor == 49:
            close = conn is not None and b"close" in conn
        else:
            close = conn is None or b"keep-alive" not in conn
        te, _ = _header_value(lower, b"\r\ntransfer-encoding:")
        cl, cl_conflict = _header_value(lower, b"\r\ncontent-length:")
        self._status = status
        self._body = [] if self._keep_body else None
        self._sink = self.stream if self.stream is not None else (
            self._body.append if self._body is not None else None)
        if self.on_head is not None:
            self.on_head(status, lower)
        if self.no_body or status == 204 or status == 304:
            if status == 204 and (cl is not None and cl != b"0"):
                raise ParseError("204 response with a non-zero Content-Length")
            self._close = close
            self._state = _BODY_CL
            self._remaining = 0
            return
        if te is not None:
            if cl is not None:
                raise ParseError("both Transfer-Encoding and Content-Length")
            if te.rsplit(b",", 1)[-1].strip() == b"chunked":
                self._close = close
                self._state = _CHUNK_SIZE
                return
            self._close = True
            self._state = _BODY_EOF
            return
        if cl is not None:
            if cl_conflict:
                raise ParseError("conflicting Content-Length headers")
            if not cl.isdigit() or len(cl) > 18:
                raise ParseError(f"bad Content-Length {cl[:40]!r}")
            self._close = close
            self._state = _BODY_CL
            self._remaining = int(cl)
            if not self.no_body:
                cache = self.cache
                if len(cache) >= 256:
                    cache.clear()
                cache[head] = (status, self._remaining, close)
            return
        self._close = True
        self._state = _BODY_EOF

    def _complete(self) -> None:
        body = self._body
        self._state = _HEAD
        self._remaining = 0
        self._body = None
        self._cb(self._status, self._close, b"".join(body) if body is not None else None)
