"""The bench routes on BlackSheep (served by uvicorn)."""

import asyncio
import time
from collections.abc import AsyncIterable

from blacksheep import (Application, Content, Request, Response, WebSocket, WebSocketDisconnectError, get, json,
                        post, text, ws)
from blacksheep.server.sse import ServerSentEvent

app = Application()


@get("/plaintext")
async def plaintext():
    return text("Hello, World!")


@get("/json")
async def json_():
    return json({"message": "Hello, World!"})


@get("/users/{int:id}")
async def user(id: int):  # noqa: A002 - the route's parameter name
    return json({"id": id, "name": f"user-{id}"})


@post("/echo-body")
async def echo_body(request: Request):
    return Response(200, content=Content(b"application/octet-stream", await request.read() or b""))


@get("/healthz")
async def healthz():
    return text("ok")


@get("/events")
async def events(request: Request) -> AsyncIterable[ServerSentEvent]:
    # BlackSheep does not stop a generator when the client leaves: ask, as its docs do
    while not await request.is_disconnected():
        await asyncio.sleep(0.01)
        yield ServerSentEvent({"ts": time.time()})


@ws("/ws")
async def ws_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnectError:
        return
