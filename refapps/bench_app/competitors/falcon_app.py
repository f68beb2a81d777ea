"""The bench routes on Falcon's ASGI app (served by uvicorn)."""

import asyncio
import time

import falcon
import falcon.asgi


class Plaintext:
    async def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "Hello, World!"


class Json:
    async def on_get(self, req, resp):
        resp.media = {"message": "Hello, World!"}


class User:
    async def on_get(self, req, resp, uid):
        resp.media = {"id": uid, "name": f"user-{uid}"}


class EchoBody:
    async def on_post(self, req, resp):
        resp.content_type = "application/octet-stream"
        resp.data = await req.stream.read()


class Healthz:
    async def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok"


class Events:
    async def on_get(self, req, resp):
        async def emitter():
            while True:
                await asyncio.sleep(0.01)
                yield falcon.asgi.SSEvent(json={"ts": time.time()})
        resp.sse = emitter()


class Ws:
    async def on_websocket(self, req, ws):
        await ws.accept()
        try:
            while True:
                await ws.send_text(await ws.receive_text())
        except falcon.WebSocketDisconnected:
            return


app = falcon.asgi.App()
app.add_route("/plaintext", Plaintext())
app.add_route("/json", Json())
app.add_route("/users/{uid:int}", User())
app.add_route("/echo-body", EchoBody())
app.add_route("/healthz", Healthz())
app.add_route("/events", Events())
app.add_route("/ws", Ws())
