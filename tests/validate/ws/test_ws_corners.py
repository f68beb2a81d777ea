"""WebSocket corners (issue 12 item 9): empty key, HTTP/1.0, an unsupported version refused without
Sec-WebSocket-Version, and the oversize stream a server keeps buffering after its close 1009."""

from __future__ import annotations

import asyncio
import os
import random
from types import SimpleNamespace

import pytest
from wsserver import WsServer

from probatorium.validate.invariants import CATALOGUE, predicate_for
from probatorium.validate.tier1.ws import frames as F
from probatorium.validate.tier1.ws.slice import WsTortureSlice

HS = {h.name: h for h in F.HANDSHAKE_CASES}
EMPTY, HTTP10, VERSION = HS["handshake empty key"], HS["handshake over HTTP/1.0"], \
    HS["handshake unsupported version advertised"]
AFTER = F.CASES_BY_NAME["oversize message continued after close 1009"]
MIB = 1 << 20


def test_handshake_requests() -> None:
    assert b"\r\nSec-WebSocket-Key: \r\n" in F.render_handshake(EMPTY, "h", "/ws", "k")
    assert F.render_handshake(HTTP10, "h", "/ws", "k").startswith(b"GET /ws HTTP/1.0\r\n")
    assert b"\r\nSec-WebSocket-Version: 7\r\n" in F.render_handshake(VERSION, "h", "/ws", "k")


@pytest.mark.parametrize(("status", "header", "verdict"), [
    (426, "13", "ws_handshake_rejected"),
    (400, "13, 8", "ws_handshake_rejected"),  # 426 is the RFC's example, the header is the MUST
    (426, None, "ws_version_not_advertised"),
    (400, "", "ws_version_not_advertised"),
    (426, "thirteen", "ws_version_not_advertised"),
    (101, "13", "ws_accepted_bad_frame"),
])
def test_unsupported_version_must_advertise(status: int, header: str | None, verdict: str) -> None:
    assert F.grade_handshake(VERSION, status, True, False, None, header).verdict == verdict


def test_other_invalid_handshakes_keep_their_rules() -> None:
    for case in (EMPTY, HTTP10):
        assert F.grade_handshake(case, 400, True, False).verdict == "ws_handshake_rejected"
        assert F.grade_handshake(case, 101, False, False).verdict == "ws_accepted_bad_frame"
    # only the version case asks for the header
    assert F.grade_handshake(EMPTY, 400, True, False, None, None).verdict == "ws_handshake_rejected"


def test_after_close_rule() -> None:
    assert F.grade_after_close(40 * MIB, 100 * MIB, 150 * MIB)[0] == "ws_buffered_after_close"
    assert F.grade_after_close(40 * MIB, 100 * MIB, 110 * MIB) is None  # read and discarded
    assert F.grade_after_close(4 * MIB, 100 * MIB, 200 * MIB) is None  # it stopped taking the stream
    assert F.grade_after_close(F.AFTER_CLOSE_BYTES, None, None)[0] == "ws_read_after_close_unmeasured"
    assert F.grade_after_close(MIB, None, None) is None
    assert predicate_for("ws", "ws_buffered_after_close") == "I-WS-AFTER-CLOSE"
    assert predicate_for("ws", "ws_version_not_advertised") == "I-WS-HANDSHAKE"
    assert predicate_for("ws", "ws_read_after_close_unmeasured") is None
    assert CATALOGUE["I-WS-AFTER-CLOSE"].severity == "HIGH" and CATALOGUE["I-WS-HANDSHAKE"].severity == "MED"


def test_oversize_stream_declares_more_than_it_takes_after_close() -> None:
    segs = AFTER.build(random.Random(3))
    fin, _, op, masked, n, hl = F.decode_header(segs[0] + b"\x00" * 16, 0)
    assert op == F.OP_BINARY and masked and n > F.OVERSIZE_BYTES + F.AFTER_CLOSE_BYTES
    assert sum(len(s) for s in segs[1:]) <= n and len({id(s) for s in segs[1:]}) == 1  # one chunk, reused


def _run(mode: str, cases: list, handshakes: list) -> tuple[WsTortureSlice, list]:
    found: list = []

    async def main() -> WsTortureSlice:
        srv = await WsServer(mode).start()
        try:
            s = WsTortureSlice("127.0.0.1", srv.port, seed=3, report=found.append, close_timeout=0.5,
                               cases=cases, handshakes=handshakes,
                               identity=lambda: SimpleNamespace(pid=os.getpid()))
            for case in [*cases, *handshakes]:
                out, g = await s.run_case(case, 7)
                s._account(case, out, g, 7, 0)
            return s
        finally:
            await srv.stop()

    return asyncio.run(asyncio.wait_for(main(), 60)), found


def test_strict_server_passes_the_corners() -> None:
    s, found = _run("strict", [AFTER], [EMPTY, HTTP10, VERSION])
    assert found == [], [(e.predicate, e.detail) for e in found]
    bd = s.case_breakdown()
    assert bd[AFTER.name]["verdict"] == "ws_closed_correctly"
    assert all(bd[h.name]["verdict"] == "ws_handshake_rejected" for h in (EMPTY, HTTP10, VERSION))


@pytest.mark.parametrize(("mode", "case", "predicate"), [
    ("no_version_header", VERSION, "I-WS-HANDSHAKE"),
    ("http10_ok", HTTP10, "I-WS-ACCEPTED"),
    ("buffer_after_close", AFTER, "I-WS-AFTER-CLOSE"),
])
def test_each_planted_variant_is_caught(mode: str, case, predicate: str) -> None:
    ws = [case] if isinstance(case, F.WsCase) else []
    s, found = _run(mode, ws, [] if ws else [case])
    assert [e.predicate for e in found] == [predicate], [(e.predicate, e.detail) for e in found]
    if ws:
        assert found[0].extra["evidence"] == "rss" and found[0].extra["sent_after_close"] >= F.BUFFERED_MIN_BYTES


@pytest.mark.parametrize(("mode", "reproduced"), [("buffer_after_close", True), ("strict", False)])
def test_after_close_repro_is_standalone(tmp_path, mode: str, reproduced: bool) -> None:
    import subprocess
    import sys

    from probatorium.validate.tier1.ws.repro import ws_repro

    async def main() -> subprocess.CompletedProcess:
        srv = await WsServer(mode).start()
        try:
            src = ws_repro(case=AFTER, predicate="I-WS-AFTER-CLOSE", detail="test", conn_seed=9, ws_path="/ws",
                           addr=f"127.0.0.1:{srv.port}", close_timeout=0.5)
            (tmp_path / "repro.py").write_text(src)
            proc = await asyncio.create_subprocess_exec(sys.executable, "-I", "-S", str(tmp_path / "repro.py"),
                                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            return subprocess.CompletedProcess([], proc.returncode, out.decode(), err.decode())
        finally:
            await srv.stop()

    r = asyncio.run(main())
    assert r.returncode == (1 if reproduced else 0), (r.stdout, r.stderr)
    assert "after the server's close; RSS" in r.stdout
