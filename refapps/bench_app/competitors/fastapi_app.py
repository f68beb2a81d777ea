"""The bench routes on FastAPI (served by uvicorn)."""

import asyncio
import time
from collections.abc import AsyncIterable

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, Response
from fastapi.sse import EventSourceResponse

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/plaintext", response_class=PlainTextResponse)
async def plaintext():
    return "Hello, World!"


@app.get("/json")
async def json_() -> dict[str, str]:
    return {"message": "Hello, World!"}


@app.get("/users/{id}")
async def user(id: int) -> dict[str, int | str]:  # noqa: A002 - the route's parameter name
    return {"id": id, "name": f"user-{id}"}


@app.post("/echo-body")
async def echo_body(request: Request):
    return Response(await request.body(), media_type="application/octet-stream")


@app.get("/healthz", response_class=PlainTextResponse)
async def healthz():
    return "ok"


@app.get("/events", response_class=EventSourceResponse)
async def events() -> AsyncIterable[dict[str, float]]:
    # each yielded item is JSON-encoded into one `data:` line
    while True:
        await asyncio.sleep(0.01)
        yield {"ts": time.time()}


@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        return
