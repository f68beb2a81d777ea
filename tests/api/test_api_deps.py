"""Producer → consumer inference on the refapps' real specs and on small hand-written ones."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from probatorium.api.deps import Producer, infer, load_annotations
from probatorium.api.spec import load_spec
from probatorium.errors import UsageError

REFAPPS = Path(__file__).resolve().parents[2] / "refapps"


def spec_of(paths: str, components: str = ""):
    text = "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n" + textwrap.indent(textwrap.dedent(paths), "  ")
    if components:
        text += "components:\n" + textwrap.indent(textwrap.dedent(components), "  ")
    return load_spec(text, name="hand.yaml")


def sources(graph, op_id: str, param: str) -> list[tuple[str, str]]:
    return [(p.op_id, p.source) for p in graph.producers_of(op_id, param)]


# ---------------------------------------------------------------------------------------
# The refapps' specs


def test_users_and_posts_of_auth_session_ratelimit() -> None:
    g = infer(load_spec(REFAPPS / "auth_session_ratelimit" / "openapi.yaml"))
    assert sources(g, "getUser", "id") == [("createUser", "body:/id"), ("createUser", "header:Location")]
    assert g.producers_of("getUser", "id")[0] == Producer("createUser", "body:/id")
    assert g.producers_of("getUser", "id")[0].rule == "link"  # the spec's own links come first
    # the nested resource: the user from the post's user_id (a link), the post from the post's id
    assert sources(g, "getPost", "id")[0] == ("createPost", "body:/user_id")
    assert ("createUser", "body:/id") in sources(g, "getPost", "id")
    assert sources(g, "getPost", "post_id") == [("createPost", "body:/id"), ("createPost", "header:Location")]
    assert ("createPost", "body:/id") not in sources(g, "getUser", "id")  # a post's id is not a user's
    order = g.order()
    assert order.index("createUser") < order.index("createPost") < order.index("getPost")
    assert order.index("getPost") < order.index("deleteUser") and order.index("logout") > order.index("getPost")
    assert sorted(order) == sorted(o.op_id for o in g.spec.operations)
    assert set(g.unsatisfiable()) == {o.op_id for o in g.spec.operations if o.path.startswith("/echo/")
                                      and o.method != "PUT"}
    assert {c.op_id for c in g.consumers_of("createUser")} >= {"getUser", "updateUser", "deleteUser", "createPost"}


def test_csrf_header_and_notes_of_auth_jwt_csrf() -> None:
    g = infer(load_spec(REFAPPS / "auth_jwt_csrf" / "openapi.yaml"))
    assert sources(g, "createNote", "X-CSRF-Token") == [("getCsrfToken", "body:/csrf_token")]
    assert sources(g, "deleteNote", "id") == [("createNote", "body:/id"), ("createNote", "header:Location")]
    assert g.unsatisfiable() == {}


@pytest.mark.parametrize("refapp,consumer,param,producer", [
    ("driver_postgres", "getItem", "id", "createItem"),
    ("driver_postgres", "getKey", "key", "createKey"),
    ("driver_redis", "incrCounter", "counter", "createCounter"),
    ("driver_memcached", "deleteKey", "key", "createKey"),
    ("kitchen_sink", "patchOrder", "id", "createOrder"),
    ("observability", "deleteItem", "id", "createItem"),
])
def test_every_refapp_resource_has_its_creator(refapp: str, consumer: str, param: str, producer: str) -> None:
    g = infer(load_spec(REFAPPS / refapp / "openapi.yaml"))
    assert g.producers_of(consumer, param)[0].op_id == producer
    assert g.order().index(producer) < g.order().index(consumer)


def test_every_refapp_graph_formats() -> None:
    for path in sorted(REFAPPS.glob("*/openapi.yaml")):
        g = infer(load_spec(path))
        text = g.format()
        assert len(text.splitlines()) == len(g.edges) + len(g.unsatisfiable())
        assert sorted(g.order()) == sorted(o.op_id for o in g.spec.operations)


# ---------------------------------------------------------------------------------------
# Hand-written specs


SHOP = """\
/items:
  post:
    operationId: createItem
    requestBody:
      content:
        application/json: {schema: {type: object, properties: {name: {type: string}}}}
    responses:
      '201':
        description: created
        headers: {Location: {schema: {type: string}}}
        content:
          application/json:
            schema: {type: object, properties: {id: {type: integer}, name: {type: string}}}
/items/{id}:
  get:
    operationId: getItem
    parameters: [{name: id, in: path, required: true, schema: {type: integer}}]
    responses: {'200': {description: ok}}
  delete:
    operationId: deleteItem
    parameters: [{name: id, in: path, required: true, schema: {type: integer}}]
    responses: {'204': {description: gone}}
/reviews:
  post:
    operationId: createReview
    parameters: [{name: itemId, in: query, required: true, schema: {type: integer}}]
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties: {item_id: {type: integer}, text: {type: string}, name: {type: string}}
    responses:
      '201':
        description: created
        content:
          application/json: {schema: {type: object, properties: {review_id: {type: string, format: uuid}}}}
/reviews/{reviewId}:
  get:
    operationId: getReview
    parameters: [{name: reviewId, in: path, required: true, schema: {type: string}}]
    responses: {'200': {description: ok}}
/counts/{review_id}:
  get:
    operationId: countsByReview
    parameters: [{name: review_id, in: path, required: true, schema: {type: integer}}]
    responses: {'200': {description: ok}}
/orphans/{orphanId}:
  get:
    operationId: getOrphan
    parameters: [{name: orphanId, in: path, required: true, schema: {type: string}}]
    responses: {'200': {description: ok}}
"""


def test_rules_on_a_hand_written_spec() -> None:
    g = infer(spec_of(SHOP))
    assert [(p.op_id, p.source, p.rule) for p in g.producers_of("getItem", "id")] == [
        ("createItem", "body:/id", "collection"), ("createItem", "header:Location", "location")]
    assert sources(g, "createReview", "itemId") == [("createItem", "body:/id")]  # stem: itemId ← POST /items
    assert sources(g, "createReview", "body:/item_id") == [("createItem", "body:/id")]
    assert sources(g, "createReview", "body:/name") == []  # not an identifier: never inferred
    assert sources(g, "getReview", "reviewId") == [("createReview", "body:/review_id")]  # name rule
    assert sources(g, "countsByReview", "review_id") == []  # a uuid is no integer
    assert g.unsatisfiable() == {
        "countsByReview": "path parameter 'review_id': no response field, Location header, link or annotation "
                          "produces it",
        "getOrphan": "path parameter 'orphanId': no response field, Location header, link or annotation produces it"}
    assert g.order() == ["createItem", "getItem", "createReview", "getReview", "countsByReview", "getOrphan",
                         "deleteItem"]
    assert g.format().splitlines()[:3] == ["createItem --body:/id--> getItem.id",
                                           "createItem --header:Location--> getItem.id",
                                           "createItem --body:/id--> deleteItem.id"]
    assert g.format().splitlines()[-1].startswith("unsatisfied: getOrphan: path parameter 'orphanId'")


LINKED = """\
/sessions:
  post:
    operationId: openSession
    responses:
      '201':
        description: opened
        headers: {X-Session: {schema: {type: string}}}
        content:
          application/json: {schema: {type: object, properties: {handle: {type: string}}}}
        links:
          Read:
            operationRef: '#/paths/~1things~1{thing}/get'
            parameters: {thing: '$response.body#/handle', 'header.X-Session': '$response.header.X-Session'}
/things/{thing}:
  get:
    parameters:
      - {name: thing, in: path, required: true, schema: {type: string}}
      - {name: X-Session, in: header, schema: {type: string}}
    responses:
      '200':
        description: ok
        content:
          application/json: {schema: {type: object, properties: {next: {type: string}}}}
        links:
          Again:
            operationId: again
            parameters: {slot: '$request.path.thing'}
/again/{slot}:
  put:
    operationId: again
    parameters: [{name: slot, in: path, required: true, schema: {type: string}}]
    responses: {'200': {description: ok}}
"""


def test_links_by_operation_ref_header_and_request() -> None:
    g = infer(spec_of(LINKED))
    assert [(p.op_id, p.source, p.rule) for p in g.producers_of("get_things_by_thing", "thing")] == [
        ("openSession", "body:/handle", "link")]
    assert sources(g, "get_things_by_thing", "X-Session") == [("openSession", "header:X-Session")]
    assert sources(g, "again", "slot") == [("get_things_by_thing", "request:path.thing")]
    assert g.order() == ["openSession", "get_things_by_thing", "again"]


def test_annotations_add_what_inference_misses(tmp_path: Path) -> None:
    spec = spec_of(SHOP)
    f = tmp_path / "deps.yaml"
    f.write_text("- producer: createReview\n  field: /review_id\n  consumer: getOrphan\n  param: orphanId\n"
                 "- {producer: 'POST /items', field: Location, consumer: countsByReview, param: review_id}\n")
    g = infer(spec, load_annotations(f))
    assert [(p.op_id, p.source, p.rule) for p in g.producers_of("getOrphan", "orphanId")] == [
        ("createReview", "body:/review_id", "annotation")]
    assert sources(g, "countsByReview", "review_id") == [("createItem", "header:Location")]
    assert g.unsatisfiable() == {}
    assert g.order().index("createReview") < g.order().index("getOrphan")
    g2 = infer(spec, {"dependencies": [{"producer": "createItem", "field": "/name", "consumer": "createReview",
                                        "param": "/text"}]})
    assert sources(g2, "createReview", "body:/text") == [("createItem", "body:/name")]


@pytest.mark.parametrize("entries,message", [
    ([{"producer": "nope", "field": "/id", "consumer": "getItem", "param": "id"}], "entry 0: no operation 'nope'"),
    ([{"producer": "createItem", "field": "/id", "consumer": "getItem", "param": "zz"}],
     "entry 0: getItem has no parameter 'zz' (known: id)"),
    ([{"producer": "createItem", "consumer": "getItem", "param": "id"}], "entry 0: missing or not a string: field"),
    ({"dependencies": 3}, "must be a list"),
])
def test_bad_annotations_are_usage_errors(entries, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        infer(spec_of(SHOP), entries)


def test_cycles_are_broken_deterministically() -> None:
    g = infer(spec_of("""\
        /a/{bId}:
          post:
            operationId: makeA
            parameters: [{name: bId, in: path, required: true, schema: {type: string}}]
            responses:
              '201':
                description: ok
                content: {application/json: {schema: {type: object, properties: {aId: {type: string}}}}}
        /b/{aId}:
          post:
            operationId: makeB
            parameters: [{name: aId, in: path, required: true, schema: {type: string}}]
            responses:
              '201':
                description: ok
                content: {application/json: {schema: {type: object, properties: {bId: {type: string}}}}}
        """))
    assert sources(g, "makeA", "bId") == [("makeB", "body:/bId")] and sources(g, "makeB", "aId") == [("makeA", "body:/aId")]
    assert g.order() == ["makeA", "makeB"] == infer(g.spec).order()
