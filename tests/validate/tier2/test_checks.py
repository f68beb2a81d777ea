"""Every Tier 2 checker is pure over recorded exchanges: tested with hand-written sequences."""

from __future__ import annotations

import json

from probatorium.validate.tier2.checks import CHECKERS, check_sequence
from probatorium.validate.tier2.exchange import Exchange
from probatorium.validate.tier2.minischema import schema_errors

ITEM = {"type": "object", "required": ["id", "qty"], "additionalProperties": False,
        "properties": {"id": {"type": "integer"}, "qty": {"type": "integer"}, "kind": {"enum": ["a", "b"]}}}
JSON = "application/json"
OPS = {
    "createItem": {"method": "POST", "path": "/items", "secured": True,
                   "responses": {"201": {JSON: ITEM}, "400": {JSON: {}}}},
    "listItems": {"method": "GET", "path": "/items", "secured": True, "responses": {"200": {JSON: {"type": "array"}}}},
    "getItem": {"method": "GET", "path": "/items/{id}", "secured": True,
                "responses": {"200": {JSON: ITEM}, "400": {JSON: {}}, "404": {JSON: {}}, "503": {}}},
    "deleteItem": {"method": "DELETE", "path": "/items/{id}", "secured": True, "responses": {"204": {}, "404": {}}},
    "getNote": {"method": "GET", "path": "/items/{id}/notes/{nid}", "secured": True, "responses": {"200": {}}},
    "open": {"method": "GET", "path": "/open", "responses": {"default": {}}},
}


def ex(step, op, method, path, status, body=None, *, user="A", ctype=JSON, headers=(), **kw) -> Exchange:
    text = body if isinstance(body, str) else ("" if body is None else json.dumps(body))
    hdrs = ([["Content-Type", ctype]] if text else []) + [list(h) for h in headers]
    return Exchange(step=step, op_id=op, user=user, method=method, path=path, status=status,
                    response_headers=hdrs, response_body=text, **kw)


def preds(seq, only=None):
    return [(f.predicate, f.op_id, f.status) for f in check_sequence(seq, OPS, schema_errors, only)[1]]


def bind(value, user="A", path="/items", step=0):
    return {"value": value, "from": step, "source": "body:/id", "user": user, "path": path, "in": "path"}


def test_every_checker_states_its_property():
    assert set(CHECKERS) == {"I-API-5XX", "I-API-OBJ", "I-API-UAF", "I-API-LEAK", "I-API-AUTHZ",
                             "I-API-HIERARCHY", "I-API-SCHEMA", "I-API-LAX"}
    assert all(c.property.endswith(".") for c in CHECKERS.values())


def test_5xx_and_its_exceptions():
    assert preds([ex(0, "getItem", "GET", "/items/1", 500, {"error": "x"})], "I-API-5XX") == [
        ("I-API-5XX", "getItem", 500)]
    # a declared 503 (circuit breaker) is not a finding; a 501 to an undeclared method neither
    assert preds([ex(0, "getItem", "GET", "/items/1", 503)], "I-API-5XX") == []
    assert preds([ex(0, "getItem", "PATCH", "/items/1", 501)], "I-API-5XX") == []
    assert preds([ex(0, "getItem", "GET", "/items/1", 501)], "I-API-5XX") == [("I-API-5XX", "getItem", 501)]
    # an x-invariant tag counts once, for the predicate it names
    tagged = ex(0, "getItem", "GET", "/items/1", 500, {"x-invariant": "I-DRV-1"})
    assert preds([tagged]) == [("I-DRV-1", "getItem", 500)]


def test_obj_takes_malformed_id_5xx():
    seq = [ex(0, "getItem", "GET", "/items/abc", 500, {"error": "x"}, probe="malformed-id")]
    assert preds(seq) == [("I-API-OBJ", "getItem", 500)]
    assert preds([ex(0, "getItem", "GET", "/items/abc", 400, {"error": "x"}, probe="malformed-id")]) == []


def test_uaf():
    seq = [ex(0, "deleteItem", "DELETE", "/items/1", 204, bindings={"id": bind(1)}),
           ex(1, "getItem", "GET", "/items/1", 200, {"id": 1, "qty": 1})]
    assert preds(seq, "I-API-UAF") == [("I-API-UAF", "getItem", 200)]
    # not a created resource (no producer binding), or re-created by PUT: not a finding
    assert preds([ex(0, "deleteItem", "DELETE", "/items/1", 204), seq[1]], "I-API-UAF") == []
    assert preds([seq[0], ex(1, "getItem", "PUT", "/items/1", 200, {"id": 1, "qty": 1})], "I-API-UAF") == []
    # a 2xx PUT on the deleted path creates it again (RFC 9110 §9.3.4): reading it then is fine
    recreated = [seq[0], ex(1, "getItem", "PUT", "/items/1", 201, {"id": 1, "qty": 1}), seq[1]]
    assert preds(recreated, "I-API-UAF") == []
    refused = [seq[0], ex(1, "getItem", "PUT", "/items/1", 400, {"error": "x"}), seq[1]]
    assert preds(refused, "I-API-UAF") == [("I-API-UAF", "getItem", 200)]
    seq[1] = ex(1, "getItem", "GET", "/items/1", 404, {"error": "gone"})
    assert preds(seq, "I-API-UAF") == []
    assert CHECKERS["I-API-UAF"].run(seq, OPS)[0] == 1


def test_leak():
    before = ex(0, "listItems", "GET", "/items", 200, [{"id": 1}])
    post = ex(1, "createItem", "POST", "/items", 400, {"error": "bad kind"})
    after = ex(2, "listItems", "GET", "/items", 200, [{"id": 1}, {"id": 2}])
    assert preds([before, post, after], "I-API-LEAK") == [("I-API-LEAK", "createItem", 400)]
    assert preds([before, post, ex(2, "listItems", "GET", "/items", 200, [{"id": 1}])], "I-API-LEAK") == []
    # a read with another query (a page cursor, a filter) is another listing: no evidence
    paged = ex(0, "listItems", "GET", "/items?from=99", 200, [])
    assert preds([paged, post, after], "I-API-LEAK") == []
    # another user's list is no evidence
    assert preds([before, post, ex(2, "listItems", "GET", "/items", 200, [{"id": 9}], user="B")], "I-API-LEAK") == []


def test_authz():
    foreign = ex(3, "getItem", "GET", "/items/7", 200, {"id": 7, "qty": 1}, user="B", bindings={"id": bind(7)})
    assert preds([foreign], "I-API-AUTHZ") == [("I-API-AUTHZ", "getItem", 200)]
    refused = ex(3, "getItem", "GET", "/items/7", 404, {"error": "x"}, user="B", bindings={"id": bind(7)})
    assert preds([refused], "I-API-AUTHZ") == []
    own = ex(3, "getItem", "GET", "/items/7", 200, {"id": 7, "qty": 1}, user="A", bindings={"id": bind(7)})
    assert preds([own], "I-API-AUTHZ") == []


def test_authz_without_declared_security_needs_the_anonymous_refusal():
    # The document states no security: B reading A's resource is judged only when the operation
    # refused an anonymous request (401/403), i.e. the target authenticates its users there.
    ops = {**OPS, "getOpen": {"method": "GET", "path": "/docs/{id}", "responses": {"200": {}}}}
    b_reads = ex(4, "getOpen", "GET", "/docs/7", 200, {"id": 7}, user="B", bindings={"id": bind(7)})

    def run(seq):
        return [(f.predicate, f.op_id, f.status) for f in check_sequence(seq, ops, schema_errors, "I-API-AUTHZ")[1]]

    assert run([b_reads]) == []
    anon = ex(3, "getOpen", "GET", "/docs/7", 401, {"detail": "login"}, user="anonymous", probe="anonymous",
              bindings={"id": bind(7)})
    assert run([anon, b_reads]) == [("I-API-AUTHZ", "getOpen", 200)]
    public = ex(3, "getOpen", "GET", "/docs/7", 200, {"id": 7}, user="anonymous", probe="anonymous",
                bindings={"id": bind(7)})
    assert run([public, b_reads]) == []  # readable by anyone: a public resource, no finding


def test_hierarchy():
    wrong = {"id": bind(2, path="/items"), "nid": bind(5, path="/items/1/notes")}
    seq = [ex(4, "getNote", "GET", "/items/2/notes/5", 200, {}, bindings=wrong)]
    assert preds(seq, "I-API-HIERARCHY") == [("I-API-HIERARCHY", "getNote", 200)]
    right = {"id": bind(1, path="/items"), "nid": bind(5, path="/items/1/notes")}
    assert preds([ex(4, "getNote", "GET", "/items/1/notes/5", 200, {}, bindings=right)], "I-API-HIERARCHY") == []


def test_schema_high_and_med():
    assert preds([ex(0, "getItem", "GET", "/items/1", 200, {"id": 1, "qty": "3"})], "I-API-SCHEMA") == [
        ("I-API-SCHEMA", "getItem", 200)]
    assert preds([ex(0, "getItem", "GET", "/items/1", 200, "<p>hi</p>", ctype="text/html")], "I-API-SCHEMA") == [
        ("I-API-SCHEMA", "getItem", 200)]
    assert preds([ex(0, "getItem", "GET", "/items/1", 200, {"id": 1, "qty": 3})], "I-API-SCHEMA") == []
    _, (f,) = check_sequence([ex(0, "getItem", "GET", "/items/1", 418, {"e": 1})], OPS, schema_errors, "I-API-SCHEMA")
    assert f.severity == "MED"
    # RFC-correct answers and a default response are never findings
    assert preds([ex(0, "getItem", "GET", "/items/1", 415, {"e": 1})], "I-API-SCHEMA") == []
    assert preds([ex(0, "getItem", "PUT", "/items/1", 405, {"e": 1}, headers=[("Allow", "GET")])], "I-API-SCHEMA") == []
    assert preds([ex(0, "open", "GET", "/open", 299, {"e": 1})], "I-API-SCHEMA") == []


def test_lax():
    seq = [ex(0, "createItem", "POST", "/items", 201, {"id": 1, "qty": 0}, violates="/kind: enum")]
    assert preds(seq, "I-API-LAX") == [("I-API-LAX", "createItem", 201)]
    seq = [ex(0, "createItem", "POST", "/items", 400, {"error": "x"}, violates="/kind: enum")]
    assert preds(seq, "I-API-LAX") == []


def test_minischema():
    assert schema_errors(ITEM, {"id": 1, "qty": 2}) == []
    assert schema_errors(ITEM, {"id": 1}) and schema_errors(ITEM, {"id": 1, "qty": 2, "x": 1})
    assert schema_errors({"type": "string", "maxLength": 2}, "abc")
    assert schema_errors({"type": "integer", "nullable": True}, None) == []
    assert schema_errors({"type": "number", "minimum": 1, "exclusiveMinimum": True}, 1)
    assert schema_errors({"oneOf": [{"type": "integer"}, {"type": "number"}]}, 1)
