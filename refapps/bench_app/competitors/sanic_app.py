"""The bench routes on Sanic's own server. Usage: python sanic_app.py PORT [HOST]"""

import asyncio
import sys
import time

from sanic import Sanic
from sanic.response import json, raw, text

app = Sanic("bench_app")


@app.get("/plaintext")
async def plaintext(request):
    return text("Hello, World!")


@app.get("/json")
async def json_(request):
    return json({"message": "Hello, World!"})


@app.get("/users/<uid:int>")
async def user(request, uid: int):
    return json({"id": uid, "name": f"user-{uid}"})


@app.post("/echo-body")
async def echo_body(request):
    return raw(request.body, content_type="application/octet-stream")


@app.get("/healthz")
async def healthz(request):
    return text("ok")


@app.get("/events")
async def events(request):
    response = await request.respond(content_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    while True:
        await asyncio.sleep(0.01)
        await response.send('data: {"ts": %.6f}\n\n' % time.time())


@app.websocket("/ws")
async def ws(request, sock):
    async for msg in sock:
        await sock.send(msg)


if __name__ == "__main__":
    # one process (no worker manager), no auto-reload, access log off
    # argv: PORT [HOST] (HOST: where --driver netns places it; default loopback)
    app.run(host=sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1", port=int(sys.argv[1]),
            single_process=True, auto_reload=False, access_log=False, motd=False, debug=False)
