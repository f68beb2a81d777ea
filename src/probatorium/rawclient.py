"""The one raw-socket client: send exact bytes, split and paced, and record what comes back.

Slices that need byte-exact control (adversarial cases, h2c preambles,
WebSocket frames) use `exchange`; it never interprets HTTP itself, it only
records bytes, timing and how the connection ended, so verdicts stay pure
functions over its result.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def set_nodelay(sock: socket.socket | None) -> None:
    """TCP_NODELAY on a client socket (None or a socket that refuses it: nothing to do).

    Every client here writes whole requests or frames: Nagle would only delay them."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


@dataclass(frozen=True)
class Segment:
    """Bytes written in one send call after waiting `delay` seconds."""

    data: bytes
    delay: float = 0.0


@dataclass
class Exchange:
    """What happened on one connection."""

    sent: bytes = b""
    received: bytes = b""
    eof: bool = False  # the server closed (FIN)
    reset: bool = False  # the connection was reset (RST / EPIPE)
    timed_out: bool = False  # we stopped reading because nothing more came
    connect_error: str | None = None
    send_error: str | None = None
    overflow: bool = False  # reading stopped at max_bytes
    elapsed: float = 0.0
    first_byte_at: float | None = None  # seconds after connect
    closed_at: float | None = None  # seconds after connect, when EOF/RST arrived
    events: list[tuple[float, str, int]] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return self.eof or self.reset


async def exchange(
    host: str,
    port: int,
    segments: list[Segment],
    *,
    quiet_timeout: float = 3.0,
    total_timeout: float = 15.0,
    connect_timeout: float = 3.0,
    done: Callable[[bytes], bool] | None = None,
    linger: float = 0.25,
    rst_at_end: bool = False,
    max_bytes: int = 4 << 20,
    held=None,
    owner: str = "",
) -> Exchange:
    """Connect, send the segments, and read until the server closes or goes quiet.

    Reading runs concurrently with sending, so an early response or close is
    seen as it happens. Reading stops at EOF/RST, after `quiet_timeout`
    seconds without new bytes once everything was sent, after `total_timeout`
    seconds, or `linger` seconds after `done(received)` first returns True (to
    catch bytes a server sends after the expected ones).

    `held` (a validate.tier1.held.HeldStreams) counts the connection, while it is open, as
    a stream `owner` holds when the segments ask for the SSE path.
    """
    ex = Exchange()
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), connect_timeout)
    except (OSError, asyncio.TimeoutError) as e:
        ex.connect_error = f"{type(e).__name__}: {e}"
        ex.elapsed = time.monotonic() - t0
        return ex
    sock = writer.get_extra_info("socket")
    set_nodelay(sock)
    counted = held is not None and held.acquire(b"".join(seg.data for seg in segments), owner)
    sending_done = asyncio.Event()
    send_task = asyncio.create_task(_send_all(writer, segments, ex, t0, sending_done))
    try:
        await _read_until_done(reader, ex, t0, sending_done, deadline=t0 + total_timeout,
                               quiet_timeout=quiet_timeout, linger=linger, done=done, max_bytes=max_bytes)
    finally:
        send_task.cancel()
        try:
            await send_task
        except (asyncio.CancelledError, Exception):
            pass
        if ex.send_error and not ex.closed and "reset" in ex.send_error.lower():
            ex.reset = True
        if rst_at_end and sock is not None:
            try:  # SO_LINGER 0: close with RST, as an abrupt client would
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        writer.close()
        if counted:
            held.release(owner)
        await _wait_closed(writer)
    ex.elapsed = time.monotonic() - t0
    return ex


async def _send_all(writer: asyncio.StreamWriter, segments: list[Segment], ex: Exchange, t0: float,
                    sending_done: asyncio.Event) -> None:
    """Write the segments, each after its delay, until the connection closes; record what went out."""
    try:
        for seg in segments:
            if seg.delay:
                await asyncio.sleep(seg.delay)
            if ex.closed:
                break
            writer.write(seg.data)
            await writer.drain()
            ex.sent += seg.data
            ex.events.append((time.monotonic() - t0, "send", len(seg.data)))
    except (ConnectionError, OSError) as e:
        ex.send_error = f"{type(e).__name__}: {e}"
    finally:
        sending_done.set()


async def _read_until_done(reader: asyncio.StreamReader, ex: Exchange, t0: float, sending_done: asyncio.Event, *,
                           deadline: float, quiet_timeout: float, linger: float,
                           done: Callable[[bytes], bool] | None, max_bytes: int) -> None:
    """Read into `ex` until EOF/RST, `max_bytes`, the deadline, `quiet_timeout` of silence once
    everything was sent, or `linger` seconds after `done(received)` first held."""
    done_at: float | None = None
    last_activity = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline:
            ex.timed_out = True
            return
        if done_at is not None:
            wait = done_at + linger - now
            if wait <= 0:
                return
        elif sending_done.is_set():
            wait = last_activity + quiet_timeout - now
            if wait <= 0:
                ex.timed_out = True
                return
        else:
            wait = 0.1
        wait = min(wait, deadline - now)
        try:
            chunk = await asyncio.wait_for(reader.read(65536), timeout=max(wait, 0.001))
        except asyncio.TimeoutError:
            if not sending_done.is_set():
                last_activity = time.monotonic()  # silence while we still send is not quiet
            continue
        except (ConnectionResetError, BrokenPipeError, OSError):
            ex.reset = True
            ex.closed_at = time.monotonic() - t0
            return
        if not chunk:
            ex.eof = True
            ex.closed_at = time.monotonic() - t0
            return
        if ex.first_byte_at is None:
            ex.first_byte_at = time.monotonic() - t0
        ex.received += chunk
        ex.events.append((time.monotonic() - t0, "recv", len(chunk)))
        if len(ex.received) >= max_bytes:
            ex.overflow = True
            return
        last_activity = time.monotonic()
        if done_at is None and done is not None and done(ex.received):
            done_at = last_activity


async def _wait_closed(writer: asyncio.StreamWriter) -> None:
    """Wait (at most a second) for a closed writer's transport to go."""
    try:
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (asyncio.TimeoutError, OSError, ConnectionError):
        pass


async def can_connect(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when the port accepts a TCP connection."""
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    w.close()
    await _wait_closed(w)
    return True
