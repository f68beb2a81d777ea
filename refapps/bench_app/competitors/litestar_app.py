"""The bench routes on Litestar (served by uvicorn)."""

import asyncio
import json
import time
from collections.abc import AsyncIterator

from litestar import Litestar, MediaType, Request, Response, get, post, websocket_listener
from litestar.response import ServerSentEvent


@get("/plaintext", media_type=MediaType.TEXT)
async def plaintext() -> str:
    return "Hello, World!"


@get("/json")
async def json_() -> dict[str, str]:
    return {"message": "Hello, World!"}


@get("/users/{id:int}")
async def user(id: int) -> dict[str, int | str]:  # noqa: A002 - the route's parameter name
    return {"id": id, "name": f"user-{id}"}


@post("/echo-body", status_code=200)  # Litestar's POST default is 201
async def echo_body(request: Request) -> Response[bytes]:
    return Response(await request.body(), media_type="application/octet-stream")


@get("/healthz", media_type=MediaType.TEXT)
async def healthz() -> str:
    return "ok"


async def _ticks() -> AsyncIterator[str]:
    while True:
        await asyncio.sleep(0.01)
        yield json.dumps({"ts": time.time()})


@get("/events")
async def events() -> ServerSentEvent:
    return ServerSentEvent(_ticks())


@websocket_listener("/ws")
async def ws(data: str) -> str:
    return data


app = Litestar(route_handlers=[plaintext, json_, user, echo_body, healthz, events, ws], openapi_config=None)
