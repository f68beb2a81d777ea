#!/usr/bin/env python3
"""A key/value HTTP/1.1 server for Tier 3 tests, strict and durable by default, with PLANTED bugs.

Stdlib only, one file, one thread per connection::

    python tests/servers/kvserver.py --port 0 [--data FILE | --backend redis[://HOST:PORT/DB]]
        [--bug NAME ...] [--list-bugs]

Once listening it prints ``ready addr=127.0.0.1:PORT`` (flushed). The contract is
the key/value one of the shared spec (§3), described by ``kvserver.openapi.yaml``:

* ``PUT /kv/{key}`` (body = value) → 201 when the key was absent, 200 when it was
  replaced — only once the write is durable: with ``--data FILE`` the write is
  appended to FILE and fsynced before the answer; without ``--data`` state lives in
  memory only (a SIGKILL loses it: run Tier 3 without ``--durable`` then).
* With ``--backend redis`` (the address from ``$REDIS_URL``, what ``--services redis`` hands a
  target) or ``--backend redis://HOST:PORT/DB``, the state lives in that Redis instead, spoken
  in RESP over raw sockets from a small pool: ``SET key value GET`` (201 when the old value was
  nil), ``GET``, ``DEL``. A 2xx is sent only after Redis answered (durable when Redis is: Tier 3
  starts it with ``appendfsync always``). A backend that does not answer (refused, reset, 3 s
  without a reply) gives 503 and that connection is dropped (a pooled one that fails is retried
  once on a new connection), so the server recovers by itself once Redis is back.
  ``/healthz`` does not touch the backend (like the driver refapps'). Startup fails with one
  line when Redis cannot be reached.
* ``GET /kv/{key}`` → 200 + exactly the value, 404 if absent;
  ``DELETE /kv/{key}`` → 204, or 404 if absent (deletes are logged and fsynced too).
* ``GET /healthz`` → ``ok``; ``GET /debug/vars`` → JSON ``sse_open``, ``ws_open``,
  ``tasks`` (live threads), ``requests``, ``keys``.
* Keys: 1 to 128 characters of ``[A-Za-z0-9._-]`` (else 400).

Strict behaviour under faults:

* SIGTERM / SIGINT: stop accepting, let every request whose head was read finish
  (its response carries ``Connection: close``), close idle keep-alive connections,
  exit 0 within 10 s.
* EMFILE / ENFILE on ``accept`` (an fd squeeze): wait 50 ms and accept again.
* SIGSTOP / SIGCONT: nothing to do; the server carries on.
* Startup replays FILE (a torn last line from a kill mid-write is ignored).

Planted bugs (``--bug NAME``, repeatable or comma-separated; ``--list-bugs``):
"""

from __future__ import annotations

import argparse
import base64
import errno
import json
import os
import re
import signal
import socket
import sys
import threading
import time

BUGS = {
    "ack-before-durable": "acknowledges a write before it is on disk: the log is fsynced by a background "
                          "thread every 3 s, so a SIGKILL loses the writes acknowledged since",
    "no-recover-after-stop": "after SIGSTOP/SIGCONT its clock-jump watchdog deadlocks the store: every "
                             "request (health included) hangs forever",
    "accept-dies-on-emfile": "the accept loop exits on EMFILE: once fds run short the server never "
                             "accepts again (the process stays up)",
    "drop-on-term": "on SIGTERM closes every connection at once, requests in flight included, and exits",
    "5xx": "answers every 7th GET /kv/{key} with 500 (no fault needed)",
    "backend-never-reconnects": "(--backend only) one backend connection, opened at startup: once it breaks "
                                "(the backend restarted) it is never re-established, every /kv request "
                                "answers 503 for good",
}
__doc__ += "".join(f"\n{name}\n    {text}\n" for name, text in BUGS.items())

#: no-recover-after-stop: a watchdog gap this long means the process was stopped (plans stop it
#: for 300-800 ms).
STOP_GAP_S = 0.25

KEY_RE = re.compile(r"[A-Za-z0-9._-]{1,128}\Z")
MAX_BODY = 1 << 20
REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 413: "Content Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}
BACKEND_TIMEOUT_S = 3.0


class Store:
    """The key/value state and its append-only log (one JSON line per mutation)."""

    def __init__(self, path: str | None, lazy_fsync: bool) -> None:
        self.data: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.path, self.lazy = path, lazy_fsync
        self.log = None
        if path:
            self._replay(path)
            self.log = open(path, "ab")
        if self.lazy and self.log is not None:
            threading.Thread(target=self._flusher, daemon=True).start()

    def _replay(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        break  # a torn last line: the write was never acknowledged
                    if rec["op"] == "put":
                        self.data[rec["k"]] = base64.b64decode(rec["v"])
                    else:
                        self.data.pop(rec["k"], None)
        except FileNotFoundError:
            pass

    def _append(self, rec: dict) -> None:
        if self.log is None:
            return
        line = (json.dumps(rec) + "\n").encode()
        if self.lazy:
            self._pending = getattr(self, "_pending", b"") + line  # BUG: acknowledged before it is written
            return
        self.log.write(line)
        self.log.flush()
        os.fsync(self.log.fileno())

    def _flusher(self) -> None:
        while True:
            time.sleep(3.0)
            with self.lock:
                pending, self._pending = getattr(self, "_pending", b""), b""
                if pending:
                    self.log.write(pending)
                    self.log.flush()
                    os.fsync(self.log.fileno())

    def put(self, key: str, value: bytes) -> bool:
        """Store durably; True when the key was created."""
        with self.lock:
            self._append({"op": "put", "k": key, "v": base64.b64encode(value).decode()})
            created = key not in self.data
            self.data[key] = value
            return created

    def delete(self, key: str) -> bool:
        with self.lock:
            if key not in self.data:
                return False
            self._append({"op": "del", "k": key})
            del self.data[key]
            return True

    def get(self, key: str) -> bytes | None:
        with self.lock:
            return self.data.get(key)

    def size(self) -> int | None:
        return len(self.data)


class BackendDown(Exception):
    """The backend did not answer: the request gets 503."""


class Resp:
    """One RESP2 connection to Redis (requests are arrays of bulk strings)."""

    def __init__(self, host: str, port: int, db: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=BACKEND_TIMEOUT_S)
        self.rf = self.sock.makefile("rb")
        if db:
            self.call(b"SELECT", str(db).encode())

    def call(self, *args: bytes):
        out = [b"*%d\r\n" % len(args)] + [b"$%d\r\n%s\r\n" % (len(a), a) for a in args]
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self):
        line = self.rf.readline(65536)
        if not line.endswith(b"\r\n"):
            raise ConnectionError("the backend closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise BackendDown(f"redis error: {rest.decode(errors='replace')}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rf.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("the backend closed the connection mid-reply")
            return data[:n]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError(f"unexpected reply from the backend: {line[:40]!r}")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class RedisStore:
    """The key/value state in Redis (``--backend``): a pool that replaces broken connections, or
    (bug ``backend-never-reconnects``) one connection that is never replaced."""

    def __init__(self, url: str, never_reconnect: bool) -> None:
        m = re.match(r"redis://(?:[^@/]*@)?([^:/]+)(?::(\d+))?(?:/(\d+))?/?\Z", url)
        if not m:
            raise ValueError(f"--backend: not a redis:// URL: {url!r}")
        self.addr = (m.group(1), int(m.group(2) or 6379), int(m.group(3) or 0))
        self.never = never_reconnect
        self.lock = threading.Lock()
        self.idle: list[Resp] = []
        self.only: Resp | None = None
        try:
            first = Resp(*self.addr)
            first.call(b"PING")
        except (OSError, ConnectionError, BackendDown) as e:
            raise ValueError(f"cannot reach redis at {self.addr[0]}:{self.addr[1]}: {e}") from None
        if never_reconnect:
            self.only = first
        else:
            self.idle.append(first)

    def _call(self, *args: bytes):
        if self.never:
            with self.lock:
                if self.only is None:  # BUG: the broken connection is never re-established
                    raise BackendDown("the backend connection broke earlier and is never re-established")
                try:
                    return self.only.call(*args)
                except (OSError, ConnectionError) as e:
                    self.only.close()
                    self.only = None
                    raise BackendDown(str(e)) from None
        for attempt in range(2):  # an idle connection may have died with the backend: one retry on a new one
            with self.lock:
                conn = self.idle.pop() if self.idle and attempt == 0 else None
            pooled = conn is not None
            try:
                conn = conn or Resp(*self.addr)
                reply = conn.call(*args)
            except (OSError, ConnectionError) as e:
                if conn is not None:
                    conn.close()  # a broken (or desynchronised) connection is dropped
                if pooled:
                    continue
                raise BackendDown(str(e)) from None
            with self.lock:
                self.idle.append(conn)
            return reply
        raise AssertionError("unreachable")

    def put(self, key: str, value: bytes) -> bool:
        return self._call(b"SET", key.encode(), value, b"GET") is None

    def delete(self, key: str) -> bool:
        return self._call(b"DEL", key.encode()) == 1

    def get(self, key: str) -> bytes | None:
        return self._call(b"GET", key.encode())

    def size(self) -> int | None:
        return None  # /debug/vars does not touch the backend


class Server:
    """Accept loop, connection threads, graceful (or planted) shutdown."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.bugs: set[str] = args.bug
        self.store = (RedisStore(args.backend, "backend-never-reconnects" in self.bugs) if args.backend
                      else Store(args.data, "ack-before-durable" in self.bugs))
        self.sock = socket.create_server((args.host, args.port), backlog=128)
        self.stopping = threading.Event()
        self.wedged = threading.Event()
        # no-recover-after-stop: a watchdog that ticks every 10 ms; a gap longer than STOP_GAP_S
        # means the process was stopped. Each request also looks at the gap itself, so the wedge
        # holds from the first request after SIGCONT (the Python-level SIGCONT handler runs on
        # the main thread, which may only get the GIL after a worker has answered).
        self.tick = time.monotonic()
        if "no-recover-after-stop" in self.bugs:
            threading.Thread(target=self._clock_watchdog, daemon=True).start()
        self.conns: set[socket.socket] = set()
        self.in_flight = 0
        self.requests = 0
        self.gets = 0
        self.mu = threading.Lock()

    # ---- accept ------------------------------------------------------------------------
    def accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError as e:
                if self.stopping.is_set():
                    return
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    if "accept-dies-on-emfile" in self.bugs:
                        print(f"accept loop: {e}; giving up", file=sys.stderr, flush=True)
                        return  # BUG: nothing accepts any more
                    time.sleep(0.05)
                    continue
                continue
            with self.mu:
                self.conns.add(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    # ---- one connection -------------------------------------------------------------------
    def serve(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(0.2)
        try:
            while True:
                head, buf = self._read_head(conn, buf)
                if head is None:
                    return
                with self.mu:
                    self.in_flight += 1
                try:
                    keep, buf = self._handle(conn, head, buf)
                finally:
                    with self.mu:
                        self.in_flight -= 1
                if not keep or self.stopping.is_set():
                    return
        except OSError:
            return
        finally:
            with self.mu:
                self.conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _read_head(self, conn: socket.socket, buf: bytes) -> tuple[bytes | None, bytes]:
        """The next request head; None when the peer closed, the server stops while idle, or it is garbage."""
        while b"\r\n\r\n" not in buf:
            if self.stopping.is_set() and not buf:
                return None, b""  # idle keep-alive connection during a drain: close it
            if len(buf) > 16384:
                return None, b""
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return None, b""
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        return head, rest

    def _read_body(self, conn: socket.socket, buf: bytes, n: int) -> tuple[bytes, bytes]:
        deadline = time.monotonic() + 15.0
        while len(buf) < n:
            if time.monotonic() > deadline:
                raise OSError("body timeout")
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise OSError("peer closed mid-body")
            buf += chunk
        return buf[:n], buf[n:]

    def _handle(self, conn: socket.socket, head: bytes, buf: bytes) -> tuple[bool, bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._send(conn, 400, b"bad request line\n", close=True)
            return False, b""
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                self._send(conn, 400, b"bad header\n", close=True)
                return False, b""
            headers[name.lower()] = value.strip()
        length = headers.get("content-length", "0")
        if "transfer-encoding" in headers or not length.isdigit():
            self._send(conn, 400, b"unsupported framing\n", close=True)
            return False, b""
        if int(length) > MAX_BODY:
            self._send(conn, 413, b"too large\n", close=True)
            return False, b""
        body, buf = self._read_body(conn, buf, int(length))
        if self.wedged.is_set() or ("no-recover-after-stop" in self.bugs and self._clock_jumped()):
            self.wedged.set()
            threading.Event().wait()  # BUG: the store's watchdog holds the lock forever
        close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        status, payload = self.route(method, target, body)
        with self.mu:
            self.requests += 1
        self._send(conn, status, payload, close=close or self.stopping.is_set())
        return not close, buf

    def route(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        path = target.split("?", 1)[0]
        if path == "/healthz":
            return (200, b"ok") if method == "GET" else (405, b"")
        if path == "/debug/vars":
            return 200, json.dumps({"sse_open": 0, "ws_open": 0, "tasks": threading.active_count(),
                                    "requests": self.requests, "keys": self.store.size()}).encode()
        if not path.startswith("/kv/"):
            return 404, b"not found\n"
        key = path[4:]
        if not KEY_RE.match(key):
            return 400, b"bad key\n"
        try:
            return self.kv(method, key, body)
        except BackendDown as e:
            return 503, f"backend unavailable: {e}\n".encode()

    def kv(self, method: str, key: str, body: bytes) -> tuple[int, bytes]:
        if method == "PUT":
            return (201 if self.store.put(key, body) else 200), b""
        if method == "GET":
            with self.mu:
                self.gets += 1
                nth = self.gets
            if "5xx" in self.bugs and nth % 7 == 0:
                return 500, b"internal error\n"
            value = self.store.get(key)
            return (404, b"not found\n") if value is None else (200, value)
        if method == "DELETE":
            return (204, b"") if self.store.delete(key) else (404, b"not found\n")
        return 405, b""

    def _send(self, conn: socket.socket, status: int, body: bytes, close: bool) -> None:
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
        if status != 204:
            head.append(f"Content-Length: {len(body)}")
            head.append("Content-Type: application/octet-stream")
        if close:
            head.append("Connection: close")
        conn.settimeout(5.0)
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if status == 204 else body))
        conn.settimeout(0.2)

    # ---- signals -----------------------------------------------------------------------------
    def on_term(self, signum, frame) -> None:
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        if "drop-on-term" in self.bugs:
            with self.mu:
                conns = list(self.conns)
            for c in conns:  # BUG: requests in flight are cut
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            os._exit(0)

    def _clock_jumped(self) -> bool:
        return time.monotonic() - self.tick > STOP_GAP_S

    def _clock_watchdog(self) -> None:
        while not self.stopping.is_set():
            if self._clock_jumped():
                self.wedged.set()
            self.tick = time.monotonic()
            time.sleep(0.01)

    def on_cont(self, signum, frame) -> None:
        if "no-recover-after-stop" in self.bugs:
            self.wedged.set()

    def drain(self, grace_s: float = 10.0) -> None:
        """After SIGTERM: wait (bounded) until no request is in flight and every connection closed."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            with self.mu:
                if self.in_flight == 0 and not self.conns:
                    return
            time.sleep(0.02)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Key/value test server, strict and durable, with planted bugs.")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--data", default=None, help="append-only log file (fsynced before every acknowledgement)")
    p.add_argument("--backend", default=None,
                   help="keep the state in Redis: 'redis' ($REDIS_URL) or redis://HOST:PORT/DB")
    p.add_argument("--bug", action="append", default=[], help="planted bug (repeatable or comma-separated)")
    p.add_argument("--list-bugs", action="store_true", help="print the planted bugs and exit")
    args = p.parse_args(argv)
    args.bug = {b.strip() for item in args.bug for b in item.split(",") if b.strip()}
    unknown = args.bug - set(BUGS)
    if unknown:
        p.error(f"unknown bug(s) {', '.join(sorted(unknown))}; known: {', '.join(BUGS)}")
    if args.backend and args.data:
        p.error("--data and --backend exclude each other (the state lives in one place)")
    if args.backend == "redis":
        args.backend = (os.environ.get("REDIS_URL")
                        or p.error("--backend redis: REDIS_URL is not set (--services redis sets it)"))
    if "backend-never-reconnects" in args.bug and not args.backend:
        p.error("--bug backend-never-reconnects needs --backend")
    if args.backend and "ack-before-durable" in args.bug:
        p.error("--bug ack-before-durable needs --data (with --backend the backend decides durability)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_bugs:
        for name, text in BUGS.items():
            print(f"{name}: {text}")
        return 0
    try:
        server = Server(args)
    except ValueError as e:
        print(f"kvserver: {e}", file=sys.stderr, flush=True)
        return 2
    signal.signal(signal.SIGTERM, server.on_term)
    signal.signal(signal.SIGINT, server.on_term)
    signal.signal(signal.SIGCONT, server.on_cont)
    host, port = server.sock.getsockname()[:2]
    threading.Thread(target=server.accept_loop, daemon=True).start()
    print(f"ready addr={host}:{port}", flush=True)
    while not server.stopping.wait(0.5):
        pass
    server.drain()
    return 0


if __name__ == "__main__":
    sys.exit(main())
