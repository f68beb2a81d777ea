"""Tiny stdlib HTTP/1.1 servers on 127.0.0.1 for the loadgen tests (one thread per connection)."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading
import time


class Server:
    """mode: ok | status500 | garbage | reset | stall.

    ``stall``: after ``stall_after`` requests, every response is held until
    ``stall_s`` seconds after that moment (a global pause, like a GC pause).
    """

    BODY = b"Hello, World!"

    def __init__(self, mode: str = "ok", stall_after: int = 0, stall_s: float = 0.0) -> None:
        self.mode = mode
        self.stall_after = stall_after
        self.stall_s = stall_s
        self.stall_until = 0.0
        self.count = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.closed = False
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                if self.mode == "ws":
                    self._ws(c, head, buf)
                    return
                if self.mode == "sse":
                    self._sse(c)
                    return
                with self.lock:
                    self.count += 1
                    n = self.count
                    if self.mode == "stall" and n == self.stall_after:
                        self.stall_until = time.monotonic() + self.stall_s
                    until = self.stall_until
                if self.mode == "reset":
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    c.close()
                    return
                if self.mode == "garbage":
                    c.sendall(b"HELLO THIS IS NOT HTTP\r\n\r\n")
                    continue
                wait = until - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                status = b"500 Internal Server Error" if self.mode == "status500" else b"200 OK"
                c.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n" + self.BODY)
        except OSError:
            return
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _ws(self, c: socket.socket, head: bytes, buf: bytes) -> None:
        key = next(l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:"))
        acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        while True:
            while True:
                if len(buf) >= 2:
                    ln = buf[1] & 0x7F
                    hdr = 2 + (2 if ln == 126 else 8 if ln == 127 else 0) + 4
                    if len(buf) >= hdr:
                        if ln == 126:
                            ln = int.from_bytes(buf[2:4], "big")
                        elif ln == 127:
                            ln = int.from_bytes(buf[2:10], "big")
                        if len(buf) >= hdr + ln:
                            break
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            mask = buf[hdr - 4:hdr]
            payload = bytes(b ^ mask[i & 3] for i, b in enumerate(buf[hdr:hdr + ln]))
            op = buf[0] & 0x0F
            buf = buf[hdr + ln:]
            if op == 8:
                return
            n = len(payload)
            fh = bytes([0x80 | op]) + (bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big"))
            c.sendall(fh + payload)

    def _sse(self, c: socket.socket) -> None:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        i = 0
        while not self.closed:
            i += 1
            ev = b": keep-alive\n\n" if i % 10 == 0 else b"data: %.6f\n\n" % time.time()
            c.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
            time.sleep(0.01)

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
