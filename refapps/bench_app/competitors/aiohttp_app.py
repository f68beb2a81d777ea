"""The bench routes on aiohttp's own server (uvloop). Usage: python aiohttp_app.py PORT [HOST]"""

import asyncio
import sys
import time

import uvloop
from aiohttp import WSMsgType, web

routes = web.RouteTableDef()


@routes.get("/plaintext")
async def plaintext(request):
    return web.Response(text="Hello, World!")


@routes.get("/json")
async def json_(request):
    return web.json_response({"message": "Hello, World!"})


@routes.get(r"/users/{id:\d+}")
async def user(request):
    uid = int(request.match_info["id"])
    return web.json_response({"id": uid, "name": f"user-{uid}"})


@routes.post("/echo-body")
async def echo_body(request):
    return web.Response(body=await request.read(), content_type="application/octet-stream")


@routes.get("/healthz")
async def healthz(request):
    return web.Response(text="ok")


@routes.get("/events")
async def events(request):
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    try:
        while True:
            await asyncio.sleep(0.01)
            await resp.write(b'data: {"ts": %.6f}\n\n' % time.time())
    except ConnectionResetError:  # the subscriber left
        pass
    return resp


@routes.get("/ws")
async def ws(request):
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if msg.type == WSMsgType.TEXT:
            await sock.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sock.send_bytes(msg.data)
    return sock


app = web.Application()
app.add_routes(routes)

if __name__ == "__main__":
    # one process, no access log; uvloop like the uvicorn entries
    # argv: PORT [HOST] (HOST: where --driver netns places it; default loopback)
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    web.run_app(app, host=host, port=int(sys.argv[1]), access_log=None, print=None,
                loop=uvloop.new_event_loop())
