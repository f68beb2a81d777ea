"""The step language: literals, bindings to body fields, Location headers and forwarded request params."""

from __future__ import annotations

import json

import pytest

from probatorium.validate.tier2.exchange import Exchange, capture, parse_response, render


def produced(status=201, body=None, headers=(), params=None) -> Exchange:
    return Exchange(step=0, op_id="create", user="A", method="POST", path="/items", status=status,
                    response_headers=[list(h) for h in headers], response_body=json.dumps(body or {}),
                    request_params=params or {})


def test_render_resolves_every_kind_of_binding():
    done = {0: produced(body={"id": 7, "tok": "t"}, headers=[("Location", "/items/7/")], params={"path.org": "o1"})}
    step = {"id": 1, "op_id": "get", "user": "A", "method": "PUT", "path": "/orgs/{org}/items/{id}",
            "path_params": {"org": {"from": 0, "source": "request:path.org"},
                            "id": {"from": 0, "source": "header:Location"}},
            "query": {"q": {"value": "a b"}}, "headers": {"X-Token": {"from": 0, "source": "body:/tok"}},
            "body": {"ref": {"$bind": {"from": 0, "source": "body:/id"}}, "n": None}, "media_type": "application/json"}
    target, headers, body, bindings, params = render(step, done, {"A": {"Authorization": "Bearer z"}})
    assert target == "/orgs/o1/items/7?q=a+b"
    assert ["Authorization", "Bearer z"] in headers and ["X-Token", "t"] in headers
    assert json.loads(body) == {"ref": 7, "n": None}
    assert bindings["id"]["user"] == "A" and bindings["id"]["in"] == "path" and params["path.id"] == "7"


def test_a_refused_producer_binds_nothing():
    with pytest.raises(KeyError):
        capture("body:/id", produced(status=400, body={"id": 1}))
    with pytest.raises(KeyError):
        capture("body:/missing", produced(body={"id": 1}))


def test_parse_response_handles_chunked_and_interim():
    raw = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
           b"Content-Type: application/json\r\n\r\n3\r\n{\"a\r\n5\r\n\": 1}\r\n0\r\n\r\n")
    status, headers, body = parse_response(raw)
    assert status == 200 and json.loads(body) == {"a": 1}
    assert parse_response(b"garbage") == (None, [], "")
