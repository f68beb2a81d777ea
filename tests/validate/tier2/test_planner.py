"""Sequences from the restserver's OpenAPI document: dependency-respecting, seeded, well formed."""

from __future__ import annotations

import random
from pathlib import Path

from probatorium.api.deps import infer
from probatorium.api.spec import load_spec
from probatorium.validate.tier2.exchange import step_refs, well_formed
from probatorium.validate.tier2.planner import Planner
from probatorium.validate.tier2.tier import find_login, load_corpus

from .conftest import SPEC


def planner() -> Planner:
    spec = load_spec(SPEC)
    return Planner(spec, infer(spec), find_login(spec, None, None), {"A": "ua", "B": "ub"})


def test_lean_tasks_reach_every_operation_with_its_probes():
    p = planner()
    tasks = p.lean_tasks()
    assert {op for kind, op in tasks if kind == "reach"} == set(p.by_id)
    kinds = {kind for kind, _ in tasks}
    assert {"after-delete", "cross-user", "wrong-parent", "malformed-id", "mutated"} <= kinds
    for i, (kind, op) in enumerate(tasks):
        steps = p.build(kind, op, random.Random(i))
        assert well_formed(steps), (kind, op)
        assert steps[0]["probe"] == steps[1]["probe"] == "login" and steps[0]["user"] != steps[1]["user"]
        assert any(s["op_id"] == op for s in steps)


def test_producers_come_first_and_bindings_point_back():
    p = planner()
    steps = p.build("reach", "getNote", random.Random(1))
    assert [s["op_id"] for s in steps] == ["login", "login", "createItem", "createNote", "getNote"]
    assert steps[-1]["path_params"]["noteId"]["from"] == 3 and step_refs(steps[-1]) == {2, 3}
    wrong = p.build("wrong-parent", "getNote", random.Random(1))
    last = wrong[-1]
    assert last["probe"] == "wrong-parent" and last["path_params"]["itemId"]["from"] != 2


def test_a_refused_create_is_bracketed_by_the_same_read():
    p = planner()
    steps = p.build("mutated", "createItem", random.Random(2))
    for i, st in enumerate(steps):
        if st.get("probe") == "mutated" and steps[i - 1]["op_id"] == "listItems":
            before, after = steps[i - 1], steps[i + 1]
            assert {**before, "id": 0} == {**after, "id": 0} and after["id"] != before["id"]
            break
    else:
        raise AssertionError("no mutated create between two listings")


def test_sequences_are_seeded():
    p = planner()
    assert p.build("mutated", "createItem", random.Random(5)) == p.build("mutated", "createItem", random.Random(5))
    assert p.random_walk(random.Random(9), 6) == p.random_walk(random.Random(9), 6)


def test_login_contract(tmp_path):
    spec = load_spec(SPEC)
    assert find_login(spec, None, None).path == "/login"
    markov = tmp_path / "markov.yaml"
    markov.write_text("login: POST /login\nstates:\n  a: {request: GET /items}\n")
    assert find_login(spec, markov, None).op_id == "login"
    bare = load_spec(b'{"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {}}', name="bare")
    assert find_login(bare, None, None) is None
    assert find_login(bare, None, "/auth").path == "/auth"


def test_corpus_reads_only_sequences(tmp_path):
    (tmp_path / "a.json").write_text('{"steps": [{"id": 0}]}')
    (tmp_path / "b.json").write_text("not json")
    (tmp_path / "c.json").write_text('{"steps": []}')
    assert load_corpus(tmp_path) == [[{"id": 0}]] and load_corpus(None) == []


def test_mutated_task_also_sends_valid_boundary_values():
    # A long string the schema allows is a valid request: a 5xx to it is a crash on a long field
    # value, which only schema-violating mutations would never show when maxLength is absent.
    doc = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {"/notes": {"post": {
        "operationId": "createNote", "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}}}},
        "responses": {"201": {"description": "made"}}}}}}
    import json
    spec = load_spec(json.dumps(doc).encode(), name="notes")
    p = Planner(spec, infer(spec), None, {"A": "ua", "B": "ub"})
    steps = p.build("mutated", "createNote", random.Random(3))
    edges = {s["probe"]: s for s in steps if s["probe"].startswith("boundary: ")}
    assert "boundary: text: very long string" in edges and "boundary: text: unicode string" in edges
    assert all(s["violates"] is None for s in edges.values())
    assert len(edges["boundary: text: very long string"]["body"]["text"]) >= 10_000
    assert any(s["probe"] == "mutated" and s["violates"] for s in steps)


def test_an_authorization_header_parameter_is_left_to_the_login():
    # FastAPI declares `authorization: str = Header()` as a header parameter: a generated value
    # would replace the login's bearer token and every request would be answered 401.
    import json
    doc = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {
        "/login": {"post": {"operationId": "login", "requestBody": {"content": {"application/json": {
            "schema": {"type": "object"}}}}, "responses": {"200": {"description": "ok"}}}},
        "/me": {"get": {"operationId": "me", "parameters": [
            {"name": "authorization", "in": "header", "required": True, "schema": {"type": "string"}},
            {"name": "x-trace", "in": "header", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "ok"}}}}}}
    spec = load_spec(json.dumps(doc).encode(), name="me")
    p = Planner(spec, infer(spec), find_login(spec, None, None), {"A": "ua", "B": "ub"})
    step = p.build("reach", "me", random.Random(1))[-1]
    assert "authorization" not in step["headers"] and "x-trace" in step["headers"]
    bare = Planner(spec, infer(spec), None, {"A": "ua", "B": "ub"})
    assert "authorization" in bare.build("reach", "me", random.Random(1))[-1]["headers"]


def test_cross_user_probe_asks_anonymously_when_the_document_declares_no_security():
    import json
    doc = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {
        "/login": {"post": {"operationId": "login", "requestBody": {"content": {"application/json": {
            "schema": {"type": "object"}}}}, "responses": {"200": {"description": "ok"}}}},
        "/docs": {"post": {"operationId": "createDoc", "responses": {"201": {"description": "made", "content": {
            "application/json": {"schema": {"type": "object", "properties": {"id": {"type": "integer"}}}}}}}}},
        "/docs/{id}": {"get": {"operationId": "getDoc", "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "ok"}}}}}}
    spec = load_spec(json.dumps(doc).encode(), name="docs")
    p = Planner(spec, infer(spec), find_login(spec, None, None), {"A": "ua", "B": "ub"})
    assert ("cross-user", "getDoc") in p.lean_tasks()
    steps = p.build("cross-user", "getDoc", random.Random(1))
    assert [(s["user"], s["probe"]) for s in steps[-2:]] == [("anonymous", "anonymous"), ("B", "cross-user")]
    assert steps[-2]["path_params"] == steps[-1]["path_params"] and well_formed(steps)
    # the restserver declares its security: no anonymous step
    declared = planner()
    assert all(s["user"] != "anonymous" for s in declared.build("cross-user", "getItem", random.Random(1)))


def test_cleanup_deletes_what_a_sequence_created():
    p = planner()
    steps = p.build("reach", "getNote", random.Random(1))
    sweep = p.cleanup(steps, random.Random(2))
    deleted = {(s["op_id"], s["path_params"][s["path"].rsplit("{", 1)[1].rstrip("}")]["from"]) for s in sweep}
    made = {s["op_id"]: s["id"] for s in steps}
    assert {s["probe"] for s in sweep} == {"cleanup"} and all(s["method"] == "DELETE" for s in sweep)
    assert [s["id"] for s in steps + sweep] == list(range(len(steps) + len(sweep)))
    assert any(f == made["createItem"] for _, f in deleted), sweep
    # a child's parent is the one the sequence made, never a new resource
    assert all(s["op_id"] != "createItem" for s in sweep)
    assert p.cleanup(steps[1:], random.Random(2)) == []  # ids are not positions: left alone


def test_wrong_parent_replays_the_parent_when_a_link_feeds_the_parent_id_from_the_child():
    # auth_session_ratelimit: a link gives getPost's `id` from createPost's `user_id`; the probe
    # must make a second *user* (the parent), not a second post under the same user
    spec = load_spec(Path(__file__).resolve().parents[3] / "refapps" / "auth_session_ratelimit" / "openapi.yaml")
    p = Planner(spec, infer(spec), None, {"A": "A", "B": "B"})
    steps = p.build("wrong-parent", "getPost", random.Random(1))
    last = steps[-1]
    parent, child = steps[last["path_params"]["id"]["from"]], steps[last["path_params"]["post_id"]["from"]]
    assert last["probe"] == "wrong-parent" and parent["op_id"] == "createUser" and child["op_id"] == "createPost"
    assert child["path_params"]["id"]["from"] != parent["id"]  # the post was made under the other user
