"""One load-generator worker: one process, one event loop, a share of the connections.

Clock: ``conn.now_ns`` = ``time.monotonic_ns()`` (CLOCK_MONOTONIC, shared by all
processes of the machine), so the parent can hand every worker the same absolute
start time and the open-loop schedule is one global schedule split between workers.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import resource
import time
from collections import deque
from typing import Any

from probatorium.loadgen import hist, streams
from probatorium.loadgen.config import LoadConfig, build_request, parse_url
from probatorium.loadgen.conn import Conn
from probatorium.loadgen.conn import now_ns as _now

NS = 1_000_000_000
ERROR_CLASSES = ("connect", "reset", "timeout", "status", "protocol")
TICK_S = 0.1


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Worker:
    def __init__(self, cfg: LoadConfig, index: int, nworkers: int, nconns: int) -> None:
        self.cfg = cfg
        self.index = index
        self.nworkers = nworkers
        self.nconns = nconns
        self.host, self.port, _ = parse_url(cfg.url)
        self.request = build_request(cfg)
        self.events_untimed = 0
        self.events_untimed_warm = 0
        if cfg.kind != "http":
            if cfg.kind == "ws":
                self.ws_handshake, self.ws_accept = streams.ws_handshake(cfg)
                self.ws_payload = cfg.ws_message
                self.request = streams.ws_frame(cfg.ws_message)
            else:
                self.request = streams.sse_request(cfg)
            self.conn_cls = streams.conn_factory(cfg.kind)
        else:
            self.conn_cls = Conn
        self.close_mode = cfg.close
        self.expect_body = cfg.expect_body
        self.statuses = cfg.expected_statuses
        # responses below this status are accepted without calling cfg.status_ok
        self.status_floor = 400 if cfg.expected_statuses is None else 0
        self.head_cache: dict[bytes, tuple[int, int, bool]] = {}
        # the last response taken on the cache path (see Conn.data_received)
        self.fast_head = b"\x00never"
        self.fast_len = -1
        self.fast_bad = False
        self.fast_close = False
        #: closed loop, started and before the end: a response immediately triggers the next request
        self.closed_sending = False
        self.loop = asyncio.get_event_loop()
        self.live: set[Conn] = set()
        self.idle: list[Conn] = []
        self.started = False
        self.sending = True
        self.open_loop = cfg.rate is not None
        self.queue: deque[int] = deque()
        self.ever_connected = False
        self.connects_ok = 0
        self.gave_up = False
        # phase/second bookkeeping (set in run())
        self.start_ns = 0
        self.warm_end_ns = 0
        self.end_ns = 0
        self.warm_lat: list[int] = []
        self.sec_lat: list[list[int]] = []
        self.sec_hist: list = []
        self._folded = 0
        self.cur: list[int] = self.warm_lat
        self.cur_start = 0
        self.cur_end = 0
        self.errors_warm = dict.fromkeys(ERROR_CLASSES, 0)
        self.errors = dict.fromkeys(ERROR_CLASSES, 0)
        self.sec_errors: list[int] = []
        self.unsent = 0
        self.unsent_warm = 0
        self.overflow = 0
        self.lags_ms: list[float] = []
        self.cpu_marks: dict[str, float] = {}
        self.wall_marks: dict[str, int] = {}
        self.stop_evt = asyncio.Event()

    # -- recording --------------------------------------------------------------------------
    def _sec_index(self, t: int) -> int:
        return (t - self.warm_end_ns) // NS

    def record(self, t0: int, us: int) -> None:
        """One latency sample of a request whose clock started at `t0`: into the current second's
        list when it belongs there (the common case), else into its own phase or second."""
        if self.cur_start <= t0 < self.cur_end:
            self.cur.append(us)
        else:
            self.record_slow(t0, us)

    def record_slow(self, t0: int, us: int) -> None:
        if not self.sec_lat:  # before the run started
            return
        if t0 < self.warm_end_ns:
            self.warm_lat.append(us)
            return
        idx = self._sec_index(t0)
        if idx >= len(self.sec_lat):
            idx = len(self.sec_lat) - 1  # a request sent in the last partial nanoseconds
        self.sec_lat[idx].append(us)

    def _roll(self) -> None:
        """Point the fast-path bucket at the second we are in now (called from the tick)."""
        now = _now()
        if now < self.warm_end_ns:
            self.cur, self.cur_start, self.cur_end = self.warm_lat, self.start_ns - 3600 * NS, self.warm_end_ns
            return
        idx = min(self._sec_index(now), len(self.sec_lat) - 1)
        # fold seconds that are 2+ seconds old into their histograms (bounded memory;
        # a late completion still lands in its second's list and is folded at the end)
        while self._folded < idx - 1:
            i = self._folded
            hist.record_many(self.sec_hist[i], self.sec_lat[i])
            self.sec_lat[i].clear()
            self._folded += 1
        self.cur = self.sec_lat[idx]
        self.cur_start = self.warm_end_ns + idx * NS
        self.cur_end = self.cur_start + NS

    def events_untimed_phase(self, t: int) -> None:
        if t < self.warm_end_ns:
            self.events_untimed_warm += 1
        else:
            self.events_untimed += 1

    def error(self, cls: str, t: int) -> None:
        if not self.sec_errors:  # before the run started (connecting)
            self.errors[cls] += 1
            return
        if t < self.warm_end_ns:
            self.errors_warm[cls] += 1
            return
        self.errors[cls] += 1
        idx = min(max(self._sec_index(t), 0), len(self.sec_errors) - 1)
        self.sec_errors[idx] += 1

    # -- dispatch ---------------------------------------------------------------------------
    def next_request(self, conn: Conn) -> None:
        if conn.closing or conn.busy:
            return
        if not self.started or not self.sending:
            self.idle.append(conn)
            return
        if self.open_loop:
            q = self.queue
            if not q:
                now = _now()
                if self._next_slot <= now:
                    self._fill(now)
            if q:
                conn.send(q.popleft())
            else:
                self.idle.append(conn)
        else:
            conn.send(_now())

    def _kick_idle(self) -> None:
        idle, self.idle = self.idle, []
        for c in idle:
            if not c.closing and c.tr is not None:
                self.next_request(c)

    # -- open-loop schedule -----------------------------------------------------------------
    def _fill(self, now: int) -> None:
        """Queue every slot whose intended time has come (bounded queue; overflow = unsent)."""
        q = self.queue
        limit = self.queue_limit
        end = self.end_ns
        while self._next_slot <= now and self._next_slot < end:
            t = self._next_slot
            if len(q) < limit:
                q.append(t)
            elif t < self.warm_end_ns:
                self.unsent_warm += 1
                self.overflow += 1
            else:
                self.unsent += 1
                self.overflow += 1
            self._j += 1
            self._next_slot = self._slot_time(self._j)

    def _ticker(self) -> None:
        if not self.sending:
            return
        self._fill(_now())
        q = self.queue
        idle = self.idle
        while idle and q:
            c = idle.pop()
            if c.closing or c.tr is None:
                continue
            c.send(q.popleft())
        if self._next_slot >= self.end_ns:
            return
        # The event loop's timers have millisecond resolution: wake at the next slot, but
        # no sooner than 1 ms from now (never spin). Responses arriving in between also
        # queue due slots (next_request), so at high rates slots go out on time.
        delay = (self._next_slot - _now()) / NS
        self.loop.call_later(delay if delay > 0.001 else 0.001, self._ticker)

    def _slot_time(self, j: int) -> int:
        k = j * self.nworkers + self.index
        return self.start_ns + int(k * NS / self.cfg.rate)  # type: ignore[operator]

    # -- connections ------------------------------------------------------------------------
    async def _slot_loop(self) -> None:
        loop = self.loop
        backoff = 0.01
        ct = self.cfg.connect_timeout
        while not self.stop_evt.is_set() and self.sending:
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: self.conn_cls(self), self.host, self.port), ct
                )
            except (OSError, asyncio.TimeoutError):
                if self.sending:
                    self.error("connect", _now())
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 1.0)
                continue
            self.ever_connected = True
            self.connects_ok += 1
            self._first_connect.set()
            await conn.lost
            if conn.failed and conn.served == 0:
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 1.0)
            else:
                backoff = 0.01

    # -- monitoring -------------------------------------------------------------------------
    def _tick(self) -> None:
        now = _now()
        if self._last_tick:
            lag = (now - self._last_tick) / 1e6 - TICK_S * 1000
            if now >= self.warm_end_ns:
                self.lags_ms.append(max(lag, 0.0))
        self._last_tick = now
        self._roll()
        # request timeouts, measured from the actual send
        tmo = self._timeout_ns
        for c in list(self.live):
            if c.busy and now - c.t_sent > tmo:
                c._fail("timeout")
        if not self.ever_connected and now - self.start_ns > self.cfg.give_up_after * NS:
            self.gave_up = True
            self.sending = False
            self.closed_sending = False
            self.stop_evt.set()
        if now < self.end_ns + 10 * NS:
            self.loop.call_later(TICK_S, self._tick)

    def _mark(self, name: str) -> None:
        self.cpu_marks[name] = _cpu_s()
        self.wall_marks[name] = _now()

    # -- the run ----------------------------------------------------------------------------
    async def connect_all(self) -> int:
        self._first_connect = asyncio.Event()
        self._slots = [asyncio.ensure_future(self._slot_loop()) for _ in range(self.nconns)]
        deadline = self.loop.time() + self.cfg.connect_timeout
        while self.loop.time() < deadline:
            if len(self.live) >= self.nconns:
                break
            await asyncio.sleep(0.005)
        return len(self.live)

    async def run(self, start_ns: int) -> dict[str, Any]:
        cfg = self.cfg
        self.start_ns = start_ns
        self.warm_end_ns = start_ns + int(cfg.warmup * NS)
        self.end_ns = self.warm_end_ns + int(cfg.duration * NS)
        nsec = max(1, -(-int(cfg.duration * NS) // NS))
        self.sec_lat = [[] for _ in range(nsec)]
        self.sec_hist = [hist.new_histogram() for _ in range(nsec)]
        self._folded = 0
        self.sec_errors = [0] * nsec
        self.cur_start, self.cur_end = start_ns - 3600 * NS, self.warm_end_ns
        self._timeout_ns = int(cfg.timeout * NS)
        if self.open_loop:
            share = cfg.rate / self.nworkers  # type: ignore[operator]
            self.queue_limit = cfg.queue_limit or max(1000, int(share * 2))
            self._j = 0
            self._next_slot = self._slot_time(0)
        self._last_tick = 0
        await asyncio.sleep(max(0, (start_ns - _now()) / NS))
        self._mark("start")
        gc.disable()  # the hot path allocates no cycles; no collector pauses mid-run
        self.started = True
        self.loop.call_soon(self._tick)
        if self.open_loop:
            self._ticker()
        else:
            self.closed_sending = True
            self._kick_idle()
        warm_s = (self.warm_end_ns - _now()) / NS
        if warm_s > 0:
            await asyncio.sleep(warm_s)
        self._mark("warm_end")
        self._roll()
        try:
            await asyncio.wait_for(self.stop_evt.wait(), max(0, (self.end_ns - _now()) / NS))
        except asyncio.TimeoutError:
            pass
        self._mark("end")
        if self.open_loop and not self.gave_up:
            # every slot intended before the end is due: queue it and hand it to any idle
            # connection (the ticker's millisecond timer may not have got to the last ones)
            self._fill(self.end_ns - 1)
            q = self.queue
            while self.idle and q:
                c = self.idle.pop()
                if not c.closing and c.tr is not None:
                    c.send(q.popleft())
        self.sending = False
        self.closed_sending = False
        # open loop: slots never sent are unsent, in the phase of their intended time
        while self.queue:
            t = self.queue.popleft()
            if t < self.warm_end_ns:
                self.unsent_warm += 1
            else:
                self.unsent += 1
        if self.open_loop and not self.gave_up:
            # slots whose time came but the ticker did not get to (a stalled loop)
            while self._next_slot < self.end_ns:
                self.unsent += 1 if self._next_slot >= self.warm_end_ns else 0
                self._j += 1
                self._next_slot = self._slot_time(self._j)
        # let requests in flight finish (or time out)
        grace = cfg.grace if cfg.grace is not None else min(cfg.timeout, 5.0)
        deadline = _now() + int(grace * NS)
        while any(c.busy for c in self.live) and _now() < deadline:
            await asyncio.sleep(0.002)
        for c in list(self.live):
            if c.busy:
                c._fail("timeout")
        gc.enable()
        self.stop_evt.set()
        for c in list(self.live):
            c.closing = True
            if c.tr is not None:
                c.tr.close()
        for s in self._slots:
            s.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)
        return self._result()

    def _result(self) -> dict[str, Any]:
        seconds = []
        total = hist.new_histogram()
        for h, lat, errs in zip(self.sec_hist, self.sec_lat, self.sec_errors):
            hist.record_many(h, lat)
            total.add(h)
            seconds.append({"count": h.get_total_count(), "errors": errs, "histogram": hist.encode(h)})
        warm = hist.new_histogram()
        hist.record_many(warm, self.warm_lat)
        cm, wm = self.cpu_marks, self.wall_marks
        lags = sorted(self.lags_ms)
        return {
            "index": self.index,
            "pid": os.getpid(),
            "cpu": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "connections": self.nconns,
            "connects_ok": self.connects_ok,
            "ever_connected": self.ever_connected,
            "gave_up": self.gave_up,
            "requests": total.get_total_count(),
            "histogram": hist.encode(total),
            "errors": self.errors,
            "unsent": self.unsent,
            "queue_overflow": self.overflow,
            "events_untimed": self.events_untimed,
            "seconds": seconds,
            "warmup": {
                "requests": warm.get_total_count() + self.events_untimed_warm,
                "histogram": hist.encode(warm),
                "errors": self.errors_warm,
                "unsent": self.unsent_warm,
                "cpu_s": cm.get("warm_end", 0) - cm.get("start", 0),
                "wall_s": (wm.get("warm_end", 0) - wm.get("start", 0)) / NS,
            },
            "cpu_s": cm.get("end", 0) - cm.get("warm_end", 0),
            "wall_s": (wm.get("end", 0) - wm.get("warm_end", 0)) / NS,
            "loop_lag_ms": {
                "mean": round(sum(lags) / len(lags), 3) if lags else 0.0,
                "p99": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))], 3) if lags else 0.0,
                "max": round(lags[-1], 3) if lags else 0.0,
            },
        }


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


def _recv(pipe: Any, timeout: float) -> Any:
    """pipe.recv() that survives the socket having been made non-blocking under us."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no message from the parent")
        if pipe.poll(left):
            try:
                return pipe.recv()
            except BlockingIOError:
                time.sleep(0.001)


def worker_main(cfg: LoadConfig, index: int, nworkers: int, nconns: int, cpu: int | None, pipe: Any) -> None:
    """Entry point of a worker process: connect, report ready, wait for the start time, run."""
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except (AttributeError, OSError):
            pass
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        w = Worker(cfg, index, nworkers, nconns)
        connected = loop.run_until_complete(w.connect_all())
        pipe.send(("ready", connected))
        msg = _recv(pipe, 120.0)
        if msg[0] != "go":
            return
        result = loop.run_until_complete(w.run(msg[1]))
        result["loop"] = type(loop).__module__.split(".")[0]
        pipe.send(("result", result))
    except BaseException as exc:  # report, never hang the parent
        try:
            import traceback

            tb = traceback.format_exc(limit=-3).strip().splitlines()
            pipe.send(("error", f"{type(exc).__name__}: {exc} [{' | '.join(l.strip() for l in tb[-6:])}]"))
        except Exception:
            pass
        raise
    finally:
        loop.close()
