"""The bench routes on Starlette (served by uvicorn)."""

import asyncio
import time

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute


async def plaintext(request):
    return PlainTextResponse("Hello, World!")


async def json_(request):
    return JSONResponse({"message": "Hello, World!"})


async def user(request):
    uid = request.path_params["id"]
    return JSONResponse({"id": uid, "name": f"user-{uid}"})


async def echo_body(request):
    return Response(await request.body(), media_type="application/octet-stream")


async def healthz(request):
    return PlainTextResponse("ok")


async def events(request):
    async def stream():
        while True:
            await asyncio.sleep(0.01)
            yield 'data: {"ts": %.6f}\n\n' % time.time()
    return StreamingResponse(stream(), media_type="text/event-stream")


async def ws(websocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except Exception:  # noqa: BLE001 - disconnect
        return


app = Starlette(routes=[
    Route("/plaintext", plaintext), Route("/json", json_), Route("/users/{id:int}", user),
    Route("/echo-body", echo_body, methods=["POST"]), Route("/healthz", healthz),
    Route("/events", events), WebSocketRoute("/ws", ws),
])
