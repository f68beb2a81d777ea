"""Raw-socket sanity tests of tests/servers/h1server.py (strict mode + a few planted bugs)."""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER = Path(__file__).with_name("h1server.py")
TIMEOUT = 3.0


def _start(*bugs: str) -> tuple[subprocess.Popen[bytes], int]:
    args = [sys.executable, str(SERVER), "--port", "0"]
    for b in bugs:
        args += ["--bug", b]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    line = proc.stdout.readline().decode() if ready else ""  # type: ignore[union-attr]
    if not line.startswith("ready addr="):
        _stop(proc)
        raise RuntimeError(f"server did not become ready: {line!r}")
    return proc, int(line.strip().rsplit(":", 1)[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    err = proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
    assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def strict() -> Iterator[int]:
    proc, port = _start()
    try:
        yield port
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def buggy() -> Iterator[int]:
    proc, port = _start("space-before-colon", "te-cl-prefer-cl", "keepalive-after-close")
    try:
        yield port
    finally:
        _stop(proc)


@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, head: bool = False) -> Resp:
        status = int(self._line().split(b" ")[1])
        headers = []
        while line := self._line():
            k, _, v = line.partition(b":")
            headers.append((k.decode(), v.strip().decode("latin-1")))
        r = Resp(status, headers, b"")
        if head or status in (100, 204, 304):
            return r
        if (r.header("transfer-encoding") or "").lower() == "chunked":
            while size := int(self._line(), 16):
                r.body += self._exact(size)
                assert self._exact(2) == b"\r\n"
            assert self._line() == b""
        else:
            r.body = self._exact(int(r.header("content-length") or 0))
        return r

    def closed(self) -> bool:
        """True once the server closed (EOF) with no further bytes."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return self.buf == b""
                self.buf += data
        except (TimeoutError, ConnectionResetError):
            return False

    def close(self) -> None:
        self.sock.close()


def exchange(port: int, data: bytes, n: int = 1) -> tuple[list[Resp], Client]:
    c = Client(port)
    c.send(data)
    return [c.response() for _ in range(n)], c


GET = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


# ------------------------------------------------------------------ strict mode
def test_valid_get_keeps_alive(strict: int) -> None:
    (r,), c = exchange(strict, GET % b"/")
    assert (r.status, r.body, r.header("connection")) == (200, b"hello", None)
    c.send(GET % b"/healthz")
    assert c.response().body == b"ok"
    c.close()


def test_pipelined_pair_in_order(strict: int) -> None:
    (a, b), c = exchange(strict, GET % b"/echo?n=1" + GET % b"/echo?n=2", n=2)
    assert json.loads(a.body)["target"] == "/echo?n=1"
    assert json.loads(b.body)["target"] == "/echo?n=2"
    c.close()


def test_chunked_post_echo(strict: int) -> None:
    body = b"hello, chunked world" * 10
    req = (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x ; ext = \"q\\\"v\"\r\n" % 7 + body[:7] + b"\r\n"
        + b"%X\r\n" % (len(body) - 7) + body[7:] + b"\r\n"
        + b"0\r\nX-Trailer: t\r\n\r\n"
    )
    (r,), c = exchange(strict, req)
    echo = json.loads(r.body)
    assert r.status == 200
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["http_version"] == "HTTP/1.1" and echo["method"] == "POST"
    c.close()


def test_echo_reports_headers_as_received(strict: int) -> None:
    (r,), c = exchange(strict, b"GET /echo/x HTTP/1.1\r\nHost: a\r\nX-Mixed-Case: \t v 1 \t\r\n\r\n")
    assert json.loads(r.body)["headers"] == [["Host", "a"], ["X-Mixed-Case", "v 1"]]
    c.close()


def test_space_before_colon_is_400_and_close(strict: int) -> None:
    (r,), c = exchange(strict, b"GET / HTTP/1.1\r\nHost : a\r\n\r\n" + GET % b"/healthz")
    assert r.status == 400 and r.header("connection") == "close"
    assert c.closed()  # the pipelined GET is never answered
    c.close()


def test_cl_and_te_is_400_and_close(strict: int) -> None:
    req = (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + GET % b"/echo?smuggled"
    )
    (r,), c = exchange(strict, req)
    assert r.status == 400 and r.header("connection") == "close"
    assert c.closed()
    c.close()


def test_head_has_headers_but_no_body(strict: int) -> None:
    c = Client(strict)
    c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n" + GET % b"/healthz")
    head = c.response(head=True)
    assert head.status == 200 and head.header("content-length") == "5"
    follow = c.response()  # no stray body bytes in between
    assert (follow.status, follow.body) == (200, b"ok")
    c.close()


def test_204_and_304_have_no_framing(strict: int) -> None:
    (a, b, d), c = exchange(strict, GET % b"/nocontent" + GET % b"/notmodified" + GET % b"/healthz", n=3)
    assert a.status == 204 and a.header("content-length") is None
    assert b.status == 304 and b.header("content-length") is None and b.header("etag")
    assert d.body == b"ok"
    c.close()


def test_expect_100_continue_only_on_http11(strict: int) -> None:
    c = Client(strict)
    c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert c.response().status == 100
    c.send(b"abc")
    assert json.loads(c.response().body)["body_length"] == 3
    c.close()
    (r,), c = exchange(strict, b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")
    assert r.status == 200 and c.closed()  # no interim response; 1.0 without keep-alive closes
    c.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),  # bare LF
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),  # bare CR
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),  # NUL in value
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),  # obs-fold
        (b"GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # two SP
        (b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /a#f HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # fragment
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),  # HTTP/0.9
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\nx\r\n0\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxYY0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", 417),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    ],
)
def test_strict_rejections_close(strict: int, raw: bytes, status: int) -> None:
    (r,), c = exchange(strict, raw)
    assert r.status == status and r.header("connection") == "close"
    assert c.closed()
    c.close()


# ---------------------------------------------------------------- planted bugs
def test_bug_space_before_colon_accepted(buggy: int) -> None:
    (r,), c = exchange(buggy, b"GET /echo HTTP/1.1\r\nHost: a\r\nX-A : v\r\n\r\n")
    assert r.status == 200 and ["X-A", "v"] in json.loads(r.body)["headers"]
    c.close()


def test_bug_te_cl_prefer_cl_smuggles(buggy: int) -> None:
    req = (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        b"0\r\n\r\n" + GET % b"/echo?smuggled"
    )
    (a, b), c = exchange(buggy, req, n=2)
    assert a.status == 200 and json.loads(a.body)["body_length"] == 3
    assert json.loads(b.body)["target"] == "/echo?smuggled"
    c.close()


def test_bug_keepalive_after_close(buggy: int) -> None:
    req = b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + GET % b"/echo?after"
    (a, b), c = exchange(buggy, req, n=2)
    assert a.body == b"ok" and json.loads(b.body)["target"] == "/echo?after"
    c.close()


def test_buggy_server_otherwise_strict(buggy: int) -> None:
    (r,), c = exchange(buggy, b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n")
    assert r.status == 400 and c.closed()
    c.close()
