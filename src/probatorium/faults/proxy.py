"""The seeded user-space fault proxy: a loopback TCP relay between the walkers and the target.

This kernel has no ``netem``, so Tier 3's network faults are made here, in user space, on real
sockets: every accepted connection is relayed to the target's CURRENT address (the ``upstream``
callable follows restarts), and each chunk read on one side passes the active impairments before
it is written on the other:

- ``net-reset``: chosen connections get an RST (SO_LINGER 0, then close) on both sides;
- ``net-halfclose``: a direction is shut (the peer reads EOF) and later bytes that way dropped;
- ``net-stall``: a connection's bytes are held for ``hold_ms``, then released or the connection reset;
- ``net-latency`` / ``net-jitter``: each chunk waits a fixed / seeded-random delay;
- ``net-slice`` / ``net-bandwidth``: each chunk is written in small pieces with pauses / paced.

Every choice (which connection is reset, each jitter draw) comes from a :class:`random.Random`
derived from the impairment's seed, the connection's ordinal WITHIN that impairment and the
direction — never from the clock or the proxy's history — so the same seed and the same byte
arrivals give the same choices (``Impairment.decisions`` records them).

The proxy is driven from its own event loop: ``impair`` / ``clear`` / ``stats`` are plain calls
made on the loop's thread.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from probatorium.faults.spec import PROXY_KINDS, check_params
from probatorium.rawclient import set_nodelay
from probatorium.seeds import derive_seed

CHUNK = 65536
CONNECT_TIMEOUT_S = 3.0
#: The pacing quantum of net-bandwidth: a piece is at most this share of one second's bytes.
BANDWIDTH_QUANTUM = 20
UP, DOWN = "up", "down"


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Abort a connection with an RST: SO_LINGER {on, 0} makes close() send one."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    set_nodelay(writer.get_extra_info("socket"))


@dataclass(eq=False)
class Impairment:
    """One active (or cleared) impairment: the handle ``impair`` returns and ``clear`` takes."""

    kind: str
    params: dict[str, Any]
    seed: int
    started: float
    ended: float | None = None
    #: Choices made, in order: (ordinal of the connection in this impairment, direction, what).
    decisions: list[tuple[int, str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    ordinals: dict[int, int] = field(default_factory=dict)  # connection id → ordinal
    decided: set[int] = field(default_factory=set)  # connections the per-connection choice was made for
    holds: dict[int, float] = field(default_factory=dict)  # connection id → stall deadline (monotonic)
    cleared: asyncio.Event = field(default_factory=asyncio.Event)
    _rngs: dict[tuple[int, str], random.Random] = field(default_factory=dict)

    def covers(self, direction: str) -> bool:
        return self.params.get("direction", "both") in ("both", direction)

    def ordinal(self, conn_id: int) -> int:
        """The connection's ordinal in this impairment (first touched = 0)."""
        if conn_id not in self.ordinals:
            self.ordinals[conn_id] = len(self.ordinals)
            self.count("connections")
        return self.ordinals[conn_id]

    def rng(self, conn_id: int, direction: str) -> random.Random:
        """The seeded generator of one connection's direction (independent of the others')."""
        key = (self.ordinal(conn_id), direction)
        if key not in self._rngs:
            self._rngs[key] = random.Random(derive_seed(self.seed, self.kind, *key))
        return self._rngs[key]

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def observed(self) -> dict[str, Any]:
        """What this impairment touched: connections, bytes, and its kind's own counters."""
        out: dict[str, Any] = {"connections": 0, "bytes": 0}
        out.update(self.counters)
        return out


class _Conn:
    """One relayed connection: the client's side and the target's side."""

    def __init__(self, conn_id: int, client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.id = conn_id
        self.client_reader, self.client_writer = client
        self.up_reader, self.up_writer = upstream
        self.shut: set[str] = set()  # directions shut by net-halfclose
        self.reset_sent = False

    def writer(self, direction: str) -> asyncio.StreamWriter:
        """The side bytes going ``direction`` are written to."""
        return self.up_writer if direction == UP else self.client_writer

    def reset(self) -> bool:
        """RST both sides (once); True if this call sent it."""
        if self.reset_sent:
            return False
        self.reset_sent = True
        _rst(self.client_writer)
        _rst(self.up_writer)
        return True

    def shut_direction(self, direction: str) -> bool:
        """Shut one direction: the side it writes to reads EOF. True if newly shut."""
        if direction in self.shut or self.reset_sent:
            return False
        self.shut.add(direction)
        writer = self.writer(direction)
        try:
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
        except OSError:
            pass
        return True


class FaultProxy:
    """A seeded TCP proxy on loopback; see the module docstring."""

    def __init__(self) -> None:
        self._upstream: Callable[[], tuple[str, int]] | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: dict[int, _Conn] = {}
        self._tasks: set[asyncio.Task] = set()
        self._ids = itertools.count()
        self._active: list[Impairment] = []
        self._stats = {"connections": 0, "bytes_up": 0, "bytes_down": 0, "resets_sent": 0, "stalls": 0,
                       "pieces": 0, "halfcloses": 0, "delayed_chunks": 0, "dropped_bytes": 0,
                       "upstream_failures": 0}
        self.address: tuple[str, int] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, upstream: Callable[[], tuple[str, int]], host: str = "127.0.0.1",
                    port: int = 0) -> tuple[str, int]:
        """Listen on ``host:port`` (0: a free port) and relay to ``upstream()``; returns the address."""
        if self._server is not None:
            raise RuntimeError("the fault proxy is already started")
        self._upstream = upstream
        self._server = await asyncio.start_server(self._accept, host, port)
        sockname = self._server.sockets[0].getsockname()
        self.address = (sockname[0], sockname[1])
        return self.address

    async def close(self) -> None:
        """Stop listening, abort every relayed connection, end every impairment."""
        if self._server is not None:
            self._server.close()
        for imp in list(self._active):
            self.clear(imp)
        for conn in list(self._conns.values()):
            conn.client_writer.transport.abort()
            conn.up_writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- impairments -------------------------------------------------------------------------

    def impair(self, kind: str, params: dict[str, Any], seed: int) -> Impairment:
        """Start an impairment now (several may be active); returns its handle for :meth:`clear`."""
        if kind not in PROXY_KINDS:
            raise ValueError(f"{kind!r} is not a proxy fault (those are {', '.join(sorted(PROXY_KINDS))})")
        imp = Impairment(kind, check_params(kind, params), int(seed), time.monotonic())
        self._active.append(imp)
        if kind in ("net-reset", "net-halfclose"):  # they act on the connections in flight at once
            for conn_id in sorted(self._conns):
                self._decide(imp, self._conns[conn_id])
        return imp

    def clear(self, handle: Impairment) -> dict[str, Any]:
        """End an impairment (held bytes are released); returns what it observed. Idempotent."""
        if handle in self._active:
            self._active.remove(handle)
            handle.ended = time.monotonic()
            handle.cleared.set()
        return handle.observed()

    def active(self) -> list[Impairment]:
        """The impairments in force now."""
        return list(self._active)

    def stats(self) -> dict[str, int]:
        """Totals since start: connections accepted and open, bytes each way, resets, stalls, pieces..."""
        return dict(self._stats, open=len(self._conns))

    def _decide(self, imp: Impairment, conn: _Conn) -> None:
        """The once-per-connection choice of net-reset / net-halfclose."""
        if conn.id in imp.decided or conn.reset_sent:
            return
        imp.decided.add(conn.id)
        ordinal = imp.ordinal(conn.id)
        if imp.kind == "net-reset":
            hit = imp.rng(conn.id, "both").random() < imp.params["fraction"]
            imp.decisions.append((ordinal, "both", "reset" if hit else "spared"))
            if hit and conn.reset():
                imp.count("connections_reset")
                self._stats["resets_sent"] += 1
            return
        directions = (UP, DOWN) if imp.params["direction"] == "both" else (imp.params["direction"],)
        for direction in directions:
            imp.decisions.append((ordinal, direction, "shut"))
            if conn.shut_direction(direction):
                imp.count("halfclosed")
                self._stats["halfcloses"] += 1

    # -- relaying ----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection, relayed until either side ends it. A cancel (`close()`) ends it
        quietly: asyncio's stream callback calls `exception()` on the handler task and, for a
        cancelled task, logs "Exception in callback" with a traceback (Python 3.11)."""
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:
            pass

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn_id = next(self._ids)
        self._stats["connections"] += 1
        _nodelay(writer)
        try:
            assert self._upstream is not None
            host, port = self._upstream()
            upstream = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
        except asyncio.CancelledError:  # close() while dialling: abort the client's side, end quietly
            writer.transport.abort()
            self._tasks.discard(task)
            return
        except Exception:  # noqa: BLE001 - OSError, a timeout, or no address yet: the same for the client
            # The target is down (killed, restarting): the client sees a reset, as from a closed port.
            self._stats["upstream_failures"] += 1
            _rst(writer)
            self._tasks.discard(task)
            return
        _nodelay(upstream[1])
        conn = _Conn(conn_id, (reader, writer), upstream)
        self._conns[conn_id] = conn
        try:
            await asyncio.gather(self._pump(conn, UP), self._pump(conn, DOWN))
        except asyncio.CancelledError:
            # close() cancels it: end quietly (asyncio's stream callback would print a cancelled
            # handler's CancelledError as a traceback, on Python 3.11)
            pass
        finally:
            self._conns.pop(conn_id, None)
            for side in (conn.client_writer, conn.up_writer):
                side.transport.close()
            self._tasks.discard(task)

    async def _pump(self, conn: _Conn, direction: str) -> None:
        """Relay one direction until EOF; an error on either side resets the whole connection."""
        reader = conn.client_reader if direction == UP else conn.up_reader
        writer = conn.writer(direction)
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    if direction not in conn.shut and writer.can_write_eof() and not writer.is_closing():
                        writer.write_eof()
                    return
                self._stats["bytes_" + direction] += len(data)
                await self._forward(conn, direction, data, writer)
                if conn.reset_sent:
                    return
        except (ConnectionError, OSError):
            if conn.reset():  # the peer reset or vanished: pass it on to the other side
                pass
        except asyncio.CancelledError:
            conn.reset()
            raise

    async def _forward(self, conn: _Conn, direction: str, data: bytes, writer: asyncio.StreamWriter) -> None:
        """One chunk through the active impairments, then written."""
        active = [imp for imp in self._active if imp.covers(direction) or imp.kind == "net-reset"]
        for imp in active:
            imp.ordinal(conn.id)
            imp.count("bytes", len(data))
            if imp.kind in ("net-reset", "net-halfclose"):
                self._decide(imp, conn)
        if conn.reset_sent:
            return
        if direction in conn.shut:
            self._stats["dropped_bytes"] += len(data)
            return
        for imp in active:
            if imp.kind == "net-stall" and not await self._stall(imp, conn):
                return
        delay = self._delay_s(active, conn, direction)
        if delay > 0:
            self._stats["delayed_chunks"] += 1
            await asyncio.sleep(delay)
        await self._write(active, data, writer)

    async def _stall(self, imp: Impairment, conn: _Conn) -> bool:
        """Hold the connection's bytes (once per impairment); False when it was reset instead."""
        now = time.monotonic()
        if conn.id not in imp.holds:
            imp.holds[conn.id] = now + imp.params["hold_ms"] / 1000.0
            imp.decisions.append((imp.ordinal(conn.id), "both", f"hold {imp.params['hold_ms']:g}ms"))
            imp.count("stalls")
            self._stats["stalls"] += 1
        remaining = imp.holds[conn.id] - now
        if remaining <= 0:
            return True
        try:
            await asyncio.wait_for(imp.cleared.wait(), remaining)
            return True  # the fault ended first: the bytes go
        except asyncio.TimeoutError:
            pass
        if imp.params["then"] == "reset":
            if conn.reset():
                imp.count("connections_reset")
                self._stats["resets_sent"] += 1
            return False
        return True

    def _delay_s(self, active: list[Impairment], conn: _Conn, direction: str) -> float:
        total_ms = 0.0
        for imp in active:
            if imp.kind == "net-latency":
                total_ms += imp.params["delay_ms"]
            elif imp.kind == "net-jitter":
                spread = imp.params["jitter_ms"]
                drawn = max(0.0, imp.params["delay_ms"] + imp.rng(conn.id, direction).uniform(-spread, spread))
                imp.decisions.append((imp.ordinal(conn.id), direction, round(drawn, 3)))
                total_ms += drawn
            else:
                continue
            imp.count("delayed_chunks")
        return total_ms / 1000.0

    async def _write(self, active: list[Impairment], data: bytes, writer: asyncio.StreamWriter) -> None:
        """Write ``data`` whole, or in pieces (net-slice) and paced (net-bandwidth)."""
        slices = [imp for imp in active if imp.kind == "net-slice"]
        rates = [imp for imp in active if imp.kind == "net-bandwidth"]
        if not slices and not rates:
            writer.write(data)
            await writer.drain()
            return
        rate = min((imp.params["bytes_per_s"] for imp in rates), default=0)
        piece = min([imp.params["piece_bytes"] for imp in slices]
                    + ([max(1, rate // BANDWIDTH_QUANTUM)] if rate else []))
        gap_s = max((imp.params["gap_ms"] for imp in slices), default=0.0) / 1000.0
        for offset in range(0, len(data), piece):
            if all(imp.cleared.is_set() for imp in slices + rates):
                # the window ended mid-chunk: the impairment ends with it, the rest goes whole
                writer.write(data[offset:])
                await writer.drain()
                return
            chunk = data[offset:offset + piece]
            writer.write(chunk)
            await writer.drain()
            for imp in slices:
                imp.count("pieces")
            for imp in rates:
                imp.count("paced_bytes", len(chunk))
            if slices:
                self._stats["pieces"] += 1
            pause = max(gap_s, len(chunk) / rate if rate else 0.0)  # after the last piece too: chunks stay apart
            if pause > 0:
                await asyncio.sleep(pause)
