"""Tier 2 producers as Tier 3 writes: a create (POST) whose resource a GET reads back by the
captured id, for targets without the key/value contract.

A *pair* (``find_pairs``) is found with Tier 2's dependency inference (:mod:`...api.deps`): a
POST without path parameters whose 2xx JSON body feeds the only path parameter of the GET of
the created item (``POST /users`` → ``GET /users/{id}``, ``body:/<field>``, e.g.
``createUser --body:/id--> getUser.id``). It is stored in the profile
as plain data (paths, the request schema, the echoed fields), so a plan stays a value.

The payload of a create is generated from the request schema with a seeded RNG and made
unique: every string field the reader echoes gets a token of the seed's namespace, the run's
salt and the resource index when the field's schema admits it. The judge compares only the
*echoed* fields: those the create sent that the reader's 200 schema also declares (same name,
scalar type). A read-back that differs in one of them is ``garbled``; a 404 is ``absent``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ...api.deps import infer
from ...api.schema import types_of
from ...api.spec import ApiSpec, load_spec
from ...api.values import check, generate
from ...errors import UsageError
from ...seeds import derive_seed
from ..tier2.exchange import bearer_token
from ..tier2.tier import find_login

PASSWORD = "probatorium-t3"
_SCALARS = ("string", "integer", "number", "boolean")


def _json_schema(content: dict) -> dict | None:
    for media, schema in content.items():
        if "json" in media.lower() and isinstance(schema, dict):
            return schema
    return None


def _scalar_props(schema: dict | None) -> dict[str, dict]:
    props = (schema or {}).get("properties") or {}
    return {n: s for n, s in props.items() if isinstance(s, dict) and any(t in _SCALARS for t in types_of(s))}


def find_pairs(spec: ApiSpec) -> tuple[list[dict[str, Any]], str]:
    """(the producer → reader pairs of ``spec``, the login path or "" when none is needed)."""
    graph = infer(spec)
    ops = {o.op_id: o for o in spec.operations}
    pairs: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    secured = False
    for e in graph.edges:
        prod, read = ops.get(e.producer), ops.get(e.consumer)
        if prod is None or read is None or (prod.op_id, read.op_id) in seen:
            continue
        if prod.method != "POST" or prod.path_params or read.method != "GET" or read.path_params != [e.param]:
            continue
        if read.path.rstrip("/") != prod.path.rstrip("/") + "/{" + e.param + "}":
            continue  # the item of the collection the POST creates in, not another view of it
        if not e.source.startswith("body:/") or e.source.count("/") != 1:
            continue  # the id from a top-level field of the create's body (a Location is not followed)
        if prod.body is None or "json" not in prod.body.media_type.lower() or not isinstance(prod.body.schema, dict):
            continue
        ok = [r for s, r in read.responses.items() if s == "200"]
        out_schema = _json_schema(ok[0].content) if ok else None
        if out_schema is None or "object" not in types_of(out_schema):
            continue
        sent = {n: s for n, s in _scalar_props(prod.body.schema).items() if not s.get("readOnly")
                and not s.get("writeOnly")}
        echoed = sorted(n for n, s in _scalar_props(out_schema).items() if n in sent
                        and set(types_of(s)) & set(types_of(sent[n])) and not s.get("writeOnly"))
        delete = next((spec.base_path + o.path for o in spec.operations if o.method == "DELETE"
                       and o.path == read.path), "")
        pair = {"create": spec.base_path + prod.path, "read": spec.base_path + read.path, "param": e.param,
                "id": e.source[len("body:/"):], "schema": prod.body.schema, "echoed": echoed, "delete": delete}
        try:
            payload(pair, 0, 0, 0)
        except UsageError:
            continue  # a request schema no value satisfies: not a pair Tier 3 can write
        seen.add((prod.op_id, read.op_id))
        secured = secured or bool(prod.security) or bool(read.security)
        pairs.append(pair)
    login = find_login(spec, None, None) if secured else None  # the login contract, as Tier 2 finds it
    return pairs, (login.path if login else "")


def producer_contract(openapi: Path | None) -> tuple[list[dict[str, Any]], str] | str:
    """(pairs, login path) of the target's OpenAPI document, or why it has none."""
    if openapi is None:
        return "no OpenAPI document"
    pairs, login = find_pairs(load_spec(openapi))
    if not pairs:
        return f"{openapi.name} has no producer → reader pair (a POST whose created resource a GET reads by id)"
    return pairs, login


def _token(namespace: int, salt: int, key: int) -> str:
    return f"t3{namespace & 0xFFFFFFFF:08x}{salt & 0xFFFF:04x}k{key}"


def _unique(schema: dict, token: str) -> str | None:
    """A string valid for ``schema`` that holds ``token``, or None."""
    lo, hi = int(schema.get("minLength", 0) or 0), schema.get("maxLength")
    for cand in (token, f"{token}@example.test", f"{token}.example.test"):
        cand = cand.ljust(lo, "x")
        if (hi is None or len(cand) <= int(hi)) and not check(schema, cand):
            return cand
    return None


def payload(pair: dict[str, Any], namespace: int, salt: int, key: int) -> dict[str, Any]:
    """The JSON object a create of resource ``key`` sends (deterministic in its arguments)."""
    schema = pair["schema"]
    rng = random.Random(derive_seed(namespace, "tier3-producer", salt, key))
    try:
        doc = generate(schema, rng, hints={"$request": True, "$optional": 0.0})
    except (ValueError, RecursionError) as e:
        raise UsageError(f"Tier 3 cannot generate a body for POST {pair['create']}: {e}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"POST {pair['create']}: the request schema is not a JSON object")
    props = (schema.get("properties") or {})
    token = _token(namespace, salt, key)
    for name in pair["echoed"]:
        sub = props.get(name)
        if isinstance(sub, dict) and "string" in types_of(sub) and "enum" not in sub and "const" not in sub:
            value = _unique(sub, token)
            if value is not None:
                doc[name] = value
    if check(schema, doc):
        raise UsageError(f"POST {pair['create']}: the generated body fails its schema: {check(schema, doc)[0]}")
    return doc


def captured_id(pair: dict[str, Any], body: bytes) -> str | None:
    """The id a 2xx create answered (its body's ``id`` field, as path text), or None."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    value = doc.get(pair["id"]) if isinstance(doc, dict) else None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        return None
    return str(value)


def read_back(pair: dict[str, Any], sent: dict[str, Any], status: int | None, body: bytes) -> str | None:
    """``"same"`` (200, every echoed field as sent), ``"absent"`` (404), ``"garbled"`` (a 200 that
    differs or is no JSON object), None (no usable answer)."""
    if status == 404:
        return "absent"
    if status != 200:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return "garbled"
    if not isinstance(doc, dict):
        return "garbled"
    for name in pair["echoed"]:
        if name in sent and doc.get(name) != sent[name]:
            return "garbled"
    return "same"


def auth_headers(status: int | None, headers: list[tuple[bytes, bytes]], body: bytes) -> list[tuple[str, str]]:
    """What a login answer grants: a bearer token from its JSON body, else its cookies."""
    if status is None or not 200 <= status < 300:
        return []
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    token = bearer_token(doc)
    if token:
        return [("Authorization", "Bearer " + token)]
    cookies = []
    for name, value in headers:
        if name.lower() == b"set-cookie":
            pair = value.decode("latin-1").split(";", 1)[0].strip()
            if "=" in pair:
                cookies.append(pair)
    return [("Cookie", "; ".join(cookies))] if cookies else []


def login_body(namespace: int, salt: int) -> bytes:
    """The login contract's JSON (one user per seed and run: the resources it creates are its own)."""
    return json.dumps({"username": f"t3-{namespace & 0xFFFFFFFF:08x}-{salt & 0xFFFF:04x}",
                       "password": PASSWORD}).encode()
