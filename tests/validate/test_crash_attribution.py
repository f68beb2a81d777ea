"""Crash attribution: the suspects of a death, their intersection across deaths, the replay that confirms."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading

from probatorium.validate.crash import (IN_FLIGHT, MAX_CONFIRM_RESTARTS, NO_RESPONSE, REFUSED, RESPONSE, Candidate,
                                        CrashAttributor, CrashLog, common_signatures, crash_repro, rank_candidates,
                                        rehost)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _begin(log: CrashLog, sig: str, raw: bytes = b"") -> int:
    method, _, path = sig.partition(" ")
    return log.begin("markov", "0", "0x1", sig, sig, raw or f"{method} {path} HTTP/1.1\r\nHost: h:1\r\n\r\n".encode(),
                     "h:1")


def test_snapshot_takes_in_flight_and_the_window_before_the_first_refused_connection():
    clock = Clock()
    log = CrashLog(clock=clock)
    old = _begin(log, "GET /old")
    log.end(old, RESPONSE)
    clock.t = 105.0
    ok = _begin(log, "GET /")  # answered 0.5 s before the death: a (weak) suspect
    clock.t = 105.5
    log.end(ok, RESPONSE)
    killer = _begin(log, "GET /chunked")
    slow = _begin(log, "POST /upload")  # still in flight when the snapshot is taken
    clock.t = 105.6
    log.end(killer, NO_RESPONSE)
    refused = _begin(log, "GET /late")
    log.end(refused, REFUSED)  # the first refused connection: the process was gone by now
    clock.t = 107.0
    after = _begin(log, "GET /after")
    log.end(after, NO_RESPONSE)  # sent after the failures began: not a suspect
    snap = log.snapshot(window=1.0)
    sigs = {c.signature: c.outcome for c in snap}
    assert sigs == {"GET /": RESPONSE, "GET /chunked": NO_RESPONSE, "POST /upload": IN_FLIGHT}
    # A later death only sees requests sent after this one.
    clock.t = 110.0
    log.end(slow, NO_RESPONSE)
    again = _begin(log, "GET /chunked")
    log.end(again, NO_RESPONSE)
    assert [c.signature for c in log.snapshot()] == ["GET /chunked"]


def _c(sig: str, outcome: str = NO_RESPONSE, offset: float = 0.1) -> Candidate:
    return Candidate(sig, outcome, offset)


def test_intersection_across_deaths_narrows_the_suspects():
    deaths = [[_c("GET /"), _c("GET /chunked"), _c("PUT /kv/{key}")],
              [_c("GET /chunked"), _c("DELETE /kv/{key}")],
              [_c("GET /chunked", RESPONSE), _c("GET /"), _c("adversarial target_with_space")]]
    assert common_signatures(deaths) == {"GET /chunked"}
    ranked = [c.signature for c in rank_candidates(deaths)]
    assert ranked[0] == "GET /chunked"
    assert ranked[1] == "GET /"  # in two of the three deaths
    assert common_signatures([]) == set() and common_signatures([[], [_c("GET /")]]) == {"GET /"}


def test_ranking_prefers_a_dropped_connection_then_the_earliest_sent_and_honours_limit_and_exclude():
    death = [_c("GET /a", RESPONSE, 0.05), _c("GET /b", NO_RESPONSE, 0.02), _c("GET /c", IN_FLIGHT, 0.3),
             _c("GET /d", IN_FLIGHT, 5.0)]  # in flight long before the death: a slow probe
    assert [c.signature for c in rank_candidates([death])] == ["GET /c", "GET /b", "GET /a", "GET /d"]
    assert [c.signature for c in rank_candidates([death], limit=2, exclude={"GET /c"})] == ["GET /b", "GET /a"]
    # One representative per signature: the most suspicious instance.
    rep = rank_candidates([[_c("GET /x", RESPONSE, 0.1), _c("GET /x", NO_RESPONSE, 0.2)]])
    assert len(rep) == 1 and rep[0].outcome == NO_RESPONSE


def test_rehost_rewrites_only_the_host_field():
    raw = b"GET /h:1 HTTP/1.1\r\nHost: h:1\r\nX: h:1\r\n\r\n"
    assert rehost(raw, "h:1", "127.0.0.1:9") == b"GET /h:1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX: h:1\r\n\r\n"


class DyingServer:
    """A loopback HTTP server 'process' that exits on GET <kill> (or on any request)."""

    def __init__(self, kill: str | None) -> None:
        self.kill = kill
        self.pid = 1
        self.host = "127.0.0.1"
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.up = True
        threading.Thread(target=self._serve, args=(self.sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(65536)
                if data and (self.kill is None or data.startswith(f"GET {self.kill} ".encode())):
                    self.up = False
                    sock.close()
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def alive(self) -> bool:
        return self.up

    def restart(self) -> None:
        self.restarts += 1
        if self.up:
            self.sock.close()
        self._start()


def _attributor(server: DyingServer, sigs: list[str]) -> CrashAttributor:
    log = CrashLog()
    for sig in sigs:
        log.end(_begin(log, sig), NO_RESPONSE)
    att = CrashAttributor(log, server)
    att.record_death()
    return att


def test_confirmation_replays_suspects_alone_until_one_kills_the_target():
    server = DyingServer("/chunked")
    att = _attributor(server, ["GET /", "GET /chunked", "GET /other"])
    asyncio.run(att.confirm())
    assert att.confirmed is not None and att.confirmed.signature == "GET /chunked"
    assert [r.signature for r in att.replays] == ["GET /", "GET /chunked"]
    assert [r.killed for r in att.replays] == [False, True]
    assert server.alive() and server.restarts == 1 == att.confirm_restarts
    assert att.summary().startswith("confirmed: GET /chunked")
    assert att.to_json()["status"] == "confirmed"
    assert [r.signature for r in att.repro_requests()] == ["GET /chunked"]


def test_no_single_suspect_kills_it_is_reported_as_unconfirmed():
    server = DyingServer("/never")
    att = _attributor(server, ["GET /a", "GET /b"])
    asyncio.run(att.confirm())
    assert att.confirmed is None and server.restarts == 0
    assert att.summary().startswith("unconfirmed candidates: ['GET /a', 'GET /b']")
    asyncio.run(att.confirm())  # the cleared suspects are never replayed again
    assert len(att.replays) == 2
    assert att.repro_requests() == []  # a repro.py already known not to reproduce is not written


def test_a_target_dying_on_every_request_cannot_make_confirmation_run_away():
    server = DyingServer(None)
    att = _attributor(server, [f"GET /{i}" for i in range(20)])
    for _ in range(5):  # every death triggers a round; the budget bounds them
        att.confirmed = None
        att.record_death()
        asyncio.run(att.confirm())
    assert att.confirm_restarts <= MAX_CONFIRM_RESTARTS and server.restarts <= MAX_CONFIRM_RESTARTS
    assert len(att.replays) <= 10


def test_repro_script_reproduces_only_against_a_dying_server(tmp_path):
    log = CrashLog()
    log.end(_begin(log, "GET /chunked"), NO_RESPONSE)
    att = CrashAttributor(log, None)
    att.record_death()
    script = tmp_path / "repro.py"
    script.write_text(crash_repro(att.repro_requests(), status=att.summary(), addr="h:1", version="test"))
    for kill, code in (("/chunked", 1), ("/never", 0)):
        server = DyingServer(kill)
        res = subprocess.run([sys.executable, str(script), f"127.0.0.1:{server.port}"], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == code, res.stdout + res.stderr
        assert ("REPRODUCED" if code else "NOT REPRODUCED") in res.stdout.splitlines()[-1]
