"""The OpenAPI loader: bad documents name file, JSON pointer and line; good ones become the model."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from probatorium.api.spec import ApiSpec, SpecError, derive_op_id, load_spec
from probatorium.errors import UsageError

REFAPPS = Path(__file__).resolve().parents[2] / "refapps"


def doc30(paths: str, extra: str = "") -> str:
    head = "openapi: 3.0.3\ninfo: {title: t, version: '1'}\n"
    return head + "paths:\n" + textwrap.indent(textwrap.dedent(paths), "  ") + textwrap.dedent(extra)


def error_of(source, **kw) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(source, **kw)
    assert isinstance(info.value, UsageError)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------
# Bad documents


def test_yaml_error_names_pointer_and_line(tmp_path: Path) -> None:
    f = tmp_path / "api.yaml"
    f.write_text(doc30("""\
        /items:
          get:
            responses: 5
        """))
    msg = error_of(f)
    assert msg.startswith(f"{f}: #/paths/~1items/get/responses (line 6): ")
    assert "not of type" in msg


def test_json_error_names_pointer_and_line(tmp_path: Path) -> None:
    doc = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
           "paths": {"/items": {"get": {"responses": {"200": {"description": "ok"}}}},
                     "/other": {"post": {"responses": []}}}}
    f = tmp_path / "api.json"
    f.write_text(json.dumps(doc, indent=2))
    lines = f.read_text().splitlines()
    expected = next(i for i, ln in enumerate(lines, 1) if '"responses": []' in ln)
    msg = error_of(f)
    assert msg.startswith(f"{f}: #/paths/~1other/post/responses (line {expected}): ")


def test_json_given_as_bytes_with_a_name() -> None:
    text = '{"openapi": "3.0.3",\n "info": {"title": "t"},\n "paths": {}}'
    msg = error_of(text.encode(), name="http://h/openapi.json")
    assert msg.startswith("http://h/openapi.json: #/info (line 2): ") and "version" in msg


def test_missing_ref_target_names_the_referring_node(tmp_path: Path) -> None:
    f = tmp_path / "api.yaml"
    f.write_text(doc30("""\
        /items:
          get:
            responses:
              '200':
                description: ok
                content:
                  application/json:
                    schema:
                      $ref: '#/components/schemas/Missing'
        """))
    msg = error_of(f)
    assert msg.startswith(f"{f}: #/paths/~1items/get/responses/200/content/application~1json/schema (line 11): ")
    assert "'#/components/schemas/Missing'" in msg


def test_missing_relative_file(tmp_path: Path) -> None:
    f = tmp_path / "api.yaml"
    f.write_text(doc30("""\
        /items:
          get:
            responses:
              '200':
                $ref: 'responses.yaml#/Ok'
        """))
    msg = error_of(f)
    assert msg.startswith(f"{f}: #/paths/~1items/get/responses/200 (line 7): unresolvable $ref 'responses.yaml#/Ok'")


def test_invalid_31_document(tmp_path: Path) -> None:
    f = tmp_path / "api.yaml"
    f.write_text(textwrap.dedent("""\
        openapi: 3.1.0
        info:
          title: t
          version: '1'
        paths:
          /items:
            get:
              parameters:
                - name: q
                  in: body
              responses:
                '200': {description: ok}
        """))
    msg = error_of(f)
    assert msg.startswith(f"{f}: #/paths/~1items/get/parameters/0")
    assert "(line 9)" in msg or "(line 10)" in msg


def test_unresolved_path_parameter_is_placed_at_the_operation(tmp_path: Path) -> None:
    f = tmp_path / "api.yaml"
    f.write_text(doc30("""\
        /items/{id}:
          get:
            responses:
              '200': {description: ok}
        """))
    msg = error_of(f)
    assert msg.startswith(f"{f}: #/paths/~1items~1{{id}}/get (line 5): ") and "'id'" in msg


def test_invalid_yaml_and_unsupported_versions(tmp_path: Path) -> None:
    f = tmp_path / "api.yaml"
    f.write_text("openapi: 3.0.3\npaths:\n  /a: [\n")
    assert error_of(f).startswith(f"{f}: line ")
    f.write_text("swagger: '2.0'\ninfo: {title: t, version: '1'}\npaths: {}\n")
    assert "not an OpenAPI 3 document" in error_of(f)
    f.write_text("openapi: 4.0.0\ninfo: {title: t, version: '1'}\npaths: {}\n")
    assert error_of(f) == f"{f}: #/openapi (line 1): OpenAPI version '4.0.0' is not supported (3.0.x and 3.1.x are)"
    assert error_of(tmp_path / "absent.yaml").startswith(f"{tmp_path / 'absent.yaml'}: cannot read")


# ---------------------------------------------------------------------------------------
# The model


PETS = """\
openapi: 3.0.3
info: {title: pets, version: '1'}
servers:
  - url: https://{host}/{base}/
    variables:
      host: {default: example.org}
      base: {default: api/v2}
security:
  - bearer: []
components:
  securitySchemes:
    bearer: {type: http, scheme: bearer}
    key: {type: apiKey, in: header, name: X-Key}
  parameters:
    Trace: {name: X-Trace, in: header, schema: {type: string}}
  schemas:
    Named:
      type: object
      required: [name]
      properties: {name: {type: string, maxLength: 20}}
    Pet:
      allOf:
        - $ref: '#/components/schemas/Named'
        - type: object
          required: [id]
          properties:
            id: {type: integer, format: int64}
            tag: {type: string, nullable: true}
    Shape:
      oneOf:
        - {type: object, properties: {r: {type: number}}}
        - {type: object, properties: {w: {type: number}}}
paths:
  /pets/{petId}:
    parameters:
      - {name: petId, in: path, required: true, schema: {type: string}}
      - {name: verbose, in: query, schema: {type: boolean}}
    get:
      parameters:
        - {name: petId, in: path, required: true, schema: {type: integer}}
        - $ref: '#/components/parameters/Trace'
        - {name: sid, in: cookie, required: true, schema: {type: string}}
      responses:
        200:
          description: ok
          content:
            application/json: {schema: {$ref: '#/components/schemas/Pet'}}
        4XX: {description: client error}
        default: {description: other}
  /pets:
    post:
      security: []
      requestBody:
        required: true
        content:
          text/plain: {schema: {type: string}}
          application/x-www-form-urlencoded: {schema: {$ref: '#/components/schemas/Named'}}
      responses:
        '201':
          description: created
          headers: {Location: {schema: {type: string}}}
          links:
            GetPet:
              operationId: get_pets_by_petId
              parameters: {petId: '$response.body#/id'}
    put:
      requestBody:
        content:
          application/octet-stream: {}
      responses:
        '200':
          description: ok
          content:
            application/json: {schema: {$ref: '#/components/schemas/Shape'}}
"""


def test_model_of_a_30_document() -> None:
    spec = load_spec(PETS, name="pets")
    assert isinstance(spec, ApiSpec) and spec.version == "3.0.3" and spec.title == "pets"
    assert spec.base_path == "/api/v2" and set(spec.security_schemes) == {"bearer", "key"}
    get = spec.op("get_pets_by_petId")
    assert get.key == "GET /pets/{petId}" and get.path_params == ["petId"] and get.declared_id == ""
    by_loc = {p.location: p for p in get.parameters}
    assert set(by_loc) == {"path", "query", "header", "cookie"}
    assert by_loc["path"].schema == {"type": "integer"} and by_loc["path"].required  # the operation's wins
    assert by_loc["header"].name == "X-Trace" and not by_loc["header"].required and by_loc["cookie"].required
    pet = get.responses["200"].content["application/json"]
    assert "allOf" not in pet and pet["required"] == ["name", "id"] and set(pet["properties"]) == {"name", "id", "tag"}
    assert get.declared(200).status == "200" and get.declared(404).status == "4XX"
    assert get.declared(503).status == "default" and get.security == [{"bearer": []}]
    post = spec.op("post_pets")
    assert post.security == [] and post.body.media_type == "application/x-www-form-urlencoded"
    assert post.body.required and set(post.body.content) == {"text/plain", "application/x-www-form-urlencoded"}
    assert post.declared(201).headers["Location"]["schema"] == {"type": "string"} and post.declared(500) is None
    assert post.links["GetPet"]["operationId"] == "get_pets_by_petId" and post.links["GetPet"]["x-status"] == "201"
    put = spec.op("put_pets")
    assert put.body.media_type == "application/octet-stream" and put.body.schema["format"] == "binary"
    assert not put.body.required and len(put.declared(200).content["application/json"]["oneOf"]) == 2
    assert len({get, post, put, spec.op("put_pets")}) == 3 and len(set(get.parameters)) == 4
    with pytest.raises(KeyError, match="get_pets_by_petId"):
        spec.op("nope")


def test_31_document_relative_files_and_type_lists(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "item.yaml").write_text(textwrap.dedent("""\
        Item:
          type: object
          required: [id]
          properties:
            id: {type: string, format: uuid}
            note: {type: [string, 'null']}
            owner: {$ref: '#/Owner'}
        Owner:
          type: object
          properties: {name: {$ref: 'common.json#/Name'}}
        """))
    (tmp_path / "schemas" / "common.json").write_text('{"Name": {"type": "string", "minLength": 1}}')
    f = tmp_path / "api.yaml"
    f.write_text(textwrap.dedent("""\
        openapi: 3.1.0
        info: {title: items, version: '1'}
        paths:
          /items:
            post:
              operationId: createItem
              requestBody:
                content:
                  application/json: {schema: {$ref: 'schemas/item.yaml#/Item'}}
              responses:
                '201':
                  description: created
                  content:
                    application/json: {schema: {$ref: 'schemas/item.yaml#/Item'}}
        """))
    spec = load_spec(f)
    op = spec.op("createItem")
    assert spec.version == "3.1.0" and spec.base_path == "" and op.declared_id == "createItem"
    item = op.body.schema
    assert item["properties"]["note"] == {"type": ["string", "null"]}
    assert item["properties"]["owner"]["properties"]["name"] == {"type": "string", "minLength": 1}
    # given as text (fetched from a target), there is no file to be relative to
    assert "no file to resolve it against" in error_of(f.read_text(), name="http://h/openapi.yaml")


def test_cycles_stop_and_lenient_mode(tmp_path: Path) -> None:
    text = doc30("""\
        /tree:
          get:
            responses:
              '200':
                description: ok
                content:
                  application/json: {schema: {$ref: '#/components/schemas/Node'}}
        """, """\
        components:
          schemas:
            Node:
              type: object
              properties:
                children: {type: array, items: {$ref: '#/components/schemas/Node'}}
        """)
    node = load_spec(text).operations[0].declared(200).content["application/json"]
    assert node["properties"]["children"]["items"] == {"x-recursive": "#/components/schemas/Node"}
    broken = text.replace("'#/components/schemas/Node'}}\n", "'#/components/schemas/Gone'}}\n", 1)
    assert "unresolvable $ref" in error_of(broken)
    assert load_spec(broken, strict=False).operations[0].declared(200).content["application/json"] == {}


def test_derived_op_ids_are_stable_and_unique() -> None:
    assert derive_op_id("GET", "/items/{id}") == "get_items_by_id" and derive_op_id("post", "/") == "post_root"
    spec = load_spec(doc30("""\
        /a-b:
          get: {responses: {'200': {description: ok}}}
        /a_b:
          get: {responses: {'200': {description: ok}}}
        """))
    assert [o.op_id for o in spec.operations] == ["get_a_b", "get_a_b_2"]


@pytest.mark.parametrize("spec_path", sorted(REFAPPS.glob("*/openapi.yaml")), ids=lambda p: p.parent.name)
def test_every_refapp_spec_loads(spec_path: Path) -> None:
    spec = load_spec(spec_path)
    assert spec.operations and len({o.op_id for o in spec.operations}) == len(spec.operations)


def test_a_str_is_a_path_unless_it_is_a_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "openapi.yaml").write_text(doc30("/a:\n  get: {responses: {'200': {description: ok}}}\n"))
    monkeypatch.chdir(tmp_path)
    assert load_spec("openapi.yaml").source == "openapi.yaml"
    assert load_spec('{"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}}').version == "3.1.0"
    assert load_spec("openapi: 3.1.0\ninfo: {title: t, version: '1'}\nwebhooks: {}\n").operations == []


def test_error_inside_a_referenced_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "parts.yaml").write_text("Ok:\n  description: ok\n  content:\n    application/json:\n"
                                         "      schema: {$ref: '#/Nowhere'}\n")
    f = tmp_path / "api.yaml"
    f.write_text(doc30("""\
        /items:
          get:
            responses:
              '200':
                $ref: 'parts.yaml#/Ok'
        """))
    msg = error_of(f)
    assert msg.startswith(f"{tmp_path / 'parts.yaml'}: #/Ok/content/application~1json/schema (line 5): "
                          "unresolvable $ref '#/Nowhere'"), msg


def test_tier1_reading_stays_lenient(tmp_path: Path) -> None:
    from probatorium.validate.openapi import load_operations

    f = tmp_path / "loose.yaml"  # no info, an unresolvable $ref: Tier 1's sweep has always read these
    f.write_text("openapi: 3.0.0\npaths:\n  /a/{id}:\n    parameters: [{name: id, in: path, schema: {type: string}}]\n"
                 "    get:\n      requestBody: {content: {application/json: {schema: {$ref: '#/gone'}}}}\n"
                 "      responses: {204: {description: empty}}\n    trace: {responses: {200: {description: x}}}\n")
    (op,) = load_operations(f)
    assert (op.method, op.path, op.responses, op.operation_id) == ("GET", "/a/{id}", ("204",), "")
    assert op.parameters[0]["name"] == "id" and op.body_media == "application/json" and op.body_schema == {}
    assert "unresolvable $ref" in error_of(f) or "info" in error_of(f)
