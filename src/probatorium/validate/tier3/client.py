"""Tier 3's HTTP/1.1 connection: one keep-alive connection per workload connection id.

Unlike the Markov client it never retries a request that may have reached the server (a
request cut by a fault must be seen as cut: I-T3-DRAIN, I-T3-LOST-WRITE read exactly that);
it only reconnects before reusing a connection the server already closed. Framing is read
with the Markov client's incremental reader and parsed by the strict grammar of
:mod:`..tier1.http1`. A request body can be sent in two halves with a pause between them, so
the request is in flight across a fault.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from ...rawclient import set_nodelay
from ..tier1.http1 import parse_response_stream
from ..tier1.markov.client import build_request, response_end

MAX_RESPONSE = 1 << 21


@dataclass
class Answer:
    """What one request got: a status and body, or the error that stood in for them."""

    status: int | None = None
    body: bytes = b""
    error: str | None = None
    sent_at: float | None = None  # clock time the first byte was written (None: never sent)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class Conn:
    """One workload connection; ``address()`` is read at each (re)connect, so it follows restarts."""

    def __init__(self, address: Callable[[], tuple[str, int]], clock: Callable[[], float], *,
                 timeout_s: float = 5.0, connect_timeout_s: float = 3.0) -> None:
        self.address, self.clock = address, clock
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        w, self._reader, self._writer = self._writer, None, None
        if w is not None:
            w.close()
            try:
                await asyncio.wait_for(w.wait_closed(), 1.0)
            except (OSError, asyncio.TimeoutError, ConnectionError):
                pass

    def abort(self) -> None:
        """Drop the connection at once (a cancelled request: nothing more is read from it)."""
        w, self._reader, self._writer = self._writer, None, None
        if w is not None:
            w.transport.abort()

    async def _ensure(self) -> None:
        if self._writer is not None and (self._writer.is_closing() or self._reader.at_eof()):
            await self.close()  # the server closed it while idle: reconnect, nothing was sent
        if self._writer is None:
            host, port = self.address()
            self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                                self.connect_timeout_s)
            set_nodelay(self._writer.get_extra_info("socket"))

    async def request(self, method: str, target: str, body: bytes | None = None, split_s: float = 0.0,
                      headers: list[tuple[str, str]] | None = None) -> Answer:
        """Send one request (the body's second half ``split_s`` after the first) and read its response;
        ``headers`` replace the default ``Content-Type: application/octet-stream`` of a body."""
        ans = Answer()
        try:
            await asyncio.wait_for(self._ensure(), self.connect_timeout_s + 0.5)
        except (OSError, asyncio.TimeoutError, ConnectionError) as e:
            await self.close()
            ans.error = f"connect: {type(e).__name__}: {e}"
            return ans
        host, port = self.address()
        if headers is None:
            headers = [("Content-Type", "application/octet-stream")] if body is not None else []
        raw = build_request(method, target, f"{host}:{port}", headers, body)
        cut = len(raw) - len(body) // 2 if (body and split_s > 0) else len(raw)
        try:
            ans.sent_at = self.clock()
            await self._write(raw[:cut])
            if cut < len(raw):
                await asyncio.sleep(split_s)
                await self._write(raw[cut:])
            await self._read(method, ans)
        except (OSError, ConnectionError, asyncio.TimeoutError) as e:
            ans.error = f"reset: {type(e).__name__}: {e}" if not isinstance(e, asyncio.TimeoutError) \
                else f"timeout: no complete response within {self.timeout_s:.1f} s"
        if ans.error is not None:
            await self.close()
        return ans

    async def _write(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        await asyncio.wait_for(self._writer.drain(), self.timeout_s)

    async def _read(self, method: str, ans: Answer) -> None:
        assert self._reader is not None
        buf, eof = b"", False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while True:
            end, close_delimited = response_end(buf, method) if buf else (None, False)
            if (end is not None and end != -1) or eof or len(buf) > MAX_RESPONSE:
                break
            chunk = await asyncio.wait_for(self._reader.read(65536), max(0.0, deadline - loop.time()))
            if not chunk:
                eof = True
            buf += chunk
        finals = parse_response_stream(buf, [method], eof=True).final_responses
        if not finals or not finals[0].complete:
            ans.error = "closed: the connection ended before a complete response" if eof else \
                "protocol: no complete response"
            return
        ans.status, ans.body, ans.headers = finals[0].status, finals[0].body, finals[0].headers
        if eof or close_delimited or b"close" in finals[0].connection_tokens():
            await self.close()
