"""End to end: the h2c churn and SSE kill slices against the refapp under real engines, and
against in-test asyncio servers with planted bugs (each must be caught with the right predicate)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest

from probatorium.rawclient import can_connect
from probatorium.targets.launcher import TargetSpec, start_target
from probatorium.validate.invariants import severity
from probatorium.validate.tier1.h2c.cases import CASES
from probatorium.validate.tier1.h2c.runner import H2cChurnSlice
from probatorium.validate.tier1.sse.runner import SseKillSlice

pytestmark = pytest.mark.e2e
BODY_CASE = "valid upgrade with a request body"


# ---- against the refapp -----------------------------------------------------------------

def _refapp(tmp_path: Path, engine: str):
    return start_target(TargetSpec(kind="refapp", refapp="auth_session_ratelimit", engine=engine), tmp_path)


@pytest.mark.parametrize("engine", ["uvicorn", "uvicorn-h11"])
def test_h2c_against_refapp(tmp_path: Path, engine: str) -> None:
    target = _refapp(tmp_path, engine)
    try:
        evidence: list = []

        async def alive() -> bool:
            return target.alive() and await can_connect(target.host, target.port)

        s = H2cChurnSlice(target.host, target.port, seed=7, report=evidence.append, alive=alive)

        async def main() -> None:
            deadline = time.monotonic() + 3.0
            await asyncio.gather(*(s.walker(i, deadline, lambda: False) for i in range(4)))

        asyncio.run(main())
        assert target.alive()
    finally:
        target.stop()
    c = s.counters()
    assert c["h2c_cases_sent"] == len(CASES), s.case_breakdown()
    assert c["h2c_crashed"] == c["h2c_hang"] == c["h2c_bad_upgrade_accepted"] == 0, c
    assert c.get("h2c_internal_error", 0) == 0, s.internal_errors
    assert c["h2c_declined"] > 0 and s.rfc["responses_checked"] > 0 and not s.rfc.get("rfc1_violations")
    high = [(e.predicate, e.case) for e in evidence if severity(e.predicate) == "HIGH"]
    if engine == "uvicorn":
        # Real divergence (uvicorn 0.54 + httptools): a POST carrying `Upgrade: h2c` reaches the
        # application with an EMPTY body (the parser hands the body bytes to the "upgrade" and
        # uvicorn drops them). uvicorn-h11, hypercorn, granian and daphne deliver it intact.
        assert set(high) <= {("I-ADV-ACCEPTED", f"h2c {BODY_CASE}")}, high
        assert c["h2c_body_mismatch"] == s.per_case[BODY_CASE].counts["body_mismatch"]
    else:
        assert high == [] and c["h2c_body_mismatch"] == 0 and c["h2c_body_checked"] > 0, (high, c)


def test_sse_against_refapp(tmp_path: Path) -> None:
    target = _refapp(tmp_path, "uvicorn")
    try:
        evidence: list = []
        s = SseKillSlice(target.host, target.port, seed=7, report=evidence.append)

        async def main() -> None:
            deadline = time.monotonic() + 3.0
            await asyncio.gather(*(s.walker(i, deadline, lambda: False) for i in range(8)))
            await s.settle()

        asyncio.run(main())
    finally:
        target.stop()
    c = s.counters()
    assert c["sse_established"] > 0 and c["sse_killed_mid_stream"] > 0 and c["sse_events_read"] > 0, c
    assert c["sse_handshake_fail"] == c["sse_endpoint_absent"] == 0, c
    status, evaluations, reason = s.judge_conn2()
    assert status == "passed" and evaluations >= 5, (status, evaluations, reason)
    assert evidence == [], [(e.predicate, e.detail) for e in evidence]


# ---- planted bugs ---------------------------------------------------------------------------

class Planted:
    """A tiny asyncio HTTP/1.1 server with switchable bugs."""

    def __init__(self, *, leak_sse: bool = False, no_sse: bool = False, no_debug: bool = False,
                 upgrade_on_any_settings: bool = False, die_on_h2c: bool = False) -> None:
        self.leak_sse, self.no_sse, self.no_debug = leak_sse, no_sse, no_debug
        self.upgrade_on_any_settings, self.die_on_h2c = upgrade_on_any_settings, die_on_h2c
        self.sse_open = 0
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *fields = head.decode("latin-1").split("\r\n")[:-2]
                method, target, _ = line.split(" ", 2)
                headers = [tuple(x.strip() for x in f.split(":", 1)) for f in fields]
                names = {k.lower(): v for k, v in headers}
                body = await reader.readexactly(int(names.get("content-length", "0")))
                path = target.split("?")[0]
                if names.get("upgrade", "").lower() == "h2c":
                    if self.die_on_h2c:  # planted: the process "exits" on an h2c preamble
                        await self.stop()
                        return
                    if self.upgrade_on_any_settings and "http2-settings" in names:  # planted: no validation
                        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
                        await writer.drain()
                        return
                if path == "/events":
                    if self.no_sse:
                        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        continue
                    await self.sse(writer)
                    return
                if path == "/debug/vars" and self.no_debug:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                if path == "/debug/vars":
                    doc = json.dumps({"sse_open": self.sse_open, "ws_open": 0, "tasks": 1, "requests": 0}).encode()
                else:
                    doc = json.dumps({"method": method, "target": target, "http_version": "1.1",
                                      "headers": [list(h) for h in headers], "body_length": len(body),
                                      "body_sha256": hashlib.sha256(body).hexdigest()}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(doc), doc))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError, asyncio.CancelledError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def sse(self, writer: asyncio.StreamWriter) -> None:
        self.sse_open += 1
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            n = 0
            while True:
                ev = b"id: %d\ndata: {}\n\n" % n
                writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                await writer.drain()
                n += 1
                await asyncio.sleep(0.1)
        finally:
            if not self.leak_sse:  # planted: the slot is never released
                self.sse_open -= 1


def _run_planted(server: Planted, body) -> None:
    async def main() -> None:
        await server.start()
        try:
            await body()
        finally:
            await server.stop()

    asyncio.run(main())


def test_planted_leaked_sse_slots_fail_I_CONN_2() -> None:
    server = Planted(leak_sse=True)
    evidence: list = []
    box: dict = {}

    async def body() -> None:
        s = SseKillSlice("127.0.0.1", server.port, seed=3, report=evidence.append)
        box["s"] = s
        deadline = time.monotonic() + 2.0
        await asyncio.gather(*(s.walker(i, deadline, lambda: False) for i in range(6)))
        await s.settle()

    t0 = time.monotonic()
    _run_planted(server, body)
    s = box["s"]
    status, evaluations, reason = s.judge_conn2()
    assert status == "failed" and evaluations > 10, (status, reason, s.series)
    assert time.monotonic() - t0 < 16
    conn2 = [e for e in evidence if e.predicate == "I-CONN-2"]
    assert len(conn2) == 1 and conn2[0].extra["series"] and conn2[0].repro
    assert max(p["sse_open"] or 0 for p in conn2[0].extra["series"]) > 10


def test_planted_correct_sse_server_passes_and_absent_paths_are_not_judged() -> None:
    results = {}
    for name, server in (("ok", Planted()), ("no_sse", Planted(no_sse=True)), ("no_debug", Planted(no_debug=True))):
        evidence: list = []
        box: dict = {}

        async def body(server=server, evidence=evidence, box=box) -> None:
            s = SseKillSlice("127.0.0.1", server.port, seed=3, report=evidence.append)
            box["s"] = s
            deadline = time.monotonic() + 1.5
            await asyncio.gather(*(s.walker(i, deadline, lambda: False) for i in range(4)))
            await s.settle()

        _run_planted(server, body)
        results[name] = (box["s"], evidence)
    s, ev = results["ok"]
    assert s.judge_conn2()[0] == "passed" and ev == []
    s, ev = results["no_sse"]
    status, n, reason = s.judge_conn2()
    assert status == "not_judged" and "endpoint_absent" in reason and s.counters()["sse_endpoint_absent"] >= 1
    assert s.counters()["sse_established"] == 0 and s.stopped_reason.startswith("endpoint_absent")
    s, ev = results["no_debug"]
    status, n, reason = s.judge_conn2()
    assert status == "not_judged" and "no debug endpoint" in reason and s.counters()["sse_established"] > 0


def test_planted_101_to_malformed_settings_is_I_H2C_UPGRADE() -> None:
    server = Planted(upgrade_on_any_settings=True)
    evidence: list = []
    box: dict = {}

    async def body() -> None:
        s = H2cChurnSlice("127.0.0.1", server.port, seed=3, report=evidence.append, timeout=1.0)
        box["s"] = s
        deadline = time.monotonic() + 2.0
        await asyncio.gather(*(s.walker(i, deadline, lambda: False) for i in range(3)))

    _run_planted(server, body)
    s = box["s"]
    br = s.case_breakdown()
    for name in ("HTTP2-Settings not base64url", "HTTP2-Settings not a multiple of 6 bytes",
                 "HTTP2-Settings duplicated"):
        assert br[name]["verdict"] == "bad_upgrade_accepted", (name, br[name])
    # Exactly one valid HTTP2-Settings: upgrading is the server's right (the Connection listing is the client's MUST).
    assert br["HTTP2-Settings not a Connection option"]["verdict"] == "upgraded"
    assert br["HTTP2-Settings missing"]["verdict"] == "declined"
    assert br["valid upgrade, read answer"]["verdict"] == "upgraded"
    assert s.counters()["h2c_bad_upgrade_accepted"] > 0
    bad = [e for e in evidence if e.predicate == "I-H2C-UPGRADE"]
    assert bad and all(e.repro and "I-H2C-UPGRADE" in e.repro for e in bad)
    compile(bad[0].repro, "repro.py", "exec")


def test_planted_exit_on_h2c_is_h2c_crashed_via_alive() -> None:
    server = Planted(die_on_h2c=True)
    evidence: list = []
    box: dict = {}
    recovered: list = []

    async def body() -> None:
        async def alive() -> bool:
            return await can_connect("127.0.0.1", server.port, 0.5)

        async def recover() -> bool:
            recovered.append(time.monotonic())
            return False

        s = H2cChurnSlice("127.0.0.1", server.port, seed=3, report=evidence.append, alive=alive, recover=recover,
                          timeout=1.0)
        box["s"] = s
        deadline = time.monotonic() + 5.0
        await asyncio.gather(*(s.walker(i, deadline, lambda: False) for i in range(2)))

    t0 = time.monotonic()
    _run_planted(server, body)
    s = box["s"]
    assert s.counters()["h2c_crashed"] >= 1 and recovered, s.counters()
    assert "could not be restarted" in s.stopped_reason
    assert time.monotonic() - t0 < 4.5  # the walkers stopped instead of running to the deadline
    assert any(e.predicate == "I-H2C-CRASHED" for e in evidence)
