"""WebSocket echo and SSE fan-out drivers, on the same workers, histograms and JSON.

- ``kind="ws"``: each connection does the RFC 6455 handshake, then sends a masked
  text frame of ``ws_message`` and waits for the echo (same payload); one message
  in flight per connection. ``requests`` = echoed messages, latency = round trip
  (from the send in the closed loop, from the intended time in the open loop).
- ``kind="sse"``: each connection is one subscriber (GET, ``Accept:
  text/event-stream``); ``requests`` = events delivered. When an event's ``data``
  is an epoch timestamp in seconds (a number, or JSON with ``"ts"``), its delivery
  lag (now - ts) goes into the histogram; events without one are counted only
  (``events_untimed``).
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import TYPE_CHECKING

from probatorium.loadgen.config import LoadConfig, parse_url
from probatorium.loadgen.conn import Conn
from probatorium.loadgen.conn import now_ns as _now
from probatorium.loadgen.parser import ParseError
from probatorium.rawclient import set_nodelay
from probatorium.wsframe import accept_value, decode_header, encode_frame

if TYPE_CHECKING:
    from probatorium.loadgen.worker import Worker

MAX_FRAME = 16 * 1024 * 1024


def ws_handshake(cfg: LoadConfig) -> tuple[bytes, bytes]:
    """(request bytes, expected Sec-WebSocket-Accept value, lowercased)."""
    host, port, path = parse_url(cfg.url)
    key = base64.b64encode(os.urandom(16))
    accept = accept_value(key.decode()).lower().encode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key.decode()}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in cfg.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), accept


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame. The mask is drawn once per run and reused for the
    pre-built frame (servers must unmask, none may rely on the key's freshness)."""
    return encode_frame(opcode, payload, mask_key=os.urandom(4))


def sse_request(cfg: LoadConfig) -> bytes:
    host, port, path = parse_url(cfg.url)
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream", "Cache-Control: no-cache"]
    lines += [f"{k}: {v}" for k, v in cfg.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _setup(conn: Conn, transport) -> None:
    conn.tr = transport
    conn._write = transport.write
    set_nodelay(transport.get_extra_info("socket"))
    conn.w.live.add(conn)


class WsConn(Conn):
    __slots__ = ("is_open", "rbuf")

    def __init__(self, w: "Worker") -> None:
        super().__init__(w)
        self.is_open = False
        self.rbuf = b""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        _setup(self, transport)
        self._write(self.w.ws_handshake)

    def data_received(self, data: bytes) -> None:
        w = self.w
        buf = self.rbuf + data if self.rbuf else data
        self.rbuf = b""
        if not self.is_open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    self._handshake_failed()
                else:
                    self.rbuf = buf
                return
            head = buf[:end].lower()
            if not head.startswith(b"http/1.1 101") or w.ws_accept not in head:
                self._handshake_failed(head)
                return
            self.is_open = True
            buf = buf[end + 4:]  # the first message goes out below, once
        pos = 0
        n = len(buf)
        while True:
            head = decode_header(buf, pos)
            if head is None:
                break
            fin, _, op, masked, ln, hdr = head
            if masked or ln > MAX_FRAME:
                self._fail("protocol")  # servers must not mask; a frame this big is no echo
                return
            if n - pos < hdr + ln:
                break
            payload = buf[pos + hdr:pos + hdr + ln]
            pos += hdr + ln
            if op in (1, 2):
                if not fin or not self.busy:
                    self._fail("protocol")  # fragmented or unsolicited
                    return
                self._echoed(payload)
            elif op == 9:
                self._write(ws_frame(payload, 10))
            elif op == 8:
                if self.busy:
                    self._fail("reset")
                self.closing = True
                self.tr.close()  # type: ignore[union-attr]
                return
            elif op != 10:
                self._fail("protocol")
                return
        if pos < n:
            self.rbuf = buf[pos:]
        if not self.busy and not self.closing:
            w.next_request(self)

    def _handshake_failed(self, head: bytes = b"") -> None:
        w = self.w
        code = head[9:12]
        w.error("status" if code.isdigit() and int(code) >= 400 else "protocol", _now())
        self.failed = True
        self.closing = True
        self.tr.abort()  # type: ignore[union-attr]

    def _echoed(self, payload: bytes) -> None:
        now = _now()
        w = self.w
        self.busy = False
        self.served += 1
        t0 = self.t0
        us = (now - t0) // 1000
        if w.cur_start <= t0 < w.cur_end:
            w.cur.append(us)
        else:
            w.record_slow(t0, us)
        if payload != w.ws_payload:
            w.error("protocol", t0)

    def eof_received(self) -> bool:
        if self.busy:
            self._fail("reset")
        return False


def _event_ts(data: bytes) -> float | None:
    try:
        return float(data)
    except ValueError:
        pass
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    if isinstance(obj, dict):
        ts = obj.get("ts")
        if isinstance(ts, (int, float)):
            return float(ts)
    return None


class SseConn(Conn):
    __slots__ = ("sbuf", "ok")

    def __init__(self, w: "Worker") -> None:
        super().__init__(w)
        self.sbuf = b""
        self.ok = False
        self.parser.on_head = self._on_head
        self.parser.stream = self._on_chunk

    def connection_made(self, transport) -> None:  # type: ignore[override]
        _setup(self, transport)
        self.busy = True  # waiting for the response head
        self.t0 = self.t_sent = _now()
        self._write(self.w.request)

    def _on_head(self, status: int, lower: bytes) -> None:
        w = self.w
        self.busy = False  # a stream has no request timeout once it is open
        if status >= 400 or not w.cfg.status_ok(status):
            w.error("status", _now())
            self.failed = True
        elif b"text/event-stream" not in lower:
            w.error("protocol", _now())
            self.failed = True
        else:
            self.ok = True

    def _on_chunk(self, piece: bytes) -> None:
        if not self.ok:
            return
        buf = (self.sbuf + piece) if self.sbuf else piece
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        w = self.w
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            block = buf[start:end]
            start = end + 2
            data = [ln[5:].lstrip(b" ") for ln in block.split(b"\n") if ln.startswith(b"data:")]
            if not data or not w.started:
                continue  # comment / keep-alive, or before the start (no window)
            now = _now()
            ts = _event_ts(b"\n".join(data))
            if ts is None or not w.sending:
                if w.sending:
                    w.events_untimed_phase(now)
                continue
            us = int((time.time() - ts) * 1e6)
            if w.cur_start <= now < w.cur_end:
                w.cur.append(us)
            else:
                w.record_slow(now, us)
        self.sbuf = buf[start:]

    def _on_response(self, status: int, close: bool, body: bytes | None) -> None:
        # the stream ended; the slot loop reconnects
        self.busy = False
        self.closing = True
        if self.tr is not None:
            self.tr.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
        except ParseError:
            self._fail("protocol")
        if not self.ok and self.failed and self.tr is not None and not self.closing:
            self.closing = True
            self.tr.close()


def conn_factory(kind: str):
    return {"http": Conn, "ws": WsConn, "sse": SseConn}[kind]
