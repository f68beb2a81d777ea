"""The fault proxy on real loopback sockets: each net-* kind observed from the client's side (and
the server's), several at once, restarts followed, and the seeded choices deterministic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from probatorium.faults import FaultProxy

pytestmark = pytest.mark.timeout(20)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Upstream:
    """A real echo server that also records what it read and whether it saw EOF or a reset."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.eof = asyncio.Event()
        self.reset = asyncio.Event()
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65536):
                self.received += data
                writer.write(data)
                await writer.drain()
            self.eof.set()
            writer.write(b"bye")  # still writable after the client's half-close
            await writer.drain()
        except ConnectionError:
            self.reset.set()
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


def with_proxy(body: Callable[[FaultProxy, Upstream, tuple[str, int]], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        upstream = await Upstream().start()
        proxy = FaultProxy()
        address = await proxy.start(lambda: ("127.0.0.1", upstream.port))
        try:
            return await body(proxy, upstream, address)
        finally:
            await proxy.close()
            await upstream.close()

    return asyncio.run(main())


async def roundtrip(streams: Streams, payload: bytes) -> float:
    """Seconds until ``payload`` came back whole."""
    reader, writer = streams
    t0 = time.monotonic()
    writer.write(payload)
    await writer.drain()
    got = b""
    while len(got) < len(payload):
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        assert chunk, "EOF before the echo"
        got += chunk
    assert got == payload
    return time.monotonic() - t0


def test_latency_is_added_each_way() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, address: tuple[str, int]) -> None:
        conn = await asyncio.open_connection(*address)
        base = await roundtrip(conn, b"ping")
        both = proxy.impair("net-latency", {"delay_ms": 80}, seed=1)
        slow = await roundtrip(conn, b"ping")
        observed = proxy.clear(both)
        up_only = proxy.impair("net-latency", {"delay_ms": 80, "direction": "up"}, seed=1)
        half = await roundtrip(conn, b"ping")
        proxy.clear(up_only)
        after = await roundtrip(conn, b"ping")
        assert slow >= base + 0.155 and 0.075 <= half < 0.155 and after < 0.05
        assert observed["delayed_chunks"] == 2 and observed["bytes"] == 8 and observed["connections"] == 1

    with_proxy(body)


def test_jitter_draws_delays_within_the_spread() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, address: tuple[str, int]) -> None:
        conn = await asyncio.open_connection(*address)
        handle = proxy.impair("net-jitter", {"delay_ms": 40, "jitter_ms": 30, "direction": "up"}, seed=7)
        times = [await roundtrip(conn, b"x") for _ in range(6)]
        proxy.clear(handle)
        drawn = [d[2] for d in handle.decisions]
        assert len(drawn) == 6 and all(10 <= d <= 70 for d in drawn) and len(set(drawn)) == 6
        for took, delay_ms in zip(times, drawn):
            assert took >= delay_ms / 1000 - 0.002

    with_proxy(body)


def test_bandwidth_paces_the_bytes() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, address: tuple[str, int]) -> None:
        conn = await asyncio.open_connection(*address)
        handle = proxy.impair("net-bandwidth", {"bytes_per_s": 40_000, "direction": "down"}, seed=1)
        took = await roundtrip(conn, b"b" * 20_000)
        observed = proxy.clear(handle)
        rate = 20_000 / took
        assert 20_000 <= rate <= 48_000, rate  # the first piece goes before any pause
        assert observed["paced_bytes"] == 20_000

    with_proxy(body)


def test_reset_sends_rst_to_connections_in_flight() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, address: tuple[str, int]) -> None:
        reader, writer = await asyncio.open_connection(*address)
        await roundtrip((reader, writer), b"hello")
        handle = proxy.impair("net-reset", {"fraction": 1.0}, seed=3)
        with pytest.raises(ConnectionResetError):  # ECONNRESET, not a clean EOF
            await asyncio.wait_for(reader.read(100), 5)
        await asyncio.wait_for(upstream.reset.wait(), 5)  # the target's side got the RST too
        # a new connection inside the window is reset at its first bytes
        reader2, writer2 = await asyncio.open_connection(*address)
        writer2.write(b"GET")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader2.read(100), 5)
        observed = proxy.clear(handle)
        assert observed["connections_reset"] == 2 and proxy.stats()["resets_sent"] == 2
        assert [d[2] for d in handle.decisions] == ["reset", "reset"]
        assert await roundtrip(await asyncio.open_connection(*address), b"again") < 1  # cleared

    with_proxy(body)


def test_stall_holds_then_releases_or_resets() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, address: tuple[str, int]) -> None:
        conn = await asyncio.open_connection(*address)
        handle = proxy.impair("net-stall", {"hold_ms": 300, "then": "release"}, seed=1)
        held = await roundtrip(conn, b"held")
        assert held >= 0.29 and proxy.clear(handle)["stalls"] == 1
        reader, writer = await asyncio.open_connection(*address)
        handle = proxy.impair("net-stall", {"hold_ms": 200, "then": "reset"}, seed=1)
        t0 = time.monotonic()
        writer.write(b"doomed")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(100), 5)
        assert time.monotonic() - t0 >= 0.19 and b"doomed" not in upstream.received
        assert proxy.clear(handle) == {"connections": 1, "bytes": 6, "stalls": 1, "connections_reset": 1}

    with_proxy(body)


def test_slice_delivers_bytes_in_small_pieces() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, address: tuple[str, int]) -> None:
        reader, writer = await asyncio.open_connection(*address)
        handle = proxy.impair("net-slice", {"piece_bytes": 10, "gap_ms": 25, "direction": "down"}, seed=1)
        t0 = time.monotonic()
        writer.write(b"s" * 100)
        reads = []
        while sum(reads) < 100:
            reads.append(len(await asyncio.wait_for(reader.read(65536), 5)))
        took = time.monotonic() - t0
        observed = proxy.clear(handle)
        assert observed["pieces"] == 10 and max(reads) <= 20 and len(reads) >= 5, reads
        assert took >= 0.2

    with_proxy(body)


def test_a_chunk_sliced_when_the_window_ends_goes_whole() -> None:
    """The impairment lasts its window: a chunk still being sliced when it is cleared is not
    dragged on (1000 pieces x 10 ms would be 10 s)."""
    async def body(proxy: FaultProxy, upstream: Upstream, address: tuple[str, int]) -> None:
        conn = await asyncio.open_connection(*address)
        for kind, params in (("net-slice", {"piece_bytes": 1, "gap_ms": 10, "direction": "down"}),
                             ("net-bandwidth", {"bytes_per_s": 100, "direction": "down"})):
            handle = proxy.impair(kind, params, seed=1)
            asyncio.get_running_loop().call_later(0.2, proxy.clear, handle)
            took = await roundtrip(conn, b"b" * 1000)
            assert 0.15 <= took < 1.5, (kind, took)
            assert proxy.active() == []

    with_proxy(body)


def test_halfclose_down_is_eof_for_the_client_while_requests_still_flow() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, address: tuple[str, int]) -> None:
        reader, writer = await asyncio.open_connection(*address)
        await roundtrip((reader, writer), b"before")
        handle = proxy.impair("net-halfclose", {"direction": "down"}, seed=1)
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # EOF one way
        writer.write(b"after")
        await writer.drain()
        for _ in range(100):
            if b"after" in upstream.received:
                break
            await asyncio.sleep(0.02)
        assert upstream.received.endswith(b"beforeafter")
        assert proxy.clear(handle)["halfclosed"] == 1

    with_proxy(body)


def test_halfclose_up_is_eof_for_the_target_while_responses_still_flow() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, address: tuple[str, int]) -> None:
        reader, writer = await asyncio.open_connection(*address)
        await roundtrip((reader, writer), b"x")
        handle = proxy.impair("net-halfclose", {"direction": "up"}, seed=1)
        await asyncio.wait_for(upstream.eof.wait(), 5)  # the target read EOF ...
        assert await asyncio.wait_for(reader.read(100), 5) == b"bye"  # ... and could still answer
        proxy.clear(handle)

    with_proxy(body)


def test_impairments_combine_and_the_upstream_follows_a_restart() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, address: tuple[str, int]) -> None:
        conn = await asyncio.open_connection(*address)
        slow = proxy.impair("net-latency", {"delay_ms": 50, "direction": "up"}, seed=1)
        sliced = proxy.impair("net-slice", {"piece_bytes": 5, "gap_ms": 10, "direction": "down"}, seed=1)
        took = await roundtrip(conn, b"z" * 20)
        assert took >= 0.05 + 0.03 and proxy.clear(sliced)["pieces"] == 4
        proxy.clear(slow)
        assert proxy.active() == []
        moved = await Upstream().start()  # "the target restarted on another port"
        upstream.port = moved.port
        await roundtrip(await asyncio.open_connection(*address), b"moved")
        assert moved.connections == 1 and bytes(moved.received) == b"moved"
        await moved.close()

    with_proxy(body)


def test_a_dead_upstream_is_a_reset_for_the_client() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, address: tuple[str, int]) -> None:
        await upstream.close()
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection(*address)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(100), 5)
        assert proxy.stats()["upstream_failures"] == 1

    with_proxy(body)


# --- determinism ----------------------------------------------------------------------------


def _choices(seed: int) -> list[Any]:
    """Ten connections, one chunk each, through a 50 % reset and a jitter: the choices made."""

    async def body(proxy: FaultProxy, upstream: Upstream, address: tuple[str, int]) -> list[Any]:
        warm = await asyncio.open_connection(*address)  # the proxy's own history must not matter
        await roundtrip(warm, b"warm")
        jitter = proxy.impair("net-jitter", {"delay_ms": 5, "jitter_ms": 5, "direction": "up"}, seed)
        reset = proxy.impair("net-reset", {"fraction": 0.5}, seed)
        for _ in range(10):
            reader, writer = await asyncio.open_connection(*address)
            writer.write(b"q")
            try:
                await asyncio.wait_for(reader.read(10), 5)
            except ConnectionResetError:
                pass
            writer.close()
        proxy.clear(jitter)
        proxy.clear(reset)
        return [jitter.decisions, reset.decisions]

    return with_proxy(body)


def test_the_same_seed_makes_the_same_choices() -> None:
    first, again, other = _choices(0xC0FFEE), _choices(0xC0FFEE), _choices(0xBEEF)
    assert first == again
    assert first != other
    resets = [d for d in first[1] if d[2] == "reset"]
    assert 0 < len(resets) < 11  # the warm connection is in flight at impair time: 11 choices


def test_close_with_bytes_held_logs_no_error() -> None:
    # Closing the proxy cancels relays that are sleeping on a delay: that must end quietly, not as
    # asyncio's "Exception in callback ... CancelledError" traceback on stderr.
    errors: list[dict] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        upstream = await Upstream().start()
        proxy = FaultProxy()
        address = await proxy.start(lambda: ("127.0.0.1", upstream.port))
        reader, writer = await asyncio.open_connection(*address)
        await roundtrip((reader, writer), b"ping")
        proxy.impair("net-latency", {"delay_ms": 2000}, seed=1)
        writer.write(b"held")
        await writer.drain()
        await asyncio.sleep(0.1)  # the relay is now sleeping on the held bytes
        await proxy.close()
        await asyncio.sleep(0.05)  # let the stream callbacks run
        writer.close()
        await upstream.close()

    asyncio.run(main())
    assert not errors, [e.get("message") for e in errors]
