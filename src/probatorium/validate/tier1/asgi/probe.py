"""The ASGI probes as the adversarial slice runs them: scope cases once per round, orphan rounds.

Thin: requests go out through the one raw-socket client, every verdict is a
pure function of judge.py, findings go to the incident path with a repro.py.
Walker 0 of the adversarial slice calls :meth:`AsgiProbes.tick` between cases.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable

from ....rawclient import Segment, exchange
from ...incidents import Evidence
from ...invariants import predicate_for
from . import judge as J
from .repro import asgi_repro

ORPHAN_INTERVAL_S = 35.0  # > the refapp's orphan cap (20 s) + the settle window: rounds never overlap


class AsgiProbes:
    def __init__(self, host: Callable[[], str], port: Callable[[], int], host_header: Callable[[], str], *,
                 debug_path: str, report: Callable[[Evidence], object], quiet_timeout: float = 3.0,
                 settle_s: float = J.ORPHAN_SETTLE_S) -> None:
        self._host, self._port, self._hh = host, port, host_header
        self.debug_path = debug_path
        self.report = report
        self.quiet = quiet_timeout
        self.settle_s = settle_s
        self.tally: Counter = Counter()
        self.per_case: dict[str, Counter] = {c.name: Counter() for c in J.SCOPE_CASES}
        self.per_case["asgi orphan streams after reset"] = Counter()
        self.examples: dict[str, dict] = {}
        self._next_scope = 0.0
        self._next_orphan = 0.0
        self._reported: set[tuple[str, str]] = set()
        self.absent = False

    async def _get(self, raw: bytes, timeout: float | None = None) -> tuple[bytes, str | None]:
        t = timeout or self.quiet
        ex = await exchange(self._host(), self._port(), [Segment(raw)], quiet_timeout=t, total_timeout=t + 5.0)
        return ex.received, ex.connect_error

    async def tick(self, deadline: float) -> None:
        """Run what is due: the scope cases every 10 s, an orphan round every ORPHAN_INTERVAL_S."""
        now = time.monotonic()
        if self.absent:
            return
        if now >= self._next_scope:
            self._next_scope = now + 10.0
            for case in J.SCOPE_CASES:
                await self.scope_case(case)
        if now >= self._next_orphan and deadline - now > self.settle_s + 5.0:
            self._next_orphan = now + ORPHAN_INTERVAL_S
            await self.orphan_round()

    def _record(self, name: str, verdict: str, reason: str, predicate: str | None, sent: bytes, received: bytes,
                repro: Callable[[str, str], str], extra: dict) -> None:
        self.per_case[name][verdict] += 1
        if verdict not in ("scope_ok", "orphans_released") and name not in self.examples:
            self.examples[name] = {"verdict": verdict, "reason": reason[:500]}
        if predicate is None or (predicate, name) in self._reported:
            return
        self._reported.add((predicate, name))
        self.report(Evidence(predicate=predicate, detail=f"{name}: {reason}", case=name, sent=sent,
                             received=received[:1 << 16], extra={**extra, "verdict": verdict, "evidence": "application"},
                             repro=repro(predicate, f"{name}: {reason}")))

    async def scope_case(self, case: J.ScopeCase) -> None:
        raw = case.request(self._hh())
        received, err = await self._get(raw)
        if err:
            self.per_case[case.name]["conn_error"] += 1
            return
        status, scope = J.scope_from_response(received)
        if scope is None:
            self.per_case[case.name]["scope_not_served"] += 1
            self.tally["asgi_scope_not_served"] += 1
            if case is J.SCOPE_CASES[0] and status in (404, 405):
                self.absent = True  # the target has no probe routes: not judged
            return
        devs = J.judge_scope(case, scope, self._port())
        verdict = J.scope_verdict(devs)
        self.tally["asgi_scope_checked"] += 1
        self.tally[f"asgi_{verdict}"] += 1
        reason = "; ".join(f"{d.rule}: {d.detail}" for d in devs) or "as the ASGI spec says"
        self._record(case.name, verdict, reason, predicate_for("adversarial", verdict), raw, received,
                     lambda p, d: asgi_repro(probe="scope", case=case.name, predicate=p, detail=d, addr=self._hh()),
                     {"clause": J.SCOPE_CLAUSE, "deviations": [d.__dict__ for d in devs], "scope": scope})

    async def _debug(self) -> int | None:
        raw = f"GET {self.debug_path} HTTP/1.1\r\nHost: {self._hh()}\r\nConnection: close\r\n\r\n".encode()
        received, _ = await self._get(raw)
        return J.debug_orphans(received)

    async def _hold(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self._host(), self._port()), 3.0)
        except (OSError, asyncio.TimeoutError):
            return None
        writer.write(f"GET {J.ORPHAN_PATH} HTTP/1.1\r\nHost: {self._hh()}\r\n\r\n".encode())
        got = b""
        end = time.monotonic() + 3.0
        while len(got) < 2048 and time.monotonic() < end:
            try:
                chunk = await asyncio.wait_for(reader.read(4096), max(0.05, end - time.monotonic()))
            except (OSError, asyncio.TimeoutError):
                break
            if not chunk:
                break
            got += chunk
        return reader, writer

    async def orphan_round(self) -> None:
        name = "asgi orphan streams after reset"
        baseline = await self._debug()
        if baseline is None:
            self.per_case[name]["orphans_absent"] += 1
            return
        held = [h for h in [await self._hold() for _ in range(J.ORPHAN_STREAMS)] if h is not None]
        while_held = await self._debug()
        for _, writer in held:
            sock = writer.get_extra_info("socket")
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except (OSError, AttributeError):
                pass
            writer.transport.abort()
        t0, after = time.monotonic(), []
        while time.monotonic() - t0 < self.settle_s + 1.0:
            await asyncio.sleep(0.5)
            n = await self._debug()
            after.append((round(time.monotonic() - t0, 2), -1 if n is None else n))
            if n is not None and n <= baseline:
                break
        v = J.judge_orphans(baseline, while_held, after, len(held), self.settle_s)
        self.tally["asgi_orphan_rounds"] += 1
        if v.verdict in ("orphans_kept", "orphans_released"):
            self.tally["asgi_orphan_checked"] += 1
        if v.verdict == "orphans_kept":
            self.tally["asgi_orphan_kept"] += 1
        self._record(name, v.verdict, v.reason, predicate_for("adversarial", v.verdict), b"", b"",
                     lambda p, d: asgi_repro(probe="orphans", case=name, predicate=p, detail=d, addr=self._hh(),
                                             debug_path=self.debug_path, streams=len(held)),
                     {"clause": J.ORPHAN_CLAUSE, "baseline": baseline, "while_held": while_held, "after": after})

    # ---- results ------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        base = {k: 0 for k in ("asgi_scope_checked", "asgi_scope_violation", "asgi_scope_note", "asgi_orphan_rounds",
                               "asgi_orphan_checked", "asgi_orphan_kept")}
        base.update(self.tally)
        return dict(base)

    def case_breakdown(self, order: dict[str, int]) -> dict:
        out = {}
        for name, counts in self.per_case.items():
            worst = min(counts, key=lambda v: order.get(v, 99)) if counts else "not_sent"
            scope = name != "asgi orphan streams after reset"
            out[name] = {"verdict": worst, "counts": dict(counts), "level": "MUST" if scope else "SHOULD",
                         "clause": J.SCOPE_CLAUSE if scope else J.ORPHAN_CLAUSE, "group": "asgi",
                         "expect": "serve", "example": self.examples.get(name), "evidence": "application"}
        return out
