"""The raw-socket client against hostile local servers: floods, silence, early close."""

from __future__ import annotations

import asyncio

from probatorium.rawclient import Segment, exchange


async def _serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_flooding_server_is_cut_at_max_bytes():
    async def main():
        async def flood(reader, writer):
            try:
                while True:
                    writer.write(b"x" * 65536)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass

        server, port = await _serve(flood)
        async with server:
            ex = await exchange("127.0.0.1", port, [Segment(b"GET / HTTP/1.1\r\n\r\n")], max_bytes=1 << 20,
                                total_timeout=10)
        return ex

    ex = asyncio.run(main())
    assert ex.overflow and 1 << 20 <= len(ex.received) < (1 << 20) + 65536 * 2
    assert ex.elapsed < 5


def test_silent_server_times_out_quietly():
    async def main():
        async def silent(reader, writer):
            await asyncio.sleep(5)

        server, port = await _serve(silent)
        async with server:
            return await exchange("127.0.0.1", port, [Segment(b"GET / HTTP/1.1\r\n\r\n")], quiet_timeout=0.3)

    ex = asyncio.run(main())
    assert ex.timed_out and not ex.closed and ex.received == b""


def test_refused_port_is_a_connect_error():
    async def main():
        server, port = await _serve(lambda r, w: None)
        server.close()
        await server.wait_closed()
        return await exchange("127.0.0.1", port, [Segment(b"x")])

    ex = asyncio.run(main())
    assert ex.connect_error


def test_early_close_is_seen_while_sending_paced_segments():
    async def main():
        async def closer(reader, writer):
            await reader.read(10)
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()

        server, port = await _serve(closer)
        async with server:
            segs = [Segment(b"GET / HTTP/1.1\r\n")] + [Segment(b"X: y\r\n", 0.05) for _ in range(20)]
            return await exchange("127.0.0.1", port, segs, quiet_timeout=1)

    ex = asyncio.run(main())
    assert ex.closed and ex.received.startswith(b"HTTP/1.1 400")
    assert ex.elapsed < 1.5
