"""Crash attribution: which request killed the target (the I-LIVENESS reproducer).

The watchdog and the orchestrator see THAT the target died, not WHY. Walkers
register each request they send in a small per-cell `CrashLog` (a dict insert
when sent, a delete + a bounded ring append when the exchange ends). When the
target dies, the orchestrator takes a `DeathSnapshot`: the requests in flight
at the death plus those sent in the last `WINDOW_S` before the first refused
connection. Across several deaths of one cell the candidate signatures
(method + path template, or the adversarial case) are intersected; after the
restart the top candidates are replayed ONE AT A TIME on a fresh connection
with the walkers held back, and a death right after a replay confirms it.

The ranking and the intersection are pure functions (`rank_candidates`,
`common_signatures`); the replay, the restarts and the incident update live in
`CrashAttributor`, bounded in candidates, replays and restarts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .repro import accepts, build_repro, connect, http_exchange, rehost, response_complete

WINDOW_S = 1.0  # requests sent this long before the connections started failing are suspects
RECENT_LEN = 512  # finished exchanges kept for the snapshot (bounded)
MAX_CANDIDATES = 5  # replayed per confirmation round
MAX_CONFIRM_REPLAYS = 10  # per cell, over every round
MAX_CONFIRM_RESTARTS = 2  # per cell: restarts after a replay killed the target (on top of the walkers')
SETTLE_S = 0.8  # after a replay: how long the process must survive to clear the candidate
REPLAY_TIMEOUT_S = 3.0  # most time a replayed request waits for its response
ROUND_S = 10.0  # most time one confirmation round holds the walkers back

# Outcomes of one registered exchange.
IN_FLIGHT, NO_RESPONSE, RESPONSE, REFUSED = "in_flight", "no_response", "response", "refused"
# Suspicion order: the request whose connection died with it comes first.
_SUSPICION = {IN_FLIGHT: 0, NO_RESPONSE: 0, RESPONSE: 1}  # +2: in flight since before the window


@dataclass(slots=True)
class SentRequest:
    """One request a walker sent (or is sending), with what is needed to replay it alone."""

    slice: str
    walker: str  # walker label within the slice
    seed: str  # the walker's seed, hex
    signature: str  # "GET /users/{id}" (method + path template) or "adversarial <case>"
    request: str  # "GET /users/17?x=1": what the request line asked for
    raw: bytes | Callable[[], bytes]  # the exact bytes, or how to build them (built only when needed)
    host_header: str  # the Host value inside raw, re-rendered on replay
    sent_at: float
    ended_at: float = 0.0
    outcome: str = IN_FLIGHT

    def raw_bytes(self) -> bytes:
        if callable(self.raw):
            self.raw = self.raw()
        return self.raw


@dataclass(frozen=True)
class Candidate:
    """A request suspected of one death: its signature, how it ended, how far from the death."""

    signature: str
    outcome: str
    offset_s: float  # sent this long before the connections started failing (negative: after)
    request: SentRequest | None = None

    def to_json(self) -> dict[str, Any]:
        r = self.request
        out = {"signature": self.signature, "outcome": self.outcome, "sent_before_death_s": round(self.offset_s, 3)}
        if r is not None:
            out.update({"slice": r.slice, "walker": r.walker, "walker_seed": r.seed, "request": r.request,
                        "raw": r.raw_bytes().decode("latin-1")})
        return out


class CrashLog:
    """The per-cell registry walkers write into: requests in flight and recently finished.

    `begin` and `end` are a dict insert/delete and a deque append (no I/O, no lock: walkers
    share one event loop). `gate` holds walkers back while a candidate is replayed alone.
    """

    def __init__(self, recent_len: int = RECENT_LEN, clock: Callable[[], float] = time.monotonic) -> None:
        self.inflight: dict[int, SentRequest] = {}
        self.recent: deque[SentRequest] = deque(maxlen=recent_len)
        self.clock = clock
        self._ids = itertools.count(1)
        self._since = float("-inf")  # entries sent before this belong to an earlier death
        self._open: asyncio.Event | None = None

    def begin(self, slice_: str, walker: str, seed: str, signature: str, request: str,
              raw: bytes | Callable[[], bytes], host_header: str) -> int:
        """Register a request about to be sent; return its token for `end`."""
        token = next(self._ids)
        self.inflight[token] = SentRequest(slice_, walker, seed, signature, request, raw, host_header, self.clock())
        return token

    def end(self, token: int, outcome: str, raw: bytes | None = None) -> None:
        """The exchange ended: RESPONSE (a complete response), NO_RESPONSE (the connection died
        without one) or REFUSED (never reached the target)."""
        req = self.inflight.pop(token, None)
        if req is None:
            return
        req.ended_at = self.clock()
        req.outcome = outcome
        if raw:
            req.raw = raw
        self.recent.append(req)

    def snapshot(self, window: float = WINDOW_S) -> list[Candidate]:
        """The suspects of the death just noticed; later snapshots only see requests sent after it."""
        now = self.clock()
        fresh = [r for r in self.recent if r.sent_at >= self._since]
        refused = [r.ended_at for r in fresh if r.outcome == REFUSED]
        down_at = min(refused) if refused else now
        out = [Candidate(r.signature, IN_FLIGHT, down_at - r.sent_at, r)
               for r in self.inflight.values() if self._since <= r.sent_at <= down_at]
        out += [Candidate(r.signature, r.outcome, down_at - r.sent_at, r) for r in fresh
                if r.outcome != REFUSED and down_at - window <= r.sent_at <= down_at]
        self._since = now
        return out

    def restart_window(self) -> None:
        """Forget what was sent before now (the target was just restarted)."""
        self._since = self.clock()

    # ---- holding walkers back while a candidate is replayed alone -------------------------
    def _event(self) -> asyncio.Event:
        if self._open is None:
            self._open = asyncio.Event()
            self._open.set()
        return self._open

    async def gate(self) -> None:
        """Return at once, unless a confirmation replay is running."""
        ev = self._event()
        if not ev.is_set():
            await ev.wait()

    def hold(self) -> None:
        self._event().clear()

    def release(self) -> None:
        self._event().set()


# ---- pure ranking -------------------------------------------------------------------------------

def common_signatures(deaths: list[list[Candidate]]) -> set[str]:
    """Signatures suspected in every death that had suspects (the intersection)."""
    sets = [{c.signature for c in d} for d in deaths if d]
    return set.intersection(*sets) if sets else set()


def rank_candidates(deaths: list[list[Candidate]], limit: int = MAX_CANDIDATES,
                    exclude: Iterable[str] = ()) -> list[Candidate]:
    """One representative per signature, best suspect first, at most `limit`.

    Order: in more deaths first (the intersection of all deaths leads), then a request whose
    connection died with it before one that got its response, then the earliest sent before
    the failures began (the first request to fail is the likeliest killer). The representative
    is that signature's instance from the latest death, most suspicious first.
    """
    skip = set(exclude)
    seen_in: dict[str, int] = {}
    best: dict[str, tuple[tuple, Candidate]] = {}
    for n, death in enumerate(deaths):
        for sig in {c.signature for c in death}:
            seen_in[sig] = seen_in.get(sig, 0) + 1
        for c in death:
            if c.signature in skip:
                continue
            # Long in flight before the death (a slow probe): less likely than a fresh failure.
            suspicion = _SUSPICION.get(c.outcome, 2) + 2 * (c.offset_s > WINDOW_S)
            key = (-n, suspicion, -c.offset_s)
            if c.signature not in best or key < best[c.signature][0]:
                best[c.signature] = (key, c)
    ordered = sorted(best.values(), key=lambda kc: (-seen_in[kc[1].signature], kc[0][1], kc[0][2]))
    return [c for _, c in ordered][:limit]


# ---- confirmation (I/O) ---------------------------------------------------------------------------

@dataclass
class Replay:
    signature: str
    killed: bool
    complete_response: bool
    how: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"signature": self.signature, "killed": self.killed, "complete_response": self.complete_response,
                "how": self.how, "seconds": round(self.seconds, 3)}


@dataclass
class CrashAttributor:
    """Keeps one cell's death snapshots, confirms suspects by replay, writes the reproducer.

    `target` is a RunningTarget (alive(), restart(), host, port, pid); `on_change` gets the
    attributor after every change so the orchestrator can update the I-LIVENESS incident.
    """

    log: CrashLog
    target: Any
    on_change: Callable[["CrashAttributor"], Awaitable[None]] | None = None
    pause: Callable[[], None] = lambda: None  # the watchdog: a replay's death is deliberate
    resume: Callable[[], None] = lambda: None
    stop: Callable[[], bool] = lambda: False
    deaths: list[list[Candidate]] = field(default_factory=list)
    replays: list[Replay] = field(default_factory=list)
    confirmed: Candidate | None = None
    cleared: set[str] = field(default_factory=set)  # replayed alone without killing the target
    confirm_restarts: int = 0
    notes: list[str] = field(default_factory=list)

    def record_death(self) -> list[Candidate]:
        """Snapshot the suspects of the death just noticed (call before restarting)."""
        snap = self.log.snapshot()
        self.deaths.append(snap)
        return snap

    def suspects(self) -> list[Candidate]:
        """The next candidates to replay (never one already cleared)."""
        return rank_candidates(self.deaths, exclude=self.cleared)

    async def confirm(self) -> None:
        """Replay the top suspects one at a time with the walkers held back; stop at the first
        that kills the target (restarting it, bounded). The target must be up."""
        if self.confirmed is not None or self.target.pid is None:
            return
        budget = MAX_CONFIRM_REPLAYS - len(self.replays)
        todo = self.suspects()[:max(0, budget)]
        if not todo:
            return
        self.log.hold()
        self.pause()
        try:
            await asyncio.sleep(0.2)  # requests already on the wire finish first
            round_end = time.monotonic() + ROUND_S
            for cand in todo:
                if self.stop() or not self.target.alive() or time.monotonic() >= round_end:
                    break
                rep = await self._replay(cand)
                self.replays.append(rep)
                if not rep.killed:
                    self.cleared.add(cand.signature)
                    continue
                self.confirmed = cand
                if self.confirm_restarts >= MAX_CONFIRM_RESTARTS:
                    self.notes.append("the target was left down after the confirming replay "
                                      f"(confirmation restarts used up: {MAX_CONFIRM_RESTARTS})")
                    break
                self.confirm_restarts += 1
                try:
                    await asyncio.to_thread(self.target.restart)
                except Exception as e:  # noqa: BLE001 - a failed restart is reported, not raised
                    self.notes.append(f"restart after the confirming replay failed: {e}")
                break
        finally:
            self.log.restart_window()
            self.resume()
            self.log.release()
        if self.on_change is not None:
            await self.on_change(self)

    async def _replay(self, cand: Candidate) -> Replay:
        from ..rawclient import Segment, exchange

        req = cand.request
        assert req is not None
        t = self.target
        host_header = f"[{t.host}]:{t.port}" if ":" in t.host else f"{t.host}:{t.port}"
        raw = rehost(req.raw_bytes(), req.host_header, host_header)
        method = raw.split(b" ", 1)[0].decode("latin-1", "replace")
        t0 = time.monotonic()

        def done(data: bytes) -> bool:
            return response_complete(data, method.encode("latin-1"))

        ex = await exchange(t.host, t.port, [Segment(raw)], quiet_timeout=REPLAY_TIMEOUT_S,
                            total_timeout=REPLAY_TIMEOUT_S + 2.0, done=done, linger=0.05)
        complete = done(ex.received)
        how = ("connect: " + ex.connect_error if ex.connect_error else "complete response" if complete else
               "closed without a complete response" if ex.closed else "no complete response (timeout)")
        # The process must survive a while after the request: a death now is this request's.
        deadline = time.monotonic() + SETTLE_S
        killed = False
        while True:
            if not t.alive():
                killed = True
                break
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
        return Replay(cand.signature, killed, complete, how, time.monotonic() - t0)

    # ---- what the incident shows ------------------------------------------------------------
    def summary(self) -> str:
        """One line for the run document's incident."""
        if self.confirmed is not None and self.confirmed.request is not None:
            r = self.confirmed.request
            # The signature leads (the same for either walker); the walker's own label follows.
            return (f"confirmed: {self.confirmed.signature} ({r.slice} walker {r.walker}, seed {r.seed}: "
                    f"{r.request}) killed the target when replayed alone on a fresh connection; "
                    f"raw: {r.raw_bytes()[:300].decode('latin-1')!r}")
        sigs = [c.signature for c in rank_candidates(self.deaths, limit=MAX_CANDIDATES)]
        if not sigs:
            return ("unconfirmed candidates: [] (no registered request was in flight or sent in the "
                    f"{WINDOW_S:g} s before the death; not registered: the ws, h2c and sse slices, the "
                    "watchdog's health probe, the Markov shrinker's replays)")
        tried = f"{len(self.replays)} replayed alone without a death" if self.replays else "none could be replayed"
        return f"unconfirmed candidates: {sigs} ({tried})"

    def to_json(self) -> dict[str, Any]:
        """The reproducer block of incident.json."""
        common = sorted(common_signatures(self.deaths))
        return {
            "status": "confirmed" if self.confirmed is not None else "unconfirmed",
            "text": self.summary(),
            "request": self.confirmed.signature if self.confirmed is not None else None,
            "confirmed": self.confirmed.to_json() if self.confirmed is not None else None,
            "deaths": len(self.deaths),
            "suspected_in_every_death": common,
            "suspects_per_death": [sorted({c.signature for c in d}) for d in self.deaths],
            "candidates": [c.to_json() for c in rank_candidates(self.deaths, limit=MAX_CANDIDATES)],
            "replays": [r.to_json() for r in self.replays],
            "confirm_restarts": self.confirm_restarts,
            "notes": self.notes,
            "method": (f"suspects = requests in flight at the death + sent in the {WINDOW_S:g} s before the first "
                       "refused connection (markov and adversarial walkers register); intersected across deaths; "
                       f"up to {MAX_CANDIDATES} replayed alone on a fresh connection with the walkers held back; "
                       f"a process exit within {SETTLE_S:g} s of the replay confirms"),
        }

    def repro_requests(self) -> list[SentRequest]:
        """What repro.py sends: the confirmed request, else the ranked suspects not yet cleared by a
        replay, one by one (none left: no repro.py, since it is already known not to reproduce)."""
        if self.confirmed is not None and self.confirmed.request is not None:
            return [self.confirmed.request]
        return [c.request for c in self.suspects() if c.request is not None]


# ---- repro.py -----------------------------------------------------------------------------------


def judge_crash(host: str, port: int, addr: str, payload: dict) -> tuple[bool, str]:
    """Send each suspect alone on a fresh connection, then watch the port: reproduced when it
    stops accepting connections (the process is gone)."""
    for req in payload["requests"]:
        raw = rehost(req["raw"].encode("latin-1"), req["host_header"], addr)
        print(f"--- sending {req['request']} ({req['signature']}) ---")
        try:
            sock = connect(host, port)
            data, how = http_exchange(sock, raw)
            sock.close()
        except OSError as e:
            data, how = b"", f"connection error: {e}"
        print(f"received {len(data)} bytes; connection: {how}")
        print(data[:600].decode("latin-1"))
        deadline, refused = time.monotonic() + payload["watch_s"], 0
        while time.monotonic() < deadline:
            refused = refused + 1 if not accepts(host, port) else 0
            if refused >= 2:
                return True, f"the port stopped accepting connections after {req['request']}: the process is gone"
            time.sleep(0.1)
        print(f"the target still accepts connections {payload['watch_s']:.0f} s after {req['request']}")
    return False, f"the target survived all {len(payload['requests'])} request(s)"


def crash_repro(requests: list[SentRequest], *, status: str, addr: str, version: str) -> str:
    """Source of a standalone repro.py sending each request alone and watching the port."""
    data = [{"signature": r.signature, "request": r.request, "slice": r.slice, "walker": r.walker,
             "walker_seed": r.seed, "host_header": r.host_header, "raw": r.raw_bytes().decode("latin-1")}
            for r in requests]
    how = (f"{status}\nSends each request below alone on a fresh connection (its Host rewritten to HOST:PORT),\n"
           "then watches the port: the finding reproduces when the port stops accepting connections.")
    return build_repro("crash", {"requests": data, "watch_s": 3.0}, judge_crash, predicate="I-LIVENESS",
                       detail="the target process dies", addr=addr, version=version, how=how)
