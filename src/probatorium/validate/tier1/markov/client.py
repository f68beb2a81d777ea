"""A keep-alive HTTP/1.1 client for Markov walkers: one connection, requests as bytes.

Reading is a small incremental framing reader (enough to know where a
response ends: interim 1xx, Content-Length, chunked, HEAD/204/304, close);
the bytes of every response are then judged by the strict
`parse_response_stream`, whose I-RFC-1/I-RFC-2 violations come back in the
result for the walker to report. After a violation the framing can no longer
be trusted, so the connection is dropped.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from ....rawclient import set_nodelay
from ..http1 import Response, Violation, parse_response_stream

CLIENT_MAX_HEAD = 64 * 1024
CLIENT_MAX_BODY = 8 * 1024 * 1024
_CL_RE = re.compile(rb"[0-9]{1,15}\Z")


@dataclass
class HttpResult:
    """One request/response exchange."""

    method: str
    target: str
    sent: bytes = b""
    received: bytes = b""
    status: int | None = None
    response: Response | None = None
    violations: list[Violation] = field(default_factory=list)
    error: str | None = None  # connect/reset/timeout/protocol: no usable response
    elapsed: float = 0.0
    delivered: bool = True  # the bytes reached an open connection (crash attribution: a refused one never did)

    @property
    def body(self) -> bytes:
        return self.response.body if self.response is not None else b""

    def header(self, name: bytes) -> bytes | None:
        return self.response.header(name) if self.response is not None else None

    def header_values(self, name: bytes) -> list[bytes]:
        return self.response.header_values(name) if self.response is not None else []


def build_request(method: str, target: str, host_header: str, headers: list[tuple[str, str]],
                  body: bytes | None) -> bytes:
    """The request bytes: request line, Host, the given headers, framing, body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


def _chunked_end(buf: bytes, pos: int) -> int | None:
    """Where a chunked body starting at pos ends, None if more bytes are needed, -1 if malformed."""
    while True:
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            return -1 if len(buf) - pos > 4096 else None
        size_txt = buf[pos:nl].split(b";", 1)[0].strip(b" \t")
        try:
            size = int(size_txt, 16)
        except ValueError:
            return -1
        pos = nl + 2
        if size == 0:
            while True:  # trailer section, ends with an empty line
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    return None
                if nl == pos:
                    return nl + 2
                pos = nl + 2
        if len(buf) < pos + size + 2:
            return None
        pos += size + 2


def response_end(buf: bytes, method: str) -> tuple[int | None, bool]:
    """(end offset of the first final response or None, close_delimited).

    Malformed framing gives (-1, False): read until the server closes or goes quiet
    and let the strict parser say what is wrong.
    """
    pos = 0
    while True:
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            return (-1, False) if len(buf) - pos > CLIENT_MAX_HEAD else (None, False)
        head = buf[pos:end]
        first, _, rest = head.partition(b"\r\n")
        parts = first.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return -1, False
        status = int(parts[1])
        cl: list[bytes] = []
        te: list[bytes] = []
        for line in rest.split(b"\r\n"):
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                cl.append(value.strip())
            elif lname == b"transfer-encoding":
                te.append(value.strip().lower())
        body_at = end + 4
        if 100 <= status < 200:
            if status == 101:
                return body_at, False
            pos = body_at
            continue
        if status in (204, 304) or method == "HEAD":
            return body_at, False
        if te:
            if te[-1].split(b",")[-1].strip() == b"chunked":
                e = _chunked_end(buf, body_at)
                return (e, False) if e is None or e >= 0 else (-1, False)
            return None, True
        if cl:
            if len(set(cl)) != 1 or not _CL_RE.match(cl[0]):
                return -1, False
            n = int(cl[0])
            if n > CLIENT_MAX_BODY:
                return -1, False
            return (body_at + n, False) if len(buf) >= body_at + n else (None, False)
        return None, True


class H1Connection:
    """One keep-alive connection to the target, reconnected when it closes."""

    def __init__(self, host: str, port: int, *, timeout: float = 10.0, connect_timeout: float = 5.0,
                 held=None, owner: str = "markov") -> None:
        self.host, self.port = host, port
        # validate.tier1.held.HeldStreams: a request for the SSE path counts as a held stream
        # until its response completes or the connection closes (I-CONN-2 compares with it).
        self.held, self.owner, self._holding = held, owner, False
        self.host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._leftover = b""
        self.connects = 0
        self.used = 0  # requests on the current connection

    def _unhold(self) -> None:
        if self._holding:
            self._holding = False
            self.held.release(self.owner)

    async def close(self) -> None:
        self._unhold()
        w, self._reader, self._writer, self._leftover = self._writer, None, None, b""
        if w is not None:
            w.close()
            try:
                await asyncio.wait_for(w.wait_closed(), 1.0)
            except (OSError, asyncio.TimeoutError, ConnectionError):
                pass

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.connect_timeout)
        set_nodelay(self._writer.get_extra_info("socket"))
        self.connects += 1
        self.used = 0
        self._leftover = b""

    async def request(self, method: str, target: str, headers: list[tuple[str, str]] | None = None,
                      body: bytes | None = None) -> HttpResult:
        """Send one request and read its response (one retry when a reused connection was closed)."""
        raw = build_request(method, target, self.host_header, list(headers or []), body)
        res = await self._once(method, target, raw)
        if res.error is not None and res.error.startswith("stale"):
            # The first copy was written: a server that died reading it looks exactly like this.
            first = res.delivered
            res = await self._once(method, target, raw)
            res.delivered = res.delivered or first
        return res

    async def _once(self, method: str, target: str, raw: bytes) -> HttpResult:
        res = HttpResult(method, target, sent=raw, delivered=False)
        t0 = time.monotonic()
        reused = self._writer is not None
        if not await self._send(raw, res, reused):
            res.elapsed = time.monotonic() - t0
            return res
        self.used += 1
        read = await self._read(method, res, reused, t0 + self.timeout)
        res.elapsed = time.monotonic() - t0
        if read is None:  # a stale reused connection, already closed: the caller retries
            return res
        buf, eof, end, close_delimited = read
        res.received = buf
        if not buf:
            if res.error is None:
                res.error = "closed: the server closed the connection without a response"
            await self.close()
            return res
        extra = end is not None and 0 <= end < len(buf)
        _grade(res, buf, method, eof=eof, extra=extra)
        drop = (eof or extra or res.error is not None or bool(res.violations) or close_delimited
                or res.response is None or b"close" in res.response.connection_tokens())
        if drop:
            await self.close()
        else:
            self._unhold()  # the response is complete: the server holds no stream for it
        return res

    async def _send(self, raw: bytes, res: HttpResult, reused: bool) -> bool:
        """Write the request (connecting first when needed); False, with `res.error` set, when it failed."""
        try:
            if self._writer is None:
                await self._connect()
            assert self._reader is not None and self._writer is not None
            self._writer.write(raw)
            if self.held is not None and not self._holding:
                self._holding = self.held.acquire(raw, self.owner)
            await self._writer.drain()
            res.delivered = True
            return True
        except (OSError, asyncio.TimeoutError, ConnectionError) as e:
            await self.close()
            res.error = ("stale connection: " if reused else "connect/send: ") + f"{type(e).__name__}: {e}"
            return False

    async def _read(self, method: str, res: HttpResult, reused: bool,
                    deadline: float) -> tuple[bytes, bool, int | None, bool] | None:
        """Read until one response is framed (or framing is already broken), EOF, the deadline or the
        size bound: (bytes, eof, response_end, close-delimited). None when a reused connection turned
        out closed before any byte of the response (closed, `res.error` says stale)."""
        assert self._reader is not None
        buf = self._leftover
        self._leftover = b""
        eof = False
        end: int | None = None
        close_delimited = False
        while True:
            if buf:
                end, close_delimited = response_end(buf, method)
                if end is not None and end >= 0:
                    break
                if end == -1 and parse_response_stream(buf, [method], eof=False).violations:
                    break  # framing already broken: the strict parser has its answer
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                res.error = "timeout: no complete response within %.1f s" % self.timeout
                break
            try:
                chunk = await asyncio.wait_for(self._reader.read(65536), remaining)
            except asyncio.TimeoutError:
                res.error = "timeout: no complete response within %.1f s" % self.timeout
                break
            except (OSError, ConnectionError) as e:
                if not buf and reused:
                    await self.close()
                    res.error = f"stale connection: {type(e).__name__}: {e}"
                    return None
                res.error = f"reset: {type(e).__name__}: {e}"
                eof = True
                break
            if not chunk:
                eof = True
                if not buf and reused:
                    await self.close()
                    res.error = "stale connection: closed before any response byte"
                    return None
                break
            buf += chunk
            if len(buf) > CLIENT_MAX_BODY + CLIENT_MAX_HEAD:
                res.error = "protocol: response larger than %d bytes" % (CLIENT_MAX_BODY + CLIENT_MAX_HEAD)
                break
        return buf, eof, end, close_delimited


def _grade(res: HttpResult, buf: bytes, method: str, *, eof: bool, extra: bool) -> None:
    """Judge the bytes read for one request with the strict parser: violations, the response, its
    status, and the error when there is no usable response (`extra`: bytes past its framing)."""
    # We never pipeline: bytes beyond the first response's framing are unsolicited, so they
    # are judged as if the connection ended there (eof) and flagged by the strict parser.
    parsed = parse_response_stream(buf, [method], eof=eof or extra)
    res.violations = list(parsed.violations)
    finals = parsed.final_responses
    if len(finals) > 1:
        res.violations.append(Violation("I-RFC-1", f"{len(finals) - 1} unsolicited response(s) after the "
                                        f"response to a single {method}", finals[1].offset))
    if finals and (finals[0].complete or eof):
        res.response = finals[0]
        res.status = finals[0].status
        if res.error and res.error.startswith("reset") and finals[0].complete:
            res.error = None
    elif res.error is None:
        res.error = "protocol: no complete response" + (" before close" if eof else "")
    if res.response is not None and res.response.status == 101:
        res.error = res.error or "protocol: unexpected 101 Switching Protocols"


# ---------------------------------------------------------------------------------------
# Cookie jar (one per walker; one origin, so domain/path attributes are not needed)


@dataclass
class CookieJar:
    cookies: dict[str, str] = field(default_factory=dict)

    def update(self, set_cookie_values: list[bytes]) -> None:
        for raw in set_cookie_values:
            text = raw.decode("latin-1")
            pair, _, attrs = text.partition(";")
            name, eq, value = pair.partition("=")
            name, value = name.strip(), value.strip()
            if not eq or not name:
                continue
            expired = False
            for attr in attrs.split(";"):
                k, _, v = attr.strip().partition("=")
                k = k.strip().lower()
                if k == "max-age":
                    try:
                        expired = int(v.strip()) <= 0
                    except ValueError:
                        pass
                elif k == "expires" and _expired(v):
                    expired = True
            if expired:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def header(self) -> str | None:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items()) or None

    def clear(self) -> None:
        self.cookies.clear()


def _expired(http_date: str) -> bool:
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(http_date.strip()).timestamp() <= time.time()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
