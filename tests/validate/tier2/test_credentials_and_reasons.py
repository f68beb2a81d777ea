"""API keys bound from their issuer, mutations that survive the wire, and why an operation has no 2xx."""

from __future__ import annotations

import random
from collections import Counter

import yaml

from probatorium.api.deps import infer
from probatorium.api.spec import load_spec
from probatorium.validate.tier2.planner import Planner, body_mutations, wire_media
from probatorium.validate.tier2.tier import Tier2, credential_gap, find_login

OK = {"200": {"description": "ok"}}
DOC = {
    "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
    "components": {"securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer"},
        "basic": {"type": "http", "scheme": "basic"},
        "key": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "cookieKey": {"type": "apiKey", "in": "cookie", "name": "k"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/login": {"post": {"operationId": "login", "security": [], "responses": OK}},
        "/api/keys": {"post": {"operationId": "createApiKey", "responses": {"201": {
            "description": "issued", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"id": {"type": "integer"}, "key": {"type": "string"}}}}}}}}},
        "/keyed": {"get": {"operationId": "keyed", "security": [{"key": []}], "responses": OK}},
        "/admin": {"get": {"operationId": "admin", "security": [{"basic": []}], "responses": OK}},
        "/either": {"get": {"operationId": "either", "security": [{"basic": []}, {"cookieKey": []}],
                            "responses": OK}},
        "/old": {"get": {"operationId": "old", "security": [], "responses": {"301": {"description": "moved"}}}},
        "/ws": {"get": {"operationId": "ws", "security": [], "responses": {"101": {"description": "upgrade"}}}},
        "/blob": {"put": {"operationId": "putBlob", "security": [], "responses": OK, "requestBody": {"content": {
            "*/*": {"schema": {"type": "string", "format": "binary", "maxLength": 4}}}}}},
        "/doc": {"put": {"operationId": "putDoc", "security": [], "responses": OK, "requestBody": {"content": {
            "application/json": {"schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}}}}},
    },
}


def spec():
    return load_spec(yaml.safe_dump(DOC).encode(), name="doc.yaml")


def test_an_api_key_is_bound_to_the_operation_that_issues_it():
    s = spec()
    graph = infer(s)
    assert [(p.op_id, p.source, p.rule) for p in graph.producers_of("keyed", "X-API-Key")] == [
        ("createApiKey", "body:/key", "credential")]
    assert graph.order().index("createApiKey") < graph.order().index("keyed")
    p = Planner(s, graph, find_login(s, None, None), {"A": "ua", "B": "ub"})
    steps = p.build("reach", "keyed", random.Random(1))
    issuer = next(st["id"] for st in steps if st["op_id"] == "createApiKey")
    assert steps[-1]["headers"]["X-API-Key"] == {"from": issuer, "source": "body:/key"}


def test_credential_gap_names_what_tier2_is_not_given():
    s = spec()
    graph, login = infer(s), find_login(s, None, None)
    assert credential_gap(s, graph, s.op("keyed"), login) == ""
    assert credential_gap(s, graph, s.op("createApiKey"), login) == ""  # a bearer token from the login
    assert credential_gap(s, graph, s.op("createApiKey"), None) == "HTTP bearer credentials (security scheme bearer)"
    assert credential_gap(s, graph, s.op("admin"), login) == "HTTP basic credentials (security scheme basic)"
    assert credential_gap(s, graph, s.op("either"), login) == (
        "HTTP basic credentials (security scheme basic) or an API key (cookie 'k', security scheme cookieKey) "
        "that no operation of the document issues")


def test_raw_bodies_keep_only_mutations_their_text_still_breaks():
    s = spec()
    blob = body_mutations(s.op("putBlob"), random.Random(3))
    assert blob and all(isinstance(m.value, str) for m in blob)
    assert {m.violates for m in blob} == {"maxLength"}  # a "wrong type" 5 is the valid text "5"
    assert "type" in {m.violates for m in body_mutations(s.op("putDoc"), random.Random(3))}
    assert wire_media("*/*") == "application/octet-stream" and wire_media("text/*") == "text/plain"
    assert wire_media("application/json") == "application/json"
    p = Planner(s, infer(s), find_login(s, None, None), {"A": "ua", "B": "ub"})
    assert p.build("reach", "putBlob", random.Random(1))[-1]["media_type"] == "application/octet-stream"


def test_unreached_says_why():
    s = spec()
    t = Tier2()
    t.spec, t.graph, t.login = s, infer(s), find_login(s, None, None)
    t.upgrades = {"ws"}
    t.coverage = {"login": Counter({"200": 2}), "createApiKey": Counter({"201": 1}), "keyed": Counter({"401": 3}),
                  "admin": Counter({"401": 3}), "old": Counter({"301": 1}), "putDoc": Counter({"422": 2})}
    why = t._unreached()
    assert why["ws"].startswith("not sent: a protocol upgrade (it declares 101")
    assert why["old"] == "by design: the operation declares no 2xx response (it declares 301); statuses seen: 301"
    assert why["admin"] == ("needs HTTP basic credentials (security scheme basic), which Tier 2 is not given; "
                            "statuses seen: 401")
    assert why["keyed"] == "no 2xx; statuses seen: 401"  # its key is issued: a 401 is the target's answer
    assert why["putDoc"] == "no 2xx; statuses seen: 422"
    assert why["either"].startswith("needs HTTP basic credentials") and "putBlob" in why
    assert set(why) == {"ws", "old", "admin", "keyed", "putDoc", "either", "putBlob"}


def test_a_walker_gets_new_users_every_lifetime():
    class Env:
        cell_seed = 7

    t = Tier2()
    first, again, later = t._users(Env, 1), t._users(Env, 1, 0), t._users(Env, 1, 3)
    assert first == again and set(first) == {"A", "B"} and first["A"] != first["B"]
    assert not set(first.values()) & set(later.values())
    assert not set(t._users(Env, 2, 3).values()) & set(later.values())
