"""Runner, checkers, shrinking and repro.py together against the planted REST server (no planner)."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter

from probatorium.validate.tier2.checks import check_sequence
from probatorium.validate.tier2.exchange import well_formed
from probatorium.validate.tier2.findings import FindingHandler
from probatorium.validate.tier2.minischema import schema_errors
from probatorium.validate.tier2.repro import api_repro
from probatorium.validate.tier2.runner import Runner


JSON = "application/json"
OPS = {
    "login": {"method": "POST", "path": "/login", "secured": False, "responses": {"200": {JSON: {}}}},
    "createItem": {"method": "POST", "path": "/items", "secured": True, "responses": {"201": {JSON: {}}}},
    "getItem": {"method": "GET", "path": "/items/{itemId}", "secured": True,
                "responses": {"200": {JSON: {"type": "object"}}, "404": {JSON: {}}}},
    "deleteItem": {"method": "DELETE", "path": "/items/{itemId}", "secured": True,
                   "responses": {"204": {}, "404": {JSON: {}}}},
}


def login(i: int, user: str) -> dict:
    return {"id": i, "op_id": "login", "user": user, "method": "POST", "path": "/login", "probe": "login",
            "body": {"username": f"u-{user}", "password": "p"}, "media_type": JSON}


def uaf_steps() -> list[dict]:
    bound = {"itemId": {"from": 3, "source": "body:/id"}}
    noise = {"id": 2, "op_id": "createItem", "user": "B", "method": "POST", "path": "/items", "needs_login": True,
             "body": {"name": "other", "kind": "toy", "qty": 1}, "media_type": JSON}
    return [login(0, "A"), login(1, "B"), noise,
            {"id": 3, "op_id": "createItem", "user": "A", "method": "POST", "path": "/items", "needs_login": True,
             "body": {"name": "n", "kind": "book", "qty": 2}, "media_type": JSON},
            {"id": 4, "op_id": "deleteItem", "user": "A", "method": "DELETE", "path": "/items/{itemId}",
             "path_params": bound, "needs_login": True},
            {"id": 5, "op_id": "getItem", "user": "A", "method": "GET", "path": "/items/{itemId}",
             "path_params": bound, "needs_login": True, "probe": "after-delete"}]


def test_runner_binds_and_uaf_is_found(restserver):
    host, port = restserver("use-after-delete")
    seq = asyncio.run(Runner(lambda: (host, port)).run(uaf_steps()))
    assert [e.status for e in seq] == [200, 200, 201, 201, 204, 200]
    assert seq[5].bindings["itemId"]["from"] == 3 and seq[5].path == f"/items/{seq[3].json()['id']}"
    _, found = check_sequence(seq, OPS, schema_errors)
    assert [(f.predicate, f.op_id) for f in found] == [("I-API-UAF", "getItem")]
    host2, port2 = restserver()  # strict
    seq = asyncio.run(Runner(lambda: (host2, port2)).run(uaf_steps()))
    assert seq[5].status == 404 and not check_sequence(seq, OPS, schema_errors)[1]


def test_cleanup_runs_after_the_sequence_and_is_not_returned(restserver):
    host, port = restserver()
    steps = uaf_steps()[:4]  # two creates, nothing deleted
    sweep = [{"id": 4 + i, "op_id": "deleteItem", "user": u, "method": "DELETE", "path": "/items/{itemId}",
              "path_params": {"itemId": {"from": made, "source": "body:/id"}}, "probe": "cleanup"}
             for i, (u, made) in enumerate((("A", 3), ("B", 2)))]
    runner = Runner(lambda: (host, port))
    seq = asyncio.run(runner.run(steps, cleanup=lambda done: sweep if done is steps else []))
    assert [e.status for e in seq] == [200, 200, 201, 201] and runner.cleanup_requests == 2
    check = [login(0, "A"), login(1, "B"),
             *({"id": 2 + i, "op_id": "getItem", "user": u, "method": "GET", "needs_login": True,
                "path": f"/items/{seq[made].json()['id']}"} for i, (u, made) in enumerate((("A", 3), ("B", 2))))]
    assert [e.status for e in asyncio.run(runner.run(check))] == [200, 200, 404, 404]


def test_well_formed_keeps_bindings_and_logins():
    steps = uaf_steps()
    assert well_formed(steps)
    assert not well_formed([s for s in steps if s["id"] != 3])  # the producer of itemId dropped
    assert not well_formed([s for s in steps if s["id"] != 0])  # user A never logs in


def test_shrink_and_repro_reproduce_under_bare_python(restserver, tmp_path):
    host, port = restserver("use-after-delete")
    runner = Runner(lambda: (host, port))
    tally, recorded = Counter(), []

    def report(ev):
        recorded.append(ev)

    handler = FindingHandler(OPS, report, tally, 7, lambda m: None)
    steps = uaf_steps()
    seq = asyncio.run(runner.run(steps))
    (f,) = check_sequence(seq, OPS, schema_errors)[1]
    import time

    asyncio.run(handler.handle(f, steps, runner, f"{host}:{port}", time.monotonic() + 30))
    (ev,) = recorded
    import json

    shrunk = json.loads(ev.files["sequence.json"])["steps"]
    assert [s["id"] for s in shrunk] == [0, 3, 4, 5]  # B's login and B's item are gone; bindings kept
    assert tally["findings_I-API-UAF"] == 1 and "curl" in ev.files["curl.sh"]
    script = tmp_path / "repro.py"
    script.write_text(ev.repro)
    fresh_host, fresh_port = restserver("use-after-delete")
    res = subprocess.run(["/usr/bin/python3", "-I", "-S", str(script), f"{fresh_host}:{fresh_port}"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and res.stdout.strip().endswith("REPRODUCED"), res.stdout + res.stderr
    strict_host, strict_port = restserver()
    res = subprocess.run(["/usr/bin/python3", "-I", "-S", str(script), f"{strict_host}:{strict_port}"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stdout.strip().endswith("NOT REPRODUCED"), res.stdout + res.stderr
    res = subprocess.run(["/usr/bin/python3", "-I", "-S", str(script), "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "UNREACHABLE" in res.stdout


def test_api_repro_is_standalone():
    src = api_repro(steps=uaf_steps(), ops=OPS, predicate="I-API-UAF", op_id="getItem", detail="d",
                    addr="127.0.0.1:1", version="0", case="getItem-200")
    assert "import probatorium" not in src and "from probatorium" not in src
    compile(src, "repro.py", "exec")
