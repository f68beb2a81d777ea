"""The SSE kill-mid-stream slice: hold event streams for a seeded while, reset them, and check
from the target's debug endpoint that the SERVER releases its slots (I-CONN-2).

Walkers open `GET <sse_path>` with `Accept: text/event-stream`, check 200 +
text/event-stream, read events for a seeded 50–1500 ms and go away: a seeded
RESET_SHARE of the streams with a reset (SO_LINGER 0, a killed client), the
others with a clean close (FIN, a tab closed), since a server may release its
slot on one of the two paths only. A sampler polls the debug endpoint (`sse_open`) every 0.5 s
next to the number of streams the validator holds; judge.py decides. After
the walkers end, the orchestrator awaits `settle()`: sampling goes on until
the server is back within the allowance or 12 s passed.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable

from .... import __version__
from ....rawclient import Segment, exchange
from ...incidents import Evidence
from ....seeds import derive_seed
from ..base import SliceBase
from ..http1 import parse_response_stream
from ..held import HeldStreams
from ...repro import build_repro, connect, http_exchange, reset_close
from . import judge as judge_module
from .judge import SETTLE_WINDOW, Conn2Result, allowed, dechunk_prefix, judge_series, sse_events

POLL_INTERVAL = 0.5
SETTLE_MAX = 12.0  # seconds of sampling after the walkers stop
HOLD_MS = (50, 1500)
HEAD_TIMEOUT = 5.0
RESET_SHARE = 0.5  # streams ended by a reset; the others end with FIN


async def _read_for(reader: asyncio.StreamReader, data: bytes, seconds: float) -> tuple[bytes, bool]:
    """Keep reading the stream for `seconds`; (data, whether the server ended it)."""
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return data, False
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except asyncio.TimeoutError:
            return data, False
        except (ConnectionError, OSError):
            return data, True
        if not chunk:
            return data, True
        data += chunk


async def _close(writer: asyncio.StreamWriter, reset: bool, closed: Callable[[], None]) -> None:
    """Close the stream (with `reset`, SO_LINGER 0 makes it an RST, as a killed client's would be);
    `closed` runs once the close is issued, before waiting for it to finish."""
    sock = writer.get_extra_info("socket")
    if sock is not None and reset:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.close()
    closed()
    try:
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (asyncio.TimeoutError, OSError, ConnectionError):
        pass


class SseKillSlice(SliceBase):
    """SSE kill-mid-stream walkers plus the debug-endpoint sampler behind I-CONN-2."""

    name = "sse"

    def __init__(self, host: str, port: int, *, sse_path: str = "/events", debug_path: str = "/debug/vars",
                 seed: int = 0, report: Callable[[Evidence], None] | None = None,
                 alive: Callable[[], Awaitable[bool]] | None = None,
                 recover: Callable[[], Awaitable[bool]] | None = None,
                 settle_window: float = SETTLE_WINDOW, settle_max: float = SETTLE_MAX,
                 poll_interval: float = POLL_INTERVAL, held: HeldStreams | None = None) -> None:
        self.host, self.port = host, port
        self.sse_path, self.debug_path = sse_path, debug_path
        self.seed = seed
        self.report = report or (lambda ev: None)
        self.alive, self.recover = alive, recover
        self.settle_window, self.settle_max, self.poll_interval = settle_window, settle_max, poll_interval
        self.tally: Counter = Counter()
        self.rfc: Counter = Counter()
        self.stopped_reason = ""
        self.endpoint_absent = False
        self.internal_errors: list[str] = []
        # Streams the validator holds open on the SSE path right now, whichever slice opened them
        # (the orchestrator shares one registry per cell): what sse_open is compared with.
        self.streams = held if held is not None else HeldStreams(sse_path)
        self.series: list[tuple[float, int | None, int]] = []
        self.debug_reason = ""  # why the debug endpoint cannot be used ('' = usable or not tried yet)
        self.last_refusal = ""  # the last non-stream answer on the SSE path, for the not_judged reason
        self._t0: float | None = None
        self._sampler_task: asyncio.Task | None = None
        self._sampler_stop: asyncio.Event | None = None
        self._settled = False
        self._conn2_reported = False
        self._liveness_reported = False
        self._failed: Conn2Result | None = None

    @property
    def held(self) -> int:
        """Streams the validator (every slice) holds open on the SSE path right now."""
        return self.streams.count

    # ---- one stream --------------------------------------------------------------------
    def _request(self) -> bytes:
        return (f"GET {self.sse_path} HTTP/1.1\r\nHost: {self.host_header}\r\nAccept: text/event-stream\r\n"
                "Cache-Control: no-cache\r\n\r\n").encode("latin-1")

    async def hold_stream(self, hold: float, reset: bool = True) -> str:
        """Open one stream, read events for `hold` s after the head, then reset it (or, with
        reset=False, close it cleanly with FIN). Returns the outcome:
        killed | server_closed_early | handshake_fail | endpoint_absent | conn_error."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 3.0)
        except (OSError, asyncio.TimeoutError):
            return "conn_error"
        self.streams.hold(self.name)
        self.tally["sse_sent"] += 1
        data = b""
        eof = False
        try:
            writer.write(self._request())
            await writer.drain()
            deadline = time.monotonic() + HEAD_TIMEOUT
            while b"\r\n\r\n" not in data:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.tally["sse_head_timeout"] += 1
                    return "handshake_fail"
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), left)
                except asyncio.TimeoutError:
                    continue
                if not chunk:
                    eof = True
                    break
                data += chunk
            parsed = parse_response_stream(data, ["GET"], eof=eof)
            resp = parsed.responses[0] if parsed.responses else None
            if resp is None:
                self._framing(parsed, count=0)
                return "handshake_fail"
            ctype = (resp.header(b"content-type") or b"").split(b";")[0].strip().lower()
            if resp.status != 200 or ctype != b"text/event-stream":
                data, eof = await self._drain(reader, data, ["GET"], eof)
                self._framing(parse_response_stream(data, ["GET"], eof=eof))
                self.last_refusal = f"GET {self.sse_path} answered {resp.status} {ctype.decode('latin-1') or '(no type)'}"
                return "endpoint_absent" if resp.status == 404 else "handshake_fail"
            self.tally["sse_established"] += 1
            head_end = data.find(b"\r\n\r\n") + 4
            data, eof = await _read_for(reader, data, hold)
            body = data[head_end:]
            if resp.framing == "chunked":
                body = dechunk_prefix(body)
            self.tally["sse_events_read"] += sse_events(body)
            if eof:
                self._framing(parse_response_stream(data, ["GET"], eof=True))
                return "server_closed_early"
            return "killed"
        except (ConnectionError, OSError):
            return "server_closed_early" if data else "conn_error"
        finally:
            await _close(writer, reset, lambda: self.streams.release(self.name))

    async def _drain(self, reader, data: bytes, methods: list[str], eof: bool) -> tuple[bytes, bool]:
        """Read the rest of a short (non-stream) answer, up to 2 s, for its framing check."""
        end = time.monotonic() + 2.0
        while not eof and time.monotonic() < end:
            p = parse_response_stream(data, methods, eof=False)
            if p.responses and p.responses[0].complete:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), max(end - time.monotonic(), 0.01))
            except (asyncio.TimeoutError, ConnectionError, OSError):
                break
            if not chunk:
                eof = True
                break
            data += chunk
        return data, eof

    def _framing(self, parsed, count: int | None = None) -> None:
        self.rfc["responses_checked"] += len([r for r in parsed.responses if r.complete]) if count is None else count
        for v in parsed.violations:
            self.rfc["rfc1_violations" if v.predicate == "I-RFC-1" else "rfc2_violations"] += 1
            self.report(Evidence(predicate=v.predicate, detail=f"sse GET {self.sse_path}: {v.detail}",
                                 case=f"sse GET {self.sse_path}", sent=self._request(), seed=self.seed))

    # ---- walkers -----------------------------------------------------------------------
    async def walker(self, walker_id: int, deadline: float, stop: Callable[[], bool]) -> None:
        """Open, hold and reset streams until the deadline (or the endpoint is absent)."""
        self._ensure_sampler()
        rng = random.Random(derive_seed(self.seed, "sse-walker", walker_id))
        while time.monotonic() < deadline and not stop() and not self.stopped_reason:
            hold = rng.randint(*HOLD_MS) / 1000.0
            hold = min(hold, max(deadline - time.monotonic(), 0.05))
            reset = rng.random() < RESET_SHARE
            try:
                outcome = await self.hold_stream(hold, reset)
            except Exception:
                self.tally["sse_internal_error"] += 1
                if not self.internal_errors:
                    self.internal_errors.append(traceback.format_exc())
                await asyncio.sleep(0.1)
                continue
            if outcome == "killed":
                self.tally["sse_killed_mid_stream"] += 1
                self.tally["sse_reset" if reset else "sse_fin_closed"] += 1
            elif outcome == "server_closed_early":
                self.tally["sse_server_closed_early"] += 1
            elif outcome == "handshake_fail":
                self.tally["sse_handshake_fail"] += 1
                await asyncio.sleep(0.1)
            elif outcome == "endpoint_absent":
                self.tally["sse_endpoint_absent"] += 1
                self.endpoint_absent = True
                self.stopped_reason = f"endpoint_absent: GET {self.sse_path} answered 404"
                return
            elif outcome == "conn_error":
                self.tally["sse_conn_error"] += 1
                if self.alive is not None and not await self.alive():
                    if not self._liveness_reported:
                        self._liveness_reported = True
                        self.report(Evidence(predicate="I-LIVENESS", detail="the target died during the SSE slice",
                                             case="sse", seed=self.seed, extra={"held": self.held}))
                    if self.recover is None or not await self.recover():
                        self.stopped_reason = "the target died during the SSE slice and could not be restarted"
                        return
                else:
                    await asyncio.sleep(0.2)

    # ---- the sampler -------------------------------------------------------------------
    def _ensure_sampler(self) -> None:
        if self._sampler_task is None:
            self._t0 = time.monotonic()
            self._sampler_stop = asyncio.Event()
            self._sampler_task = asyncio.create_task(self._sampler())

    async def poll_debug(self) -> int | None:
        """One GET of the debug endpoint; the sse_open value, or None (debug_reason set when final)."""
        req = (f"GET {self.debug_path} HTTP/1.1\r\nHost: {self.host_header}\r\nAccept: application/json\r\n"
               "Connection: close\r\n\r\n").encode("latin-1")

        def done(data: bytes) -> bool:
            p = parse_response_stream(data, ["GET"], eof=False)
            return bool(p.responses) and p.responses[0].complete

        ex = await exchange(self.host, self.port, [Segment(req)], quiet_timeout=2.0, total_timeout=3.0,
                            done=done, linger=0.0)
        parsed = parse_response_stream(ex.received, ["GET"], eof=ex.closed)
        resp = next((r for r in parsed.responses if r.complete and not r.interim), None)
        if resp is None:
            return None  # transient: no answer this time
        self._framing(parsed)
        if resp.status != 200:
            if resp.status in (404, 405, 410, 501) or 400 <= resp.status < 500:
                self.debug_reason = f"no debug endpoint: GET {self.debug_path} answered {resp.status}"
            return None
        try:
            doc = json.loads(resp.body)
        except ValueError:
            self.debug_reason = f"the debug endpoint {self.debug_path} does not answer JSON"
            return None
        value = doc.get("sse_open") if isinstance(doc, dict) else None
        if not isinstance(value, int) or isinstance(value, bool):
            self.debug_reason = f"the debug endpoint {self.debug_path} has no integer field sse_open"
            return None
        return value

    async def _sampler(self) -> None:
        assert self._sampler_stop is not None
        while not self._sampler_stop.is_set():
            t = time.monotonic() - (self._t0 or time.monotonic())
            held = self.held
            try:
                value = await self.poll_debug()
            except Exception:
                value = None
                self.tally["sse_sampler_error"] += 1
            if self.debug_reason:
                return  # the endpoint or field is absent: I-CONN-2 is not judged
            self.series.append((round(t, 3), value, max(held, self.held)))
            self._check_online()
            try:
                await asyncio.wait_for(self._sampler_stop.wait(), self.poll_interval)
            except asyncio.TimeoutError:
                pass

    def _check_online(self) -> None:
        if self._conn2_reported or not self.tally["sse_established"]:
            return
        res = judge_series(self.series, settle_window=self.settle_window)
        if res.status == "failed":
            self._conn2_reported = True
            self._failed = res
            self.report(self._conn2_evidence(res))

    def _conn2_evidence(self, res: Conn2Result) -> Evidence:
        return Evidence(
            predicate="I-CONN-2", detail=f"SSE slots not released: {res.reason}", case=f"sse GET {self.sse_path}",
            sent=self._request(), seed=self.seed,
            extra={"series": [{"t": t, "sse_open": o, "held": h, "allowed": allowed(h)} for t, o, h in self.series],
                   "settle_window_s": self.settle_window, "debug_path": self.debug_path,
                   "established": self.tally["sse_established"]},
            repro=sse_repro(addr=self.host_header, sse_path=self.sse_path, debug_path=self.debug_path),
        )

    def _in_excess(self) -> bool:
        valid = [s for s in self.series if s[1] is not None]
        return bool(valid) and valid[-1][1] > allowed(valid[-1][2])

    async def settle(self) -> None:
        """After the walkers end: sample until the server is back within the allowance for two
        polls in a row or settle_max seconds passed, then stop the sampler."""
        if self._sampler_task is None or self._settled:
            self._settled = True
            return
        end = time.monotonic() + self.settle_max
        n0 = len(self.series)
        while time.monotonic() < end and not self._sampler_task.done():
            await asyncio.sleep(self.poll_interval)
            tail = [s for s in self.series[n0:] if s[1] is not None]
            if len(tail) >= 2 and not any(o > allowed(h) for _, o, h in tail[-2:]):
                break
            if self._conn2_reported:
                break
        assert self._sampler_stop is not None
        self._sampler_stop.set()
        try:
            await asyncio.wait_for(self._sampler_task, 5.0)
        except (asyncio.TimeoutError, Exception):
            self._sampler_task.cancel()
        self._settled = True
        self._check_online()

    # ---- results -----------------------------------------------------------------------
    def judge_conn2(self) -> tuple[str, int, str]:
        """(status, evaluations, reason) of I-CONN-2 for this cell."""
        if self.endpoint_absent:
            return "not_judged", 0, f"endpoint_absent: GET {self.sse_path} answered 404"
        if self._failed is not None:
            return "failed", self._failed.evaluations, self._failed.reason
        if self.debug_reason:
            return "not_judged", 0, self.debug_reason
        if not self.tally["sse_established"]:
            why = f" (last refusal: {self.last_refusal})" if self.last_refusal else ""
            return "not_judged", 0, f"no SSE stream was established{why}"
        res = judge_series(self.series, settle_window=self.settle_window, final=self._settled)
        if res.status == "failed" and not self._conn2_reported:
            self._conn2_reported, self._failed = True, res
            self.report(self._conn2_evidence(res))
        if res.status == "passed" and not self._settled:
            return "not_judged", res.evaluations, "sampling has not settled yet (settle() was not awaited)"
        return res.status, res.evaluations, res.reason

    async def finish(self) -> None:
        """I-CONN-2 is judged after the settle window."""
        await self.settle()

    def evidence(self) -> dict:
        from ....results.schema import PropertyResult

        status, evaluations, reason = self.judge_conn2()
        return {"I-CONN-2": PropertyResult(status=status, evaluations=evaluations, reason=reason)}

    def detail(self) -> dict:
        return {"stopped_reason": self.stopped_reason, "endpoint_absent": self.endpoint_absent}

    def counters(self) -> dict[str, int]:
        """The `tier_1.sse_kill` string→int map."""
        base = {k: 0 for k in ("sse_sent", "sse_established", "sse_events_read", "sse_killed_mid_stream",
                               "sse_server_closed_early", "sse_handshake_fail", "sse_endpoint_absent")}
        base.update(self.tally)
        valid = [o for _, o, _ in self.series if o is not None]
        base["sse_debug_samples"] = len(valid)
        base["sse_open_max"] = max(valid) if valid else 0
        return dict(base)


def _debug_sse_open(host: str, port: int, addr: str, path: str) -> int | None:
    """sse_open from the target's debug endpoint (None when it does not answer with it)."""
    sock = connect(host, port, timeout=3)
    data, _ = http_exchange(sock, f"GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n".encode(),
                            timeout=3)
    sock.close()
    try:
        return json.loads(data.split(b"\r\n\r\n", 1)[1]).get("sse_open")
    except (IndexError, ValueError, AttributeError):
        return None


def judge_sse(host: str, port: int, addr: str, payload: dict) -> tuple[bool, str]:
    """Hold N streams, reset half and close the others, then sample sse_open: reproduced when it
    stays above the allowance for longer than the settle window (sse/judge.py's judge_series)."""
    n, window, t0 = payload["streams"], payload["settle_window"], time.monotonic()
    request = (f"GET {payload['sse_path']} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").encode()
    socks = []
    for _ in range(n):
        sock = connect(host, port, timeout=3)
        sock.sendall(request)
        socks.append(sock)
    time.sleep(0.5)
    series = [(time.monotonic() - t0, _debug_sse_open(host, port, addr, payload["debug_path"]), n)]
    print(f"sse_open while holding {n} streams: {series[-1][1]}")
    for i, sock in enumerate(socks):
        if i % 2 == 0:  # half reset (SO_LINGER 0), half closed cleanly (FIN)
            reset_close(sock)
        else:  # a close() with unread events would send an RST: end the write side first
            sock.shutdown(socket.SHUT_WR)
    time.sleep(0.3)
    for sock in socks[1::2]:
        sock.close()
    closed_at = time.monotonic()
    while time.monotonic() - closed_at < window + 2.0:
        time.sleep(0.5)
        series.append((time.monotonic() - t0, _debug_sse_open(host, port, addr, payload["debug_path"]), 0))
        print(f"t={series[-1][0]:.1f}s sse_open={series[-1][1]}")
        if series[-1][1] is not None and series[-1][1] <= allowed(0):
            break  # every slot released: the excess run is over
    res = judge_series(series, settle_window=window, final=True)
    return res.status == "failed", f"I-CONN-2 {res.status}: {res.reason}"


def sse_repro(*, addr: str, sse_path: str, debug_path: str, settle_window: float = SETTLE_WINDOW,
              streams: int = 20) -> str:
    """Source of a standalone repro.py for an I-CONN-2 finding."""
    how = (f"Opens {streams} streams on {sse_path}, reads for 0.5 s, resets half of them (SO_LINGER 0) and\n"
           f"closes the others (FIN), then polls {debug_path}: the finding reproduces when sse_open stays\n"
           f"above the allowance for more than {settle_window:g} s (the slice's own series judge, embedded).")
    payload = {"sse_path": sse_path, "debug_path": debug_path, "settle_window": settle_window, "streams": streams}
    return build_repro("sse", payload, judge_sse, predicate="I-CONN-2", detail="server-side SSE slots not released",
                       addr=addr, version=__version__, how=how, modules=(judge_module,), helpers=(_debug_sse_open,))
