"""Markov walks against an in-memory target: reproducible per seed, captured ids only, tallies."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

from fakes import FakeRest

from probatorium.validate.openapi import load_operations
from probatorium.validate.tier1.markov.slice import MarkovSlice
from probatorium.validate.tier1.markov.values import Bindings, Templates, captures, generate

ROOT = Path(__file__).resolve().parents[3]
REFAPP = ROOT / "refapps" / "auth_session_ratelimit"
OPS = load_operations(REFAPP / "openapi.yaml")


def walk(seed: int, steps: int = 400, markov: object = REFAPP / "markov.yaml", **kw) -> tuple[MarkovSlice, FakeRest, list]:
    rest = FakeRest(**kw)
    evidence: list = []
    s = MarkovSlice("127.0.0.1", 1, openapi=OPS, markov=markov, seed=seed, report=evidence.append,
                    connection_factory=rest.connection, max_steps=steps)
    asyncio.run(s.walker(0, time.monotonic() + 30, lambda: False))
    return s, rest, evidence


def test_same_seed_same_walk() -> None:
    a, ra, _ = walk(7)
    b, rb, _ = walk(7)
    assert ra.log == rb.log  # same requests, same bodies, same order
    assert a.trace(0) == b.trace(0)
    c, rc, _ = walk(8)
    assert rc.log != ra.log


def test_walk_uses_captured_ids_and_never_sends_a_template() -> None:
    s, rest, evidence = walk(11, steps=600)
    assert evidence == []
    assert not any("{" in t or "}" in t for _, t, _ in rest.log)
    c = s.counters()
    assert c["5xx"] == 0 and c["errors"] == 0
    assert c["captured"] > 10 and c["captured_used"] > 50
    ops = s.per_operation()
    for key in ("GET /api/users/{id}", "POST /api/users/{id}/posts", "GET /api/users/{id}/posts/{post_id}",
                "DELETE /api/users/{id}", "POST /logout"):
        assert ops[key]["2xx"] > 0, (key, ops.get(key))
    # ids hit real resources: a 404 only if the walker itself deleted the user before
    assert sum(v.get("404", 0) for v in ops.values()) == 0
    assert c["sessions"] >= 2 and c["logins"] >= c["sessions"] + 1  # logout ends a session, the next logs in
    assert c["requests"] == sum(v["requests"] for v in ops.values())


def test_bodies_follow_the_schema() -> None:
    _, rest, _ = walk(3, steps=200)
    bodies = [json.loads(b) for m, t, b in rest.log if m == "POST" and t == "/api/users"]
    assert bodies
    for b in bodies:
        assert isinstance(b["name"], str) and 1 <= len(b["name"]) <= 200
        assert "@" in b["email"] and 3 <= len(b["email"]) <= 320
    logins = [json.loads(b) for m, t, b in rest.log if t == "/login"]
    assert logins[0]["username"].startswith("walker-") and logins[0]["password"]


def test_relogin_on_401() -> None:
    rest = FakeRest()
    s = MarkovSlice("127.0.0.1", 1, openapi=OPS, markov=REFAPP / "markov.yaml", seed=1,
                    connection_factory=rest.connection, max_steps=50)

    orig = rest.handle
    calls = {"n": 0}

    def flaky(method, target, headers, body):
        calls["n"] += 1
        if calls["n"] == 10:  # the session is lost once
            headers = [h for h in headers if h[0] != "Cookie"]
        return orig(method, target, headers, body)

    rest.handle = flaky
    asyncio.run(s.walker(0, time.monotonic() + 30, lambda: False))
    c = s.counters()
    assert c["relogins"] == 1 and c["4xx"] == 1


def test_x_invariant_is_reported() -> None:
    s, _, evidence = walk(5, steps=100, fail_invariant_every=17)
    c = s.counters()
    assert c["invariant_hits"] >= 3 and c["invariant_I-MW-SESSION"] == c["invariant_hits"]
    assert c["5xx"] == c["invariant_hits"]
    assert {e.predicate for e in evidence} == {"I-MW-SESSION"}
    ev = evidence[0]
    assert ev.extra["trace"] and ev.extra["walker_seed"].startswith("0x") and ev.sent and ev.received


def test_unfillable_transitions_are_skipped(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("start: a\nstates:\n  a:\n    request: GET /me\n    b: 100\n    a: 1\n"
                 "  b:\n    request: GET /api/users/{id}\n    a: 1\n")
    rest = FakeRest()
    s = MarkovSlice("127.0.0.1", 1, openapi=OPS, markov=p, seed=2, connection_factory=rest.connection,
                    max_steps=30)
    s.model.login = ("POST", "/login")
    asyncio.run(s.walker(0, time.monotonic() + 30, lambda: False))
    assert {t for _, t, _ in rest.log} == {"/login", "/me"}


def test_default_chain_walk() -> None:
    s, rest, evidence = walk(9, steps=400, markov=None)
    assert not any("{" in t for _, t, _ in rest.log)
    ops = s.per_operation()
    assert ops["POST /api/users"]["2xx"] > 0 and ops["GET /api/users/{id}"]["2xx"] > 0
    assert evidence == []


def test_captures_from_location_and_json() -> None:
    t = Templates([o.path for o in OPS])
    got = captures(t, "/api/users", {}, 201, b"/api/users/5", b'{"id": 5, "name": "a"}', b"application/json")
    assert {"id": "5"} in got
    got = captures(t, "/api/users/{id}/posts", {"id": "5"}, 201, b"http://h/api/users/5/posts/9",
                   b'{"id": 9, "user_id": 5}', b"application/json")
    assert got == [{"id": "5", "post_id": "9"}, {"id": "5", "post_id": "9"}]
    b = Bindings()
    b.add({"id": "5"})
    b.add({"id": "5", "post_id": "9"})
    rng = random.Random(0)
    assert b.choose(["id", "post_id"], rng) == {"id": "5", "post_id": "9"}
    b.forget({"id": "5"})
    assert b.choose(["id"], rng) is None


def test_generate_respects_schema_keywords() -> None:
    rng = random.Random(1)
    schema = {"type": "object", "required": ["a", "e", "k", "n"], "properties": {
        "a": {"type": "string", "minLength": 5, "maxLength": 6},
        "e": {"type": "string", "format": "email"},
        "k": {"enum": ["x", "y"]},
        "n": {"type": "integer", "minimum": 3, "maximum": 4},
        "l": {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 2}}}
    for _ in range(50):
        v = generate(schema, rng)
        assert 5 <= len(v["a"]) <= 6 and "@" in v["e"] and v["k"] in ("x", "y") and v["n"] in (3, 4)
        if "l" in v:
            assert len(v["l"]) == 2 and all(isinstance(x, bool) for x in v["l"])
