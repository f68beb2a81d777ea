"""Tiny standard-library HTTP/1.1 servers on loopback for Markov client and KV tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    body = await reader.readexactly(n) if n else b""
    return method, target, headers, body


def response(status: int, body: bytes = b"", ctype: str = "text/plain", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\n{extra}"
    if status not in (204, 304):
        head += f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body if status not in (204, 304) else b"")


class Server:
    """Runs handler(method, target, headers, body) -> (bytes, close_after) per request."""

    def __init__(self, handler: Callable[[str, str, dict, bytes], tuple[bytes, bool]]) -> None:
        self.handler = handler
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.connections = 0
        self.requests = 0

    async def __aenter__(self) -> "Server":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                req = await read_request(reader)
                if req is None:
                    break
                self.requests += 1
                data, close = self.handler(*req)
                writer.write(data)
                await writer.drain()
                if close:
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()


class KVStore:
    """The key/value contract; with lose_every=N, every Nth acknowledged PUT is silently dropped."""

    def __init__(self, lose_every: int = 0) -> None:
        self.data: dict[str, bytes] = {}
        self.lose_every = lose_every
        self.puts = 0
        self.lost = 0

    def __call__(self, method: str, target: str, headers: dict, body: bytes) -> tuple[bytes, bool]:
        if not target.startswith("/kv/"):
            return response(404, b"no"), False
        key = target[4:]
        if method == "PUT":
            self.puts += 1
            if self.lose_every and self.puts % self.lose_every == 0:
                self.lost += 1
            else:
                self.data[key] = body
            return response(200, b"ok"), False
        if method == "GET":
            if key in self.data:
                return response(200, self.data[key], "application/octet-stream"), False
            return response(404, b"absent"), False
        if method == "DELETE":
            if self.data.pop(key, None) is None:
                return response(404, b""), False
            return response(204), False
        return response(405, b""), False


KV_OPENAPI = """\
openapi: 3.0.3
info: {title: kv, version: "1"}
paths:
  /kv/{key}:
    parameters:
      - {name: key, in: path, required: true, schema: {type: string}}
    put:
      requestBody: {content: {application/octet-stream: {schema: {type: string, format: binary}}}}
      responses: {"200": {description: stored}}
    get:
      responses: {"200": {description: the value}, "404": {description: absent}}
    delete:
      responses: {"204": {description: deleted}, "404": {description: absent}}
"""
