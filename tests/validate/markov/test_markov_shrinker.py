"""Shrinking Markov findings: dependency closure, history, and replays with re-bound ids (ddmin itself: tests/test_shrink.py)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

from fakes import result

from probatorium.validate.openapi import load_operations
from probatorium.validate.tier1.markov.client import build_request
from probatorium.validate.tier1.markov.shrink import Replayer, Step, closed_under_captures, focus, remember, replayable
from probatorium.validate.tier1.markov.slice import MarkovSlice
from probatorium.validate.tier1.markov.values import Templates

PLANTED = Path(__file__).parent / "planted"


def step(op: str, used: dict | None = None, gives: list | None = None) -> Step:
    method, path = op.split(" ", 1)
    return Step(op, method, path, dict(used or {}), gives=list(gives or []))


def test_dependency_closure() -> None:
    a = step("POST /items", gives=[{"id": "7"}])
    b = step("PUT /items/{id}", {"id": "7"})
    c = step("GET /items/{id}", {"id": "3"})  # captured before the history began
    assert closed_under_captures([a, b]) and not closed_under_captures([b])
    assert replayable([c, a, b]) == [a, b]


def test_history_keeps_the_creator_and_the_changes_of_live_resources() -> None:
    create = step("POST /items", gives=[{"id": "1"}])
    archive = step("POST /items/{id}/archive", {"id": "1"})
    history: list[Step] = []
    live = {("id", "1")}
    for s in [create, step("GET /ping"), archive, step("GET /items/{id}", {"id": "1"})]:
        remember(history, s, live, limit=8)
    for _ in range(40):  # noise: pings, lists repeating the same id, reads
        for s in [step("GET /ping"), step("GET /items", gives=[{"id": "1"}]), step("GET /items/{id}", {"id": "1"})]:
            remember(history, s, live, limit=8)
    update = step("PUT /items/{id}", {"id": "1"})
    remember(history, update, live, limit=8)
    assert len(history) == 8 and history[0] is create and archive in history and history[-1] is update
    assert all(s.op == "GET /items/{id}" for s in history[2:-1])  # pings and repeated lists went first
    assert focus(history)[0] == [create, update]  # the data-dependency slice


# ---------------------------------------------------------------------------------------
# An in-memory version of planted/planted_app.py: update after archive is a 500 x-invariant.


class Archive:
    ITEM = re.compile(r"^/items/(\d+)$")
    ARCHIVE = re.compile(r"^/items/(\d+)/archive$")

    def __init__(self, first_id: int = 1) -> None:
        self.next_id = first_id
        self.items: dict[str, dict[int, dict]] = {}
        self.tokens: dict[str, str] = {}
        self.requests = 0

    def connection(self):
        return Conn(self)

    def handle(self, method, target, headers, body):
        self.requests += 1
        h = dict(headers)
        if target == "/login":
            user = json.loads(body)["username"]
            tok = f"t{len(self.tokens)}"
            self.tokens[tok] = user
            self.items.setdefault(user, {})
            return result(method, target, 200, {"token": tok})
        user = self.tokens.get(h.get("Authorization", "")[7:])
        if user is None:
            return result(method, target, 401, {"error": "login"})
        mine = self.items[user]
        if target == "/ping":
            return result(method, target, 200, {"pong": True})
        if target == "/items":
            if method == "POST":
                iid, self.next_id = self.next_id, self.next_id + 1
                mine[iid] = {"id": iid, "archived": False}
                return result(method, target, 201, mine[iid], {"Location": f"/items/{iid}"})
            return result(method, target, 200, list(mine.values())[-5:])
        m = self.ITEM.match(target) or self.ARCHIVE.match(target)
        it = mine.get(int(m.group(1))) if m else None
        if it is None:
            return result(method, target, 404, {"error": "no"})
        if target.endswith("/archive"):
            it["archived"] = True
        elif method == "DELETE":
            del mine[it["id"]]
            return result(method, target, 204)
        elif method == "PUT" and it["archived"]:
            return result(method, target, 500, {"x-invariant": "I-TEST-ARCHIVED"})
        return result(method, target, 200, it)


class Conn:
    def __init__(self, app: Archive) -> None:
        self.app = app

    async def request(self, method, target, headers=None, body=None):
        res = self.app.handle(method, target, list(headers or []), body)
        res.sent = build_request(method, target, "fake:1", list(headers or []), body)
        return res

    async def close(self) -> None:
        pass


OPS = load_operations(PLANTED / "openapi.yaml")


def walk_planted(seed: int, app: Archive, **kw) -> tuple[MarkovSlice, list]:
    evidence: list = []
    s = MarkovSlice("127.0.0.1", 1, openapi=OPS, markov=PLANTED / "markov.yaml", seed=seed, report=evidence.append,
                    connection_factory=app.connection, max_steps=3000, **kw)
    asyncio.run(s.walker(0, time.monotonic() + 30, lambda: evidence != []))
    return s, evidence


def test_walker_finding_is_shrunk_to_create_archive_update() -> None:
    app = Archive()
    s, evidence = walk_planted(3, app)
    assert [e.predicate for e in evidence] == ["I-TEST-ARCHIVED"]
    rep = evidence[0].extra["reproducer"]
    assert rep["reproduced"] and rep["shrink"].startswith("complete"), rep["shrink"]
    assert [x["op"] for x in rep["sequence"]] == ["POST /items", "POST /items/{id}/archive", "PUT /items/{id}"]
    assert rep["length_after"] == 3 and rep["length_before"] > 3
    assert rep["replays"] <= 50 and s.counters()["shrinks"] == 1
    json.dumps(evidence[0].extra)  # incident.json must be able to hold it


def test_replay_rebinds_ids_on_a_fresh_server() -> None:
    app = Archive()
    _, evidence = walk_planted(3, app)
    seq = [Step.from_json(x) for x in evidence[0].extra["reproducer"]["sequence"]]
    fresh = Archive(first_id=500000)  # other ids than the run that found it
    r = Replayer(fresh.connection, Templates(["/items/{id}", "/items/{id}/archive"]), ("POST", "/login"),
                 lambda n: ("u", "p"))
    out = asyncio.run(r.replay(seq, "I-TEST-ARCHIVED", "PUT /items/{id}"))
    assert out.failed_at == 2 and out.lines[-1] == "500 PUT /items/500000", out.lines
    assert not any(x["used"].get("id") == "500000" for x in evidence[0].extra["reproducer"]["sequence"])


def test_repeats_while_shrinking_are_not_reported_and_shrinking_can_be_off() -> None:
    _, evidence = walk_planted(3, Archive(), shrink=False)
    rep = evidence[0].extra["reproducer"]
    assert rep["shrink"] == "not shrunk: shrinking is off" and not rep["reproduced"]
    assert '"sequence": []' in evidence[0].repro  # falls back to the recorded requests


def test_not_shrunk_when_the_target_is_down() -> None:
    async def dead() -> bool:
        return False

    _, evidence = walk_planted(3, Archive(), alive=dead)
    assert evidence[0].extra["reproducer"]["shrink"] == "not shrunk: target down"


class BadFraming(Archive):
    """The same planted bug, shown as a framing error: a 204 with a body (I-RFC-1)."""

    def handle(self, method, target, headers, body):
        res = super().handle(method, target, headers, body)
        if res.status == 500:
            from probatorium.validate.tier1.http1 import parse_response_stream
            from probatorium.validate.tier1.markov.client import HttpResult

            raw = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"
            parsed = parse_response_stream(raw, [method], eof=True)
            res = HttpResult(method, target, received=raw, status=204, response=parsed.final_responses[0],
                             violations=list(parsed.violations))
        return res


def test_framing_violation_is_shrunk_too() -> None:
    _, evidence = walk_planted(3, BadFraming())
    assert evidence and evidence[0].predicate == "I-RFC-1"
    rep = evidence[0].extra["reproducer"]
    assert [x["op"] for x in rep["sequence"]] == ["POST /items", "POST /items/{id}/archive", "PUT /items/{id}"]
    assert '"sequence": [{' in evidence[0].repro


class Fixed(Archive):
    def handle(self, method, target, headers, body):
        res = super().handle(method, target, headers, body)
        return result(method, target, 200, {"id": 0}) if res.status == 500 else res


def test_repro_replays_the_minimal_sequence_on_a_fresh_server(tmp_path: Path) -> None:
    import sys

    from servers import Server

    _, evidence = walk_planted(3, Archive())
    script = tmp_path / "repro.py"
    script.write_text(evidence[0].repro)

    def serve(app: Archive):
        def handler(method, target, headers, body):
            res = app.handle(method, target, [("Authorization", headers.get("authorization", ""))], body or None)
            return res.received, False
        return Server(handler)

    async def run(app: Archive) -> tuple[int, str]:
        async with serve(app) as srv:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(script), f"127.0.0.1:{srv.port}",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode, out.decode()

    rc, out = asyncio.run(run(Archive(first_id=777)))
    assert rc == 1 and out.strip().endswith("REPRODUCED"), out
    assert out.splitlines()[:4] == ["200 POST /login", "201 POST /items", "200 POST /items/777/archive",
                                    "500 PUT /items/777"], out
    rc, out = asyncio.run(run(Fixed(first_id=777)))
    assert rc == 0 and out.strip().endswith("NOT REPRODUCED"), out
