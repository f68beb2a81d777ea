"""The walkers' keep-alive client: framing, connection reuse, strict checks, cookies."""

from __future__ import annotations

import asyncio

from servers import Server, response

from probatorium.validate.tier1.markov.client import CookieJar, H1Connection, build_request, response_end


def test_response_end() -> None:
    r = response(200, b"hello")
    assert response_end(r, "GET") == (len(r), False)
    assert response_end(r[:-1], "GET") == (None, False)
    assert response_end(r, "HEAD")[0] == len(r) - 5
    ch = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    assert response_end(ch, "GET") == (len(ch), False)
    assert response_end(ch[:-2], "GET") == (None, False)
    cont = b"HTTP/1.1 100 Continue\r\n\r\n" + r
    assert response_end(cont, "POST") == (len(cont), False)
    assert response_end(b"HTTP/1.1 200 OK\r\n\r\nabc", "GET") == (None, True)
    assert response_end(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "GET") == (-1, False)
    assert response_end(b"garbage\r\n\r\n", "GET") == (-1, False)


def test_build_request() -> None:
    raw = build_request("POST", "/a", "h:1", [("Content-Type", "application/json")], b"{}")
    assert raw == b"POST /a HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    assert b"Content-Length: 0" in build_request("POST", "/a", "h", [], None)
    assert b"Content-Length" not in build_request("GET", "/a", "h", [], None)


def handler(method, target, headers, body):
    if target == "/cl":
        return response(200, b"hello " + body), False
    if target == "/chunked":
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", False
    if target == "/204body":
        return b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc", False
    if target == "/crlf":
        return b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n", False
    if target == "/close":
        return response(200, b"bye", extra="Connection: close\r\n"), True
    if target == "/drop":
        return b"", True
    if target == "/cookie":
        return response(200, b"", extra="Set-Cookie: s=1; Path=/; HttpOnly\r\n"), False
    return response(404, b""), False


def test_keepalive_reuse_and_checks() -> None:
    async def main():
        async with Server(handler) as srv:
            c = H1Connection("127.0.0.1", srv.port, timeout=3)
            r1 = await c.request("GET", "/cl")
            r2 = await c.request("POST", "/cl", [], b"xyz")
            r3 = await c.request("GET", "/chunked")
            assert (r1.status, r1.body, r1.violations, r1.error) == (200, b"hello ", [], None)
            assert r2.body == b"hello xyz" and r3.body == b"abcde" and not r3.violations
            assert c.connects == 1 and srv.connections == 1  # one keep-alive connection
            r4 = await c.request("GET", "/204body")
            assert r4.status == 204 and {v.predicate for v in r4.violations} == {"I-RFC-1"}
            r5 = await c.request("GET", "/crlf")
            assert "I-RFC-2" in {v.predicate for v in r5.violations}
            r6 = await c.request("GET", "/close")
            assert r6.status == 200 and r6.body == b"bye" and not r6.violations
            r7 = await c.request("GET", "/cl")
            assert r7.status == 200 and c.connects >= 3  # reconnected after the violation and the close
            r8 = await c.request("GET", "/drop")
            assert r8.status is None and r8.error
            r9 = await c.request("GET", "/cl")
            assert r9.status == 200
            await c.close()

    asyncio.run(main())


def test_idle_close_is_retried_once() -> None:
    async def main():
        def closing(method, target, headers, body):
            return response(200, b"x"), True  # closes after each response, without saying so

        async with Server(closing) as srv:
            c = H1Connection("127.0.0.1", srv.port, timeout=3)
            for _ in range(3):
                r = await c.request("GET", "/")
                assert r.status == 200 and r.error is None, r.error
                await asyncio.sleep(0.05)
            await c.close()

    asyncio.run(main())


def test_cookie_jar() -> None:
    jar = CookieJar()
    jar.update([b"session=abc; path=/; Max-Age=100; httponly", b"other=1"])
    assert jar.header() == "session=abc; other=1"
    jar.update([b"session=null; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT"])
    assert jar.header() == "other=1"
    jar.update([b"other=; Max-Age=0"])
    assert jar.header() is None


def test_slice_reports_framing_violations(tmp_path) -> None:
    import time

    from probatorium.validate.tier1.markov.slice import MarkovSlice

    model = tmp_path / "m.yaml"
    model.write_text("start: me\nstates:\n  me:\n    request: GET /204body\n    ok: 1\n"
                     "  ok:\n    request: GET /cl\n    me: 1\n")
    evidence: list = []

    async def main():
        async with Server(handler) as srv:
            s = MarkovSlice("127.0.0.1", srv.port, markov=model, seed=1, report=evidence.append, max_steps=20)
            await s.walker(0, time.monotonic() + 10, lambda: False)
            return s

    s = asyncio.run(main())
    assert s.rfc["rfc1_violations"] == 20 and s.rfc["responses_checked"] == 20  # CL on a 204 + body after it
    assert s.counters()["rfc_violations"] == 20 and s.counters()["errors"] == 0
    assert {(e.predicate, e.case) for e in evidence} == {("I-RFC-1", "markov GET /204body")}
    assert b"HTTP/1.1 204" in evidence[0].received and evidence[0].repro
