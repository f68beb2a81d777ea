"""Pure unit tests of the fast incremental response parser."""

from __future__ import annotations

import pytest

from probatorium.loadgen.parser import ParseError, ResponseParser


def collect(keep_body=True, **kw):
    got = []
    p = ResponseParser(lambda s, c, b: got.append((s, c, b)), keep_body=keep_body, **kw)
    return p, got


CL_RESP = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
CHUNKED_RESP = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nHello\r\n8;ext=1\r\n, World!\r\n0\r\nX-Trailer: 1\r\n\r\n"
)


@pytest.mark.parametrize("resp,body", [(CL_RESP, b"Hello, World!"), (CHUNKED_RESP, b"Hello, World!")])
def test_every_split_point(resp, body):
    for cut in range(len(resp) + 1):
        p, got = collect()
        p.feed(resp[:cut])
        assert got == [] or cut == len(resp)
        p.feed(resp[cut:])
        assert got == [(200, False, body)], cut
        assert p.idle


@pytest.mark.parametrize("resp", [CL_RESP, CHUNKED_RESP])
def test_byte_by_byte_and_back_to_back(resp):
    p, got = collect()
    for b in resp + resp:
        p.feed(bytes([b]))
    assert [g[0] for g in got] == [200, 200]
    p2, got2 = collect()
    p2.feed(resp * 3)
    assert len(got2) == 3


def test_content_length_zero_and_204_and_head():
    p, got = collect()
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert got == [(200, False, b""), (204, False, b"")]
    p, got = collect(no_body=True)
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n")
    assert got == [(200, False, b"")]


def test_connection_close_and_http10():
    p, got = collect()
    p.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    p.feed(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    p.feed(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
    assert [c for _, c, _ in got] == [True, True, False]


def test_read_until_close():
    p, got = collect()
    p.feed(b"HTTP/1.1 200 OK\r\n\r\nsome body")
    p.feed(b" more")
    assert got == []
    assert p.feed_eof() is True
    assert got == [(200, True, b"some body more")]


def test_interim_100_skipped():
    p, got = collect()
    p.feed(b"HTTP/1.1 100 Continue\r\n\r\n" + CL_RESP)
    assert got == [(200, False, b"Hello, World!")]


def test_status_codes_reported():
    p, got = collect(keep_body=False)
    p.feed(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\n\r\nerr")
    p.feed(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert got == [(500, False, None), (404, False, None)]


@pytest.mark.parametrize(
    "bad",
    [
        b"HELLO THIS IS NOT HTTP\r\n\r\n",
        b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
def test_framing_errors(bad):
    p, _ = collect()
    with pytest.raises(ParseError):
        p.feed(bad)


def test_truncated_body_at_eof_is_error():
    p, _ = collect()
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(ParseError):
        p.feed_eof()
    p2, _ = collect()
    assert p2.feed_eof() is False  # idle: a clean close between responses


def test_head_cache_filled_for_content_length_only():
    p, _ = collect(keep_body=False)
    p.feed(CL_RESP)
    assert list(p.cache.values()) == [(200, 13, False)]
    p.feed(CHUNKED_RESP)
    assert len(p.cache) == 1
