"""Tier 2 producers as Tier 3 writes: the pairs found in a spec, the payloads, the read-back
comparison and the plans of a producer profile (pure functions, no target)."""

from __future__ import annotations

import json
from pathlib import Path

from probatorium.api.spec import load_spec
from probatorium.api.values import check
from probatorium.validate.tier3 import producers
from probatorium.validate.tier3.plan import Plan
from probatorium.validate.tier3.profile import TargetProfile, build_profile, tier3_contract

REPO = Path(__file__).resolve().parents[3]
AUTH = REPO / "refapps" / "auth_session_ratelimit" / "openapi.yaml"


def test_the_refapp_create_and_its_item_get_are_the_only_pair():
    pairs, login = producers.find_pairs(load_spec(AUTH))
    assert login == "/login"
    assert [(p["create"], p["read"], p["param"], p["id"], p["echoed"], p["delete"]) for p in pairs] == [
        ("/api/users", "/api/users/{id}", "id", "id", ["email", "name"], "/api/users/{id}")]
    # /api/users/{id}/posts (a list, not the item) and the nested createPost are no pairs
    assert tier3_contract(AUTH) is None
    assert "key/value" in tier3_contract(REPO / "tests" / "servers" / "h1server.openapi.yaml")


def test_payloads_are_valid_unique_and_deterministic():
    pair = producers.find_pairs(load_spec(AUTH))[0][0]
    a, b = producers.payload(pair, 0xDEADBEEF, 7, 1), producers.payload(pair, 0xDEADBEEF, 7, 2)
    assert a == producers.payload(pair, 0xDEADBEEF, 7, 1)
    assert not check(pair["schema"], a) and not check(pair["schema"], b)
    assert a["name"] != b["name"] and a["email"] != b["email"]
    assert "deadbeef" in a["name"] and a["email"].endswith("@example.test")
    assert producers.payload(pair, 0xDEADBEEF, 8, 1) != a  # another run's salt


def test_read_back_compares_only_the_echoed_fields():
    pair = {"echoed": ["email", "name"], "id": "id"}
    sent = {"name": "n1", "email": "e@x"}
    assert producers.read_back(pair, sent, 200, json.dumps({"id": 3, **sent, "extra": 1}).encode()) == "same"
    assert producers.read_back(pair, sent, 200, json.dumps({"id": 3, "name": "n1", "email": "f@x"}).encode()) \
        == "garbled"
    assert producers.read_back(pair, sent, 200, b"[]") == "garbled"
    assert producers.read_back(pair, sent, 404, b"") == "absent"
    assert producers.read_back(pair, sent, 401, b"") is None and producers.read_back(pair, sent, None, b"") is None
    assert producers.captured_id(pair, b'{"id": 12}') == "12"
    assert producers.captured_id(pair, b'{"id": true}') is None and producers.captured_id(pair, b"x") is None


def test_login_grants_a_bearer_token_else_cookies():
    assert producers.auth_headers(200, [], b'{"user": "u", "token": "abc"}') == [("Authorization", "Bearer abc")]
    assert producers.auth_headers(200, [(b"Set-Cookie", b"session=s1; path=/; httponly")], b"{}") == \
        [("Cookie", "session=s1")]
    assert producers.auth_headers(401, [], b'{"token": "abc"}') == []


def test_producer_plans_are_values_with_creates_and_reads_after_recovery():
    prof = build_profile(AUTH, ("target-kill", "target-term", "net-reset"), durable=False)
    assert prof.producers and prof.login == "/login" and prof.kv_path == ""
    assert TargetProfile.from_dict(json.loads(json.dumps(prof.as_dict()))) == prof
    for seed in (1, 2, 0xABC):
        plan = Plan.from_seed(seed, prof)
        assert plan.to_json() == Plan.from_seed(seed, prof).to_json()
        assert Plan.from_json(plan.to_json()).digest() == plan.digest()
        ops = {s.op for s in plan.steps}
        assert "put" not in ops and "create" in ops and "verify" in ops
        created = [s.key for s in plan.steps if s.op == "create"]
        assert len(created) == len(set(created))  # every create is a new resource
        assert sorted(s.key for s in plan.steps if s.op == "verify") == sorted(created)
        last = max(p.index for p in plan.phases)
        assert all(s.phase == last for s in plan.steps if s.op == "verify")
    # a key/value profile's JSON has no producer keys (its plans' bytes are as before)
    kv = build_profile(REPO / "tests" / "servers" / "kvserver.openapi.yaml", ("target-kill",), durable=False)
    assert "producers" not in kv.as_dict() and "login" not in kv.as_dict()


def test_ids_captured_before_an_uncovered_fault_are_not_deleted_through():
    import time

    from probatorium.validate.tier3.plan import Step
    from probatorium.validate.tier3.runner import RunContext, _Run

    prof = build_profile(AUTH, ("target-kill",), durable=False)
    ctx = RunContext(address=lambda: ("127.0.0.1", 9), target_address=lambda: ("127.0.0.1", 9), injector=None,
                     clock=time.monotonic, salt=1)
    run = _Run(Plan.from_seed(1, prof), ctx)
    run.ids, run.id_sent = {0: "3", 1: "4"}, {0: 0.5, 1: 3.0}
    run.forgetting = [[1.0, 2.0]]
    assert "predates" in run.producer_request(Step(1, 0, 0, "delete", 0))
    assert run.producer_request(Step(1, 0, 0, "delete", 1))[:2] == ("DELETE", "/api/users/4")
    assert run.producer_request(Step(1, 0, 0, "get", 0))[:2] == ("GET", "/api/users/3")  # a read harms nothing
    run.forgetting.append([4.0, None])  # a fault still on: every id so far may be forgotten
    assert isinstance(run.producer_request(Step(1, 0, 0, "delete", 1)), str)
