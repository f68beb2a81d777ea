"""One HTTP/1.1 load connection (an asyncio protocol) and the load generator's clock.

Shared by the plain HTTP worker (`worker.py`) and the WebSocket / SSE drivers
(`streams.py`, which subclass `Conn`); kept apart from both so neither imports
the other's module for it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from probatorium.loadgen.parser import ParseError, ResponseParser
from probatorium.rawclient import set_nodelay

if TYPE_CHECKING:
    from probatorium.loadgen.worker import Worker

#: CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine, so all
#: workers share one absolute start time and one open-loop schedule.
now_ns = time.monotonic_ns


class Conn(asyncio.Protocol):
    """One TCP connection. Sends one request at a time (no pipelining)."""

    __slots__ = ("w", "tr", "parser", "busy", "t0", "t_sent", "closing", "served", "lost", "failed", "_write", "cache")

    def __init__(self, w: "Worker") -> None:
        self.w = w
        self.tr: asyncio.Transport | None = None
        self.parser = ResponseParser(self._on_response, keep_body=w.cfg.expect_body is not None,
                                     no_body=w.cfg.method == "HEAD")
        # shared by all connections of the worker; never used when bodies are validated
        self.cache = self.parser.cache = w.head_cache if w.expect_body is None else {}
        self.busy = False
        self.t0 = 0  # latency origin: send time (closed loop) or intended time (open loop)
        self.t_sent = 0  # actual send time (request timeout runs from here)
        self.closing = False
        self.served = 0
        self.failed = False
        self.lost: asyncio.Future[None] = w.loop.create_future()
        self._write = None

    # -- asyncio callbacks ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.tr = transport  # type: ignore[assignment]
        self._write = transport.write  # type: ignore[attr-defined]
        set_nodelay(transport.get_extra_info("socket"))
        self.w.live.add(self)
        self.w.next_request(self)

    def data_received(self, data: bytes) -> None:
        # Fast paths: the whole response in one read, with a head seen (and validated)
        # before: (1) the same head as the worker's last fast response and the same
        # total length (one memcmp); (2) a head in the cache of validated heads.
        w = self.w
        if self.busy and self.parser.idle:
            now = 0
            if len(data) == w.fast_len and data.startswith(w.fast_head):
                now = now_ns()
                bad, close = w.fast_bad, w.fast_close
            else:
                end = data.find(b"\r\n\r\n")
                info = self.cache.get(data[:end]) if end > 0 else None
                if info is not None and len(data) == end + 4 + info[1]:
                    now = now_ns()
                    status = info[0]
                    bad = status >= w.status_floor and not w.cfg.status_ok(status)
                    close = info[2] or w.close_mode
                    if self.cache is w.head_cache:
                        w.fast_head, w.fast_len, w.fast_bad, w.fast_close = data[: end + 4], len(data), bad, close
            if now:
                t0 = self.t0
                us = (now - t0) // 1000
                if w.cur_start <= t0 < w.cur_end:  # Worker.record, inline: the hottest path
                    w.cur.append(us)
                else:
                    w.record_slow(t0, us)
                if bad:
                    w.error("status", t0)
                self.served += 1
                if close:
                    self.busy = False
                    self.closing = True
                    self.tr.close()  # type: ignore[union-attr]
                elif w.closed_sending:
                    # closed loop: the next request goes out now, on the same clock reading
                    self.t0 = self.t_sent = now
                    self._write(w.request)  # type: ignore[misc]
                else:
                    self.busy = False
                    w.next_request(self)
                return
        try:
            self.parser.feed(data)
        except ParseError:
            self._fail("protocol")
            return
        if not self.busy and not self.closing:
            self.w.next_request(self)

    def eof_received(self) -> bool:
        try:
            self.parser.feed_eof()
        except ParseError:
            self._fail("protocol")
            return False
        if self.busy:
            self._fail("reset")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        w = self.w
        w.live.discard(self)
        try:
            w.idle.remove(self)
        except ValueError:
            pass
        if self.busy:
            # the request in flight is lost: reset by the peer, or cut short
            cls = "reset" if (exc is not None or self.parser.idle) else "protocol"
            self.busy = False
            self.failed = True
            w.error(cls, self.t0)
        if not self.lost.done():
            self.lost.set_result(None)

    # -- hot path ---------------------------------------------------------------------------
    def send(self, t0: int) -> None:
        self.busy = True
        self.t0 = t0
        self.t_sent = now_ns()
        self._write(self.w.request)  # type: ignore[misc]

    def _on_response(self, status: int, close: bool, body: bytes | None) -> None:
        if not self.busy:
            raise ParseError("unsolicited response")
        now = now_ns()
        self.busy = False
        self.served += 1
        w = self.w
        t0 = self.t0
        w.record(t0, (now - t0) // 1000)
        if status >= w.status_floor and not w.cfg.status_ok(status):
            w.error("status", t0)
        elif w.expect_body is not None and body != w.expect_body:
            w.error("protocol", t0)
        if close or w.close_mode:
            self.closing = True
            self.tr.close()  # type: ignore[union-attr]

    def _fail(self, cls: str) -> None:
        if self.busy:
            self.busy = False
            self.failed = True
            self.w.error(cls, self.t0)
        elif cls == "protocol":
            self.failed = True
            self.w.error(cls, now_ns())
        self.closing = True
        if self.tr is not None:
            self.tr.abort()
