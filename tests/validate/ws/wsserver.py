"""A tiny asyncio RFC 6455 echo server for the ws slice tests, strict unless told to misbehave.

Written for these tests only (frames come apart with probatorium's own parse_frames;
the protocol checks below are independent of the slice's grading).

Modes:
  strict         validates handshake and frames and closes with the RFC's code
  echo_invalid   echoes text frames without checking UTF-8 (planted bug: acts on a bad frame)
  hang           ignores every bad frame and never closes (planted bug: hang)
  drop           drops TCP without a close frame on any bad frame
  skip           silently skips frames with RSV bits or reserved opcodes and goes on (acts on bad frames)
  keep_open      answers every close frame but never ends TCP (hang after the close handshake)
  no_endpoint    answers 404 to every request
  bad_accept     answers 101 with a wrong Sec-WebSocket-Accept
  no_version_header  refuses an unsupported version with 426 but no Sec-WebSocket-Version (RFC 6455 §4.4)
  http10_ok      upgrades an HTTP/1.0 handshake (RFC 6455 §4.2.1 item 1)
  buffer_after_close  sends close 1009 for an oversize message, then keeps reading and buffering it
                 (RFC 6455 §7.1.7)
"""

from __future__ import annotations

import asyncio
import base64
import struct

from probatorium.validate.tier1.ws import frames as F

MAX_MESSAGE = 16 << 20


def _close(code: int, reason: bytes = b"") -> bytes:
    return F.encode_frame(F.OP_CLOSE, struct.pack("!H", code) + reason, mask=False)


def _valid_close_code(code: int) -> bool:
    return (1000 <= code <= 1003 or 1007 <= code <= 1014) or 3000 <= code <= 4999


class WsServer:
    def __init__(self, mode: str = "strict") -> None:
        self.mode = mode
        self.port = 0
        self.server: asyncio.base_events.Server | None = None
        self.connections = 0
        self.kept = 0

    async def start(self) -> "WsServer":
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    # ---- handshake
    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ")[0]
            h = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k:
                    h[k.strip().lower()] = v.strip()
            if self.mode == "no_endpoint":
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found")
                await writer.drain()
                return
            key = h.get("sec-websocket-key", "")
            try:
                key_ok = len(base64.b64decode(key, validate=True)) == 16
            except ValueError:
                key_ok = False
            if h.get("sec-websocket-version") != "13":
                advertise = b"" if self.mode == "no_version_header" else b"Sec-WebSocket-Version: 13\r\n"
                writer.write(b"HTTP/1.1 426 Upgrade Required\r\n" + advertise + b"Content-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
                await writer.drain()
                return
            http11 = lines[0].endswith(" HTTP/1.1") or self.mode == "http10_ok"
            if method != "GET" or not http11 or not key_ok or h.get("upgrade", "").lower() != "websocket" \
                    or "upgrade" not in h.get("connection", "").lower():
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            accept = F.accept_value(key if self.mode != "bad_accept" else key[::-1])
            writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
            await writer.drain()
            await self._frames(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    # ---- frames
    async def _frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        frag: tuple[int, bytes] | None = None  # (opcode, data so far) of an open fragmented message

        async def keep_open() -> None:
            while await reader.read(65536):  # the close handshake is done: read on, never end TCP
                pass
            raise ConnectionError

        async def fail(code: int) -> None:
            if self.mode == "keep_open":
                writer.write(_close(code))
                await writer.drain()
                await keep_open()
            if self.mode == "hang":
                while await reader.read(65536):  # keep reading, never answer
                    pass
                raise ConnectionError
            if self.mode == "drop":
                raise ConnectionError
            if self.mode == "buffer_after_close" and code == 1009:
                writer.write(_close(code))
                await writer.drain()
                kept = bytearray()
                while len(kept) < (96 << 20):  # bounded: the planted defect buffers what it failed
                    more = await reader.read(1 << 20)
                    if not more:
                        break
                    kept += more
                self.kept = len(kept)
                raise ConnectionError
            writer.write(_close(code))
            await writer.drain()
            raise ConnectionError

        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            buf += chunk
            # header-level checks before the payload is all there
            if len(buf) >= 10 and buf[1] & 0x7F == 127:
                n = struct.unpack("!Q", buf[2:10])[0]
                if n >> 63:
                    await fail(1002)
                if n > MAX_MESSAGE:
                    await fail(1009)
            p = F.parse_frames(buf)
            buf = buf[p.consumed:]
            for f in p.frames:
                if not f.complete:
                    break
                if self.mode == "skip" and (f.rsv or f.opcode not in F.DATA_OPCODES | F.CONTROL_OPCODES):
                    continue
                if not f.masked or f.rsv:
                    await fail(1002)
                if f.opcode in F.CONTROL_OPCODES:
                    if not f.fin or f.length > 125:
                        await fail(1002)
                    if f.opcode == F.OP_PING:
                        writer.write(F.encode_frame(F.OP_PONG, f.payload, mask=False))
                    elif f.opcode == F.OP_CLOSE:
                        if len(f.payload) == 1:
                            await fail(1002)
                        if len(f.payload) >= 2:
                            if not _valid_close_code(f.close_code):
                                await fail(1002)
                            if not F.valid_utf8(f.payload[2:]):
                                await fail(1007)
                        writer.write(_close(f.close_code or 1000))
                        await writer.drain()
                        if self.mode == "keep_open":
                            await keep_open()
                        return
                    continue
                if f.opcode not in F.DATA_OPCODES:
                    await fail(1002)
                if f.opcode == F.OP_CONT:
                    if frag is None:
                        await fail(1002)
                    frag = (frag[0], frag[1] + f.payload)
                else:
                    if frag is not None:
                        await fail(1002)
                    frag = (f.opcode, f.payload)
                if f.fin:
                    op, data = frag
                    frag = None
                    if op == F.OP_TEXT and not F.valid_utf8(data) and self.mode != "echo_invalid":
                        await fail(1007)
                    writer.write(F.encode_frame(op, data, mask=False))
            await writer.drain()
