"""The WebSocket torture slice: one raw connection per case, graded like Autobahn.

Every connection does a real RFC 6455 opening handshake (or one of the invalid
handshakes of the catalogue), checks the 101 and its Sec-WebSocket-Accept,
then sends ONE case of the catalogue in frames.py and grades what came back.
All building, parsing and grading is in frames.py (pure, stdlib-only); this
module only schedules cases, does the socket I/O, tallies and reports.

The I/O is a small driver over asyncio streams rather than rawclient.exchange:
RFC 6455 §4.1 requires the client to wait for the server's handshake response
before it sends frames, which a fixed segment schedule cannot express.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ...incidents import Evidence
from .... import procfs
from ....rawclient import set_nodelay
from ....seeds import derive_seed
from ...invariants import predicate_for
from ..base import SliceBase
from ..http1 import parse_response_stream
from . import frames as F
from .frames import CASES, HANDSHAKE_CASES, JUDGE_CLOSE_TCP_MAX_SENT, VALID_HANDSHAKE, VERDICTS, HandshakeCase, WsCase
from .repro import ws_repro

SEVERITY_ORDER = {v: i for i, v in enumerate(VERDICTS)}
MAX_RECORD = 64 << 10  # bytes of what was sent/received kept in evidence
MAX_READ = 1 << 20  # stop reading a connection after this much (an oversize echo shows in its header)


@dataclass
class WsOutcome:
    """What one connection produced."""

    request: bytes = b""
    head: bytes = b""  # the handshake response bytes (head and any body)
    status: int | None = None
    accept_problem: str | None = None
    version_header: str | None = None  # wt-wsasgi: a refusal's Sec-WebSocket-Version
    sent: bytes = b""  # frames sent after the 101 (truncated to MAX_RECORD)
    sent_len: int = 0
    received: bytes = b""  # bytes after the 101
    closed: bool = False  # the server ended TCP (FIN or RST)
    kept_open: bool = False  # close frames exchanged, but TCP still open after the close timeout
    timed_out: bool = False
    connect_error: str | None = None
    send_error: str | None = None
    rfc_violations: list = field(default_factory=list)
    responses_checked: int = 0
    # wt-wsasgi: the oversize stream continued after the server's close (WsCase.after_close)
    sent_after_close: int = 0
    rss_before: int | None = None
    rss_after: int | None = None


class _Conn:
    """A non-blocking socket used through the loop's sock_* calls.

    Not asyncio streams: when a write fails because the server reset the connection
    (it closes while we still send, e.g. after answering an oversize frame with 1009),
    a stream transport drops the bytes already in the kernel's receive queue, and the
    close frame is in there. A plain socket still hands them out before the error.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def recv(self, timeout: float) -> bytes | None:
        """Up to 64 KiB; b"" at EOF or when the connection failed; None when `timeout` s passed."""
        try:
            return await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), max(timeout, 0.001))
        except asyncio.TimeoutError:
            return None
        except (ConnectionError, OSError):
            return b""


async def ws_connection(host: str, port: int, request: bytes, method: str, key: str,
                        segments: list[bytes | None] | None, *, close_timeout: float = 3.0,
                        connect_timeout: float = 3.0, after_close: int = 0,
                        rss: Callable[[], int | None] | None = None) -> WsOutcome:
    """Handshake, then (after a 101, when `segments` is given) send the frames and read
    until a close frame, the end of TCP, or `close_timeout` s of quiet after the last write."""
    out = WsOutcome(request=request)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
    except OSError as e:
        out.connect_error = f"{type(e).__name__}: {e}"
        return out
    try:
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, addr), connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            out.connect_error = f"{type(e).__name__}: {e}"
            return out
        set_nodelay(sock)
        conn = _Conn(sock)
        await _handshake(conn, out, request, method, key, close_timeout)
        if out.status == 101 and segments is not None:
            await _frames(conn, out, segments, close_timeout, after_close, rss)
    finally:
        sock.close()
    return out


async def _handshake(conn: _Conn, out: WsOutcome, request: bytes, method: str, key: str, timeout: float) -> None:
    data = b""
    try:
        await conn.send(request)
    except (ConnectionError, OSError) as e:
        out.send_error = f"{type(e).__name__}: {e}"
    end = time.monotonic() + timeout
    eof = False
    while True:
        parsed = parse_response_stream(data, [method], eof=eof)
        if parsed.upgraded or eof or (parsed.final_responses and parsed.final_responses[0].complete) \
                or parsed.trailing_garbage:
            break
        left = end - time.monotonic()
        if left <= 0:
            out.timed_out = True
            break
        chunk = await conn.recv(left)
        if chunk is None:
            out.timed_out = True
            break
        if not chunk:
            eof = True
            out.closed = True
        data += chunk
    parsed = parse_response_stream(data, [method], eof=eof)
    out.rfc_violations = list(parsed.violations)
    out.responses_checked = len(parsed.responses)
    resp = parsed.responses[-1] if parsed.upgraded else (parsed.final_responses[:1] or [None])[0]
    if resp is None:
        out.head = data
        return
    out.status = resp.status
    if parsed.upgraded:
        cut = data.find(b"\r\n\r\n", resp.offset) + 4
        out.head, out.received = data[:cut], data[cut:]
        acc, upg = resp.header(b"sec-websocket-accept"), resp.header(b"upgrade")
        out.accept_problem = F.check_accept(101, acc.decode("latin-1") if acc is not None else None,
                                            upg.decode("latin-1") if upg is not None else None, key)
        out.closed = False
    else:
        out.head = data
        ver = resp.header(b"sec-websocket-version")  # wt-wsasgi
        out.version_header = ver.decode("latin-1") if ver is not None else None


async def _frames(conn: _Conn, out: WsOutcome, segments: list[bytes | None], timeout: float,
                  after_close: int = 0, rss: Callable[[], int | None] | None = None) -> None:
    """Send the case's frames while reading; once a close frame came, answer it and judge the end
    of TCP. With `after_close`, sending goes on after the server's close (up to that many bytes or
    F.AFTER_CLOSE_MAX_S) and `rss` is sampled before the connection ends."""
    done_sending = asyncio.Event()
    task = asyncio.create_task(_send_case(conn, out, segments, timeout, done_sending))
    try:
        if await _read_to_close(conn, out, timeout, done_sending):
            if after_close:  # wt-wsasgi: keep the stream coming; the server should no longer take it
                at_close, end = out.sent_len, time.monotonic() + F.AFTER_CLOSE_MAX_S
                if rss is not None:
                    out.rss_before = rss()  # what it holds at its close: growth from here is the stream after it
                while not task.done() and out.sent_len - at_close < after_close and time.monotonic() < end:
                    await asyncio.sleep(0.05)
                out.sent_after_close = out.sent_len - at_close
                await asyncio.sleep(0.5)
                out.rss_after = rss() if rss is not None else None
            # Our close reply is a frame only if everything before it went out whole: a close that
            # interrupted our sending (e.g. 1009 in the middle of the oversize payload) leaves us
            # mid-frame, so the server cannot see our reply and is not judged on ending TCP. Nor after
            # a large send: our reply may sit behind megabytes the closing server no longer reads.
            whole = done_sending.is_set() and out.send_error is None and out.sent_len <= JUDGE_CLOSE_TCP_MAX_SENT
            await _cancel(task)
            await _close_tcp(conn, out, timeout, whole)
    finally:
        await _cancel(task)


async def _send_case(conn: _Conn, out: WsOutcome, segments: list[bytes | None], timeout: float,
                     done_sending: asyncio.Event) -> None:
    """Write the segments in order (F.AWAIT_REPLY holds the next write until the server sent a frame)."""
    try:
        for seg in segments:
            if out.closed:
                break
            if seg is None:
                until = time.monotonic() + timeout
                while not F.parse_frames(out.received[:MAX_READ]).frames and time.monotonic() < until \
                        and not out.closed:
                    await asyncio.sleep(0.005)
                continue
            await conn.send(seg)
            out.sent_len += len(seg)
            if len(out.sent) < MAX_RECORD:
                out.sent += seg[:MAX_RECORD - len(out.sent)]
    except (ConnectionError, OSError) as e:
        out.send_error = f"{type(e).__name__}: {e}"
    finally:
        done_sending.set()


async def _read_to_close(conn: _Conn, out: WsOutcome, timeout: float, done_sending: asyncio.Event) -> bool:
    """Read until a complete close frame (True), the end of TCP, MAX_READ bytes, or `timeout` s of
    quiet after the last write (False)."""
    last = time.monotonic()
    hard_end = last + timeout + 30.0
    while not F.close_frame_complete(out.received[:MAX_READ]):
        now = time.monotonic()
        if now >= hard_end:
            out.timed_out = True
            return False
        if done_sending.is_set():
            wait = last + timeout - now
            if wait <= 0:
                out.timed_out = True
                return False
        else:
            wait = 0.1
        chunk = await conn.recv(wait)
        if chunk is None:
            if not done_sending.is_set():
                last = time.monotonic()  # the clock starts when the last byte is out
            continue
        if not chunk:
            out.closed = True
            return False
        out.received += chunk
        last = time.monotonic()
        if len(out.received) >= MAX_READ:
            return False
    return True


async def _close_tcp(conn: _Conn, out: WsOutcome, timeout: float, whole: bool) -> None:
    """Answer the server's close frame (RFC 6455 §5.5.1); both close frames are then out and the
    server MUST end TCP (§7.1.1): anything it still sends is discarded, silence up to the close
    timeout is a hang (judged only when our reply went out `whole`)."""
    try:
        await asyncio.wait_for(conn.send(F.close_reply_frame(out.received)), 0.5)
    except (asyncio.TimeoutError, ConnectionError, OSError):
        pass
    end = time.monotonic() + (timeout if whole else 0.2)
    while not out.closed:
        left = end - time.monotonic()
        if left <= 0:
            out.kept_open = whole
            break
        chunk = await conn.recv(left)
        if chunk is not None:
            out.closed = not chunk


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass


def _after_close_extra(case: WsCase | HandshakeCase, out: WsOutcome) -> dict:
    """wt-wsasgi: what the oversize-after-close verdict was judged from."""
    if not isinstance(case, WsCase) or not case.after_close:
        return {}
    return {"sent_after_close": out.sent_after_close, "rss_before": out.rss_before, "rss_after": out.rss_after,
            "evidence": "rss" if out.rss_after is not None else "bytes sent after the close"}


_NO_LOCK = contextlib.nullcontext()
AFTER_CLOSE_EVERY_S = 10.0  # wt-wsasgi: it may push 65 MiB per run; once in 10 s is evidence enough


@dataclass
class CaseTally:
    counts: Counter = field(default_factory=Counter)
    example: dict | None = None


class WsTortureSlice(SliceBase):
    """Drives the WebSocket catalogue against one target from any number of walkers."""

    name = "ws"

    def __init__(self, host: str, port: int, *, ws_path: str = "/ws", seed: int = 0,
                 report: Callable[[Evidence], None] | None = None,
                 alive: Callable[[], Awaitable[bool]] | None = None,
                 recover: Callable[[], Awaitable[bool]] | None = None,
                 close_timeout: float = 3.0,
                 cases: list[WsCase] | None = None,
                 handshakes: list[HandshakeCase] | None = None,
                 identity: Callable[[], object] | None = None) -> None:
        self.host, self.port = host, port
        self.ws_path = ws_path
        self.seed = seed
        self.report = report or (lambda ev: None)
        self.alive, self.recover = alive, recover
        self.close_timeout = close_timeout
        self.cases = list(CASES if cases is None else cases)
        self.handshakes = list(HANDSHAKE_CASES if handshakes is None else handshakes)
        self.tally: Counter = Counter()
        self.rfc: Counter = Counter()
        self.per_case: dict[str, CaseTally] = {c.name: CaseTally() for c in [*self.cases, *self.handshakes]}
        self.stopped_reason = ""
        self.endpoint_absent = False
        self.internal_errors: list[str] = []
        self._calibrated: bool | None = None
        self._cal_lock = asyncio.Lock()
        self._queue: deque = deque()
        self._round = 0
        self._n = 0
        self._reported: set[tuple[str, str]] = set()
        # wt-wsasgi: the target process (pid) whose RSS judges the oversize stream after close 1009
        self.identity = identity or (lambda: None)
        self._heavy = asyncio.Lock()
        self._after_close_next = 0.0  # the after-close case runs at most every AFTER_CLOSE_EVERY_S
        self._liveness_reported = False

    # ---- one connection ------------------------------------------------------------
    async def run_case(self, case: WsCase | HandshakeCase, conn_seed: int) -> tuple[WsOutcome, F.Grade]:
        rng = random.Random(conn_seed)
        key = F.new_key(rng)
        hs = case if isinstance(case, HandshakeCase) else VALID_HANDSHAKE
        request = F.render_handshake(hs, self.host_header, self.ws_path, key)
        segs = case.build(rng) if isinstance(case, WsCase) else None
        after = case.after_close if isinstance(case, WsCase) else 0
        heavy = isinstance(case, WsCase) and (after or case.name == "oversize message")
        # wt-wsasgi: the oversize cases run one at a time, so the RSS the after-close case reads is its own
        async with self._heavy if heavy else _NO_LOCK:
            out = await ws_connection(self.host, self.port, request, hs.method, key, segs,
                                      close_timeout=self.close_timeout, after_close=after,
                                      rss=self._rss if after else None)
        if out.connect_error:
            return out, F.Grade("ws_conn_error", out.connect_error)
        hg = F.grade_handshake(hs, out.status, out.closed, out.timed_out, out.accept_problem, out.version_header)
        if isinstance(case, HandshakeCase) or hg.verdict != "ws_closed_correctly":
            return out, hg
        g = F.grade(case, out.received, out.closed, out.timed_out, out.kept_open)
        if case.after_close and g.verdict == "ws_closed_correctly":  # wt-wsasgi
            after = F.grade_after_close(out.sent_after_close, out.rss_before, out.rss_after)
            if after is not None:
                g = F.Grade(after[0], after[1], close_code=g.close_code, close_seen=True, frames=g.frames)
        return out, g

    def _rss(self) -> int | None:
        """The target process tree's RSS now (procfs, as the resource sampler reads it); None without one."""
        ident = self.identity()
        pid = getattr(ident, "pid", None)
        sample = procfs.sample_tree(pid) if isinstance(pid, int) else None
        return sample.rss_bytes if sample is not None and sample.procs else None

    # ---- accounting --------------------------------------------------------------------
    def _account(self, case: WsCase | HandshakeCase, out: WsOutcome, g: F.Grade, conn_seed: int,
                 walker_id: int) -> None:
        v = g.verdict
        self.tally["ws_sent"] += 1
        if out.status == 101:
            self.tally["ws_upgraded"] += 1
        self.tally[v] += 1
        ct = self.per_case.setdefault(case.name, CaseTally())
        ct.counts[v] += 1
        if ct.example is None and v not in ("ws_closed_correctly", "ws_handshake_rejected"):
            ct.example = {"verdict": v, "reason": g.reason, "close_code": g.close_code, "seed": conn_seed}
        self.rfc["responses_checked"] += out.responses_checked
        findings = []
        for viol in out.rfc_violations:
            self.rfc["rfc1_violations" if viol.predicate == "I-RFC-1" else "rfc2_violations"] += 1
            findings.append((viol.predicate, f"handshake response: {viol.detail}"))
        pred = predicate_for("ws", v)
        if pred:
            findings.append((pred, g.reason))
        for predicate, detail in findings:
            if (predicate, case.name) in self._reported:
                continue
            self._reported.add((predicate, case.name))
            expected = list(case.expected_close) if isinstance(case, WsCase) else ["non-101"]
            self.report(Evidence(
                predicate=predicate, detail=f"ws {case.name}: {detail}", case=f"ws {case.name}",
                sent=out.request + out.sent, received=(out.head + out.received)[:MAX_RECORD], seed=conn_seed,
                extra={"clause": case.clause, "expected_close": expected, "verdict": v, "close_code": g.close_code,
                       "status": out.status, "closed": out.closed, "timed_out": out.timed_out,
                       "kept_open_after_close": out.kept_open,
                       "frames_sent_bytes": out.sent_len, "walker": walker_id, "ws_path": self.ws_path,
                       **_after_close_extra(case, out)},
                repro=ws_repro(case=case, predicate=predicate, detail=detail, conn_seed=conn_seed,
                               ws_path=self.ws_path, addr=self.host_header, close_timeout=self.close_timeout),
            ))

    def _internal_error(self, name: str) -> None:
        self.tally["ws_internal_error"] += 1
        if not self.internal_errors:
            import traceback

            self.internal_errors.append(f"{name}: {traceback.format_exc()}")

    # ---- calibration -----------------------------------------------------------------
    async def calibrate(self) -> bool:
        """One valid handshake + close: is there a WebSocket endpoint at ws_path? Once per slice."""
        async with self._cal_lock:
            if self._calibrated is not None:
                return self._calibrated
            case = F.CASES_BY_NAME["valid close handshake"]
            conn_seed = derive_seed(self.seed, "ws-calibrate")
            out, g = await self.run_case(case, conn_seed)
            if g.verdict == "ws_conn_error":
                self.tally["ws_conn_error"] += 1
                self._calibrated = False
                self.stopped_reason = f"calibration: cannot connect ({g.reason})"
                return False
            if g.verdict == "ws_endpoint_absent":
                self.tally["ws_endpoint_absent"] += 1
                self.endpoint_absent = True
                self._calibrated = False
                self.stopped_reason = f"endpoint_absent: {g.reason} on GET {self.ws_path}"
                return False
            self._account(case, out, g, conn_seed, -1)
            self._calibrated = True
            return True

    # ---- walkers -----------------------------------------------------------------------
    def _next_case(self) -> WsCase | HandshakeCase:
        if not self._queue:
            self._round += 1
            order: list = [*self.cases, *self.handshakes]
            random.Random(derive_seed(self.seed, "ws-round", self._round)).shuffle(order)
            self._queue.extend(order)
        case = self._queue.popleft()
        if isinstance(case, WsCase) and case.after_close:  # wt-wsasgi: throttled, skipped in between
            now = time.monotonic()
            if now < self._after_close_next and (self._queue or len(self.cases) + len(self.handshakes) > 1):
                return self._next_case()
            self._after_close_next = now + AFTER_CLOSE_EVERY_S
        return case

    async def walker(self, walker_id: int, deadline: float, stop: Callable[[], bool]) -> None:
        """Take cases from the shared seeded round until the deadline; one connection per case."""
        try:
            if not await self.calibrate():
                return
        except Exception:
            self._internal_error("calibration")
            return
        while time.monotonic() < deadline and not stop() and not self.stopped_reason:
            case = self._next_case()
            self._n += 1
            conn_seed = derive_seed(self.seed, "ws", walker_id, self._n)
            try:
                out, g = await self.run_case(case, conn_seed)
            except Exception:
                self._internal_error(case.name)
                continue
            if g.verdict == "ws_conn_error":
                self.tally["ws_conn_error"] += 1
                if self.alive is not None and not await self.alive():
                    if not self._liveness_reported:  # a restart may come before the watchdog looks
                        self._liveness_reported = True
                        self.report(Evidence(predicate="I-LIVENESS", case=f"ws {case.name}", seed=conn_seed,
                                             detail="the target died during the ws slice"))
                    if self.recover is None or not await self.recover():
                        self.stopped_reason = f"the target died after ws case {case.name!r} and could not be restarted"
                        return
                await asyncio.sleep(0.2)
                continue
            if g.verdict == "ws_endpoint_absent":
                # calibration saw the endpoint: a later refusal of a valid handshake is counted, not fatal
                self.tally["ws_endpoint_absent_later"] += 1
                self.per_case[case.name].counts["ws_endpoint_absent"] += 1
                continue
            try:
                self._account(case, out, g, conn_seed, walker_id)
            except Exception:
                self._internal_error(case.name)

    # ---- results -----------------------------------------------------------------------
    def case_breakdown(self) -> dict:
        """Per case: worst verdict, verdict counts, clause, expected close (tier1_tally.json)."""
        out = {}
        for c in [*self.cases, *self.handshakes]:
            ct = self.per_case[c.name]
            worst = min(ct.counts, key=lambda v: SEVERITY_ORDER.get(v, 99)) if ct.counts else "not_sent"
            out[c.name] = {
                "verdict": worst, "counts": dict(ct.counts), "clause": c.clause,
                "expected_close": list(c.expected_close) if isinstance(c, WsCase) else "non-101 (no upgrade)",
                "kind": "handshake" if isinstance(c, HandshakeCase) else ("bad_frame" if c.bad else "valid"),
                "example": ct.example,
            }
        return out

    def evidence(self) -> dict:
        return {"ws_endpoint_absent": bool(self.endpoint_absent)}

    def counters(self) -> dict[str, int]:
        """The `tier_1.ws_torture` string→int map."""
        base = {k: 0 for k in ("ws_sent", "ws_upgraded", "ws_closed_correctly", "ws_wrong_close",
                               "ws_unclean_close", "ws_accepted_bad_frame", "ws_hang_no_close",
                               "ws_endpoint_absent", "ws_handshake_rejected", "ws_valid_refused",
                               "ws_bad_accept", "ws_conn_error", "ws_internal_error")}
        base.update({k: 0 for k in ("ws_version_not_advertised", "ws_buffered_after_close",
                                    "ws_read_after_close_unmeasured")})  # wt-wsasgi
        base.update({k: v for k, v in self.tally.items() if v or k in base})
        base["ws_cases"] = len(self.cases) + len(self.handshakes)
        return dict(base)
