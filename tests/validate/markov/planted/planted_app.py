"""A tiny Starlette app with a planted state-dependent bug, for the Markov shrinking tests.

Items are per user (bearer token from POST /login). The bug: updating an item
that was archived answers 500 {"x-invariant": "I-TEST-ARCHIVED"}, so showing it
takes three specific steps (create, archive, update) among the noise
(ping, list, read, delete, other creates). Ids come from one process-wide
counter, so a replay against a fresh server gets different ids.
"""

from __future__ import annotations

import itertools
import secrets

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

IDS = itertools.count(1000)
TOKENS: dict[str, str] = {}
ITEMS: dict[str, dict[int, dict]] = {}


def _user(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return TOKENS.get(auth[7:]) if auth.startswith("Bearer ") else None


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def login(request: Request) -> Response:
    data = await request.json()
    user = str(data.get("username") or "")
    if not user:
        return JSONResponse({"error": "username"}, status_code=400)
    token = secrets.token_hex(8)
    TOKENS[token] = user
    ITEMS.setdefault(user, {})
    return JSONResponse({"user": user, "token": token})


async def ping(request: Request) -> Response:
    return JSONResponse({"pong": True})


async def items(request: Request) -> Response:
    user = _user(request)
    if user is None:
        return JSONResponse({"error": "login"}, status_code=401)
    mine = ITEMS[user]
    if request.method == "POST":
        data = await request.json()
        iid = next(IDS)
        mine[iid] = {"id": iid, "name": str(data.get("name", "")), "archived": False}
        return JSONResponse(mine[iid], status_code=201, headers={"Location": f"/items/{iid}"})
    return JSONResponse(list(mine.values())[-5:])


async def item(request: Request) -> Response:
    user = _user(request)
    if user is None:
        return JSONResponse({"error": "login"}, status_code=401)
    iid = int(request.path_params["id"])
    it = ITEMS[user].get(iid)
    if it is None:
        return JSONResponse({"error": "no such item"}, status_code=404)
    if request.method == "DELETE":
        del ITEMS[user][iid]
        return Response(status_code=204)
    if request.method == "PUT":
        if it["archived"]:  # the planted bug
            return JSONResponse({"x-invariant": "I-TEST-ARCHIVED", "error": "update of an archived item"},
                                status_code=500)
        data = await request.json()
        it["name"] = str(data.get("name", it["name"]))
    return JSONResponse(it)


async def archive(request: Request) -> Response:
    user = _user(request)
    if user is None:
        return JSONResponse({"error": "login"}, status_code=401)
    it = ITEMS[user].get(int(request.path_params["id"]))
    if it is None:
        return JSONResponse({"error": "no such item"}, status_code=404)
    it["archived"] = True
    return JSONResponse(it)


app = Starlette(routes=[
    Route("/healthz", healthz),
    Route("/login", login, methods=["POST"]),
    Route("/ping", ping),
    Route("/items", items, methods=["GET", "POST"]),
    Route("/items/{id:int}", item, methods=["GET", "PUT", "DELETE"]),
    Route("/items/{id:int}/archive", archive, methods=["POST"]),
])
