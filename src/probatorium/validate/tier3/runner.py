"""Drive one plan against the target: the workload on its connections, each fault through the
:class:`~probatorium.faults.Injector` at its anchor, a recovery probe after each fault, and a
timeline of everything (see :mod:`.judges` for its shape).

Every time in the timeline is on the cell's fault clock (``TargetControl.windows.now``, the
clock :class:`~probatorium.faults.InjectedFault` uses), minus the seed's start.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...faults import FaultSpec, Injector
from ...seeds import derive_seed
from . import producers
from .client import Answer, Conn
from .judges import DEFAULT_GRACE_S, covers
from .plan import Phase, Plan, Step, pair_of

PROBE_KEY = 4095  # the key index recovery probes read (never written: 404 is a success)


def to_reread(requests: list[dict[str, Any]], faults: list[dict[str, Any]],
              grace_s: float) -> tuple[float, list[dict[str, Any]]]:
    """(when the last applied window's grace is over, the read-backs sent before then that got no
    usable answer — a 5xx, a reset, a timeout: ``got`` is None). No applied fault: nothing."""
    ends = [f["end"] for f in faults if f.get("applied")]
    if not ends:
        return 0.0, []
    until = max(ends) + grace_s + 0.05
    return until, [r for r in requests if r["op"] == "verify" and not r.get("skipped") and not r.get("reread")
                   and r["got"] is None and r["sent"] <= until]


@dataclass
class RunContext:
    """What a plan runs against."""

    address: Callable[[], tuple[str, int]]  # the workload's address: the target's, or the fault proxy's
    target_address: Callable[[], tuple[str, int]]  # the target's own (follows restarts)
    injector: Injector
    clock: Callable[[], float]  # the cell's fault clock
    health_path: str = "/healthz"
    recovery_deadline_s: float = 10.0
    request_timeout_s: float = 5.0
    grace_s: float = DEFAULT_GRACE_S  # I-T3-5XX's grace after a window: a read-back inside it is read again
    salt: int = field(default_factory=lambda: random.SystemRandom().getrandbits(16))


class _Run:
    def __init__(self, plan: Plan, ctx: RunContext) -> None:
        self.plan, self.ctx = plan, ctx
        self.t0 = ctx.clock()
        self.requests: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.recoveries: list[dict[str, Any]] = []
        self.conns: dict[int, Conn] = {}
        self.keys: dict[int, str] = {}
        self.unrecovered = ""  # set once a recovery probe failed
        # producer plans (see .producers): the id each acknowledged create answered, the login's headers
        self.ids: dict[int, str] = {}
        self.id_sent: dict[int, float] = {}  # key → when the create that answered its id was sent
        self.forgetting: list[list[float | None]] = []  # [start, end] of each uncovered fault (end: None while on)
        self.auth: list[tuple[str, str]] = []
        self.auth_gen = 0
        self.auth_lock = asyncio.Lock()
        self.logins: list[dict[str, Any]] = []

    def now(self) -> float:
        return round(self.ctx.clock() - self.t0, 6)

    def key(self, index: int) -> str:
        if index not in self.keys:
            self.keys[index] = self.plan.profile.key.render(self.plan.namespace, self.ctx.salt, index)
        return self.keys[index]

    def value(self, step: Step) -> bytes:
        head = f"{self.plan.namespace:08x}.{self.ctx.salt:04x}.{step.key}.{step.write}.".encode()
        return head + b"v" * max(0, step.size - len(head))

    def got(self, status: int | None, body: bytes, key: int) -> str | None:
        """What a read found: "<key>:<write>", "absent", "garbled", or None (no usable answer)."""
        if status == 404:
            return "absent"
        if status != 200:
            return None
        parts = body.split(b".", 4)
        want = [f"{self.plan.namespace:08x}".encode(), f"{self.ctx.salt:04x}".encode(), str(key).encode()]
        if len(parts) >= 4 and parts[:3] == want and parts[3].isdigit() and body == self.value(
                Step(0, 0, 0, "put", key, int(parts[3]), len(body))):
            return f"{key}:{int(parts[3])}"
        return "garbled"

    # ---- producers (a target without the key/value contract) ----------------------------------
    def item_path(self, pair: dict[str, Any], ident: str) -> str:
        return pair["read"].replace("{" + pair["param"] + "}", ident)

    async def login(self, gen: int) -> None:
        """Log in (the login contract) unless another request already did since generation ``gen``."""
        async with self.auth_lock:
            if self.auth_gen != gen or not self.plan.profile.login:
                return
            conn = Conn(self.ctx.target_address, self.ctx.clock, timeout_s=self.ctx.request_timeout_s)
            try:
                ans = await conn.request("POST", self.plan.profile.login,
                                         producers.login_body(self.plan.namespace, self.ctx.salt),
                                         headers=[("Content-Type", "application/json")])
            finally:
                await conn.close()
            self.auth = producers.auth_headers(ans.status, ans.headers, ans.body)
            self.auth_gen += 1
            self.logins.append({"at": self.now(), "status": ans.status, "error": ans.error,
                                "granted": bool(self.auth)})

    def producer_request(self, step: Step) -> tuple[str, str, bytes | None, list[tuple[str, str]]] | str:
        """(method, path, body, headers) of a producer plan's step, or why it cannot be sent."""
        pair = pair_of(self.plan.profile, step.key)
        if step.op == "create":
            body = json.dumps(producers.payload(pair, self.plan.namespace, self.ctx.salt, step.key)).encode()
            return "POST", pair["create"], body, [("Content-Type", "application/json"), *self.auth]
        ident = self.ids.get(step.key)
        if ident is None:
            return "no id: its create was not acknowledged"
        if step.op == "delete" and self.stale(step.key):
            # a restart that forgot the resource numbers new ones from the start: this id may be another
            # key's resource now, and deleting that one would look like its lost write
            return "its id predates a fault the durability model does not cover (it may name another resource)"
        method = "DELETE" if step.op == "delete" else "GET"
        return method, self.item_path(pair, ident), None, list(self.auth)

    def stale(self, key: int) -> bool:
        """Whether the id of ``key`` was captured before (or during) an uncovered fault's window."""
        sent = self.id_sent.get(key, 0.0)
        return any(end is None or sent <= end for _, end in self.forgetting)

    def producer_got(self, step: Step, ans: Answer) -> str | None:
        pair = pair_of(self.plan.profile, step.key)
        sent = producers.payload(pair, self.plan.namespace, self.ctx.salt, step.key)
        found = producers.read_back(pair, sent, ans.status, ans.body)
        return f"{step.key}:1" if found == "same" else found

    # ---- steps ------------------------------------------------------------------------------
    async def step(self, index: int, step: Step) -> None:
        if self.unrecovered:  # a fault the target did not recover from: the rest would only time out
            self.requests.append({"step": index, "phase": step.phase, "conn": step.conn, "op": step.op,
                                  "key": step.key, "write": step.write, "sent": self.now(), "done": None,
                                  "status": None, "error": f"skipped: {self.unrecovered}", "got": None,
                                  "skipped": True})
            return
        conn = self.conns.setdefault(step.conn, Conn(self.ctx.address, self.ctx.clock,
                                                     timeout_s=self.ctx.request_timeout_s))
        headers = None
        if self.plan.profile.producers and step.key >= 0:
            made = self.producer_request(step)
            if isinstance(made, str):
                self.requests.append({"step": index, "phase": step.phase, "conn": step.conn, "op": step.op,
                                      "key": step.key, "write": step.write, "sent": self.now(), "done": None,
                                      "status": None, "error": f"skipped: {made}", "got": None, "skipped": True})
                return
            method, path, body, headers = made
        else:
            path = self.plan.profile.key_path(self.key(step.key)) if step.key >= 0 else self.ctx.health_path
            method = {"put": "PUT", "delete": "DELETE"}.get(step.op, "GET")
            body = self.value(step) if step.op == "put" else None
        try:
            gen = self.auth_gen
            ans = await conn.request(method, path, body, step.split_ms / 1000, headers=headers)
            if ans.status == 401 and headers is not None and self.plan.profile.login:
                # refused before it was processed (e.g. a restart forgot the session): log in, send once more
                await self.login(gen)
                made = self.producer_request(step)
                if not isinstance(made, str):
                    ans = await conn.request(*made[:2], made[2], step.split_ms / 1000, headers=made[3])
        except asyncio.CancelledError:  # the target did not recover: the phase stopped waiting for it
            ans = Answer(error=f"cancelled: {self.unrecovered or 'the phase ended'}")
            self.conns.pop(step.conn, None)
            conn.abort()
        sent = round(ans.sent_at - self.t0, 6) if ans.sent_at is not None else self.now()
        rec = {"step": index, "phase": step.phase, "conn": step.conn, "op": step.op, "key": step.key,
               "write": step.write, "sent": sent, "done": self.now(), "status": ans.status, "error": ans.error,
               "got": self.got(ans.status, ans.body, step.key) if step.op in ("get", "verify") else None}
        if self.plan.profile.producers and step.key >= 0:
            rec["got"] = self.producer_got(step, ans) if step.op in ("get", "verify") else None
            if step.op == "create" and ans.status is not None and 200 <= ans.status < 300:
                ident = producers.captured_id(pair_of(self.plan.profile, step.key), ans.body)
                if ident is None:
                    rec["error"] = "no id in the create's answer"
                    rec["status"] = None  # unusable as an acknowledgement: nothing can read it back
                else:
                    self.ids[step.key] = rec["id"] = ident
                    self.id_sent[step.key] = sent
        self.requests.append(rec)

    async def conn_worker(self, anchor: float, steps: list[tuple[int, Step]]) -> None:
        for index, step in steps:
            delay = anchor + step.at_ms / 1000 - self.ctx.clock()
            if delay > 0 and not self.unrecovered:
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    pass  # no recovery: the remaining steps are recorded as skipped
            await self.step(index, step)

    # ---- faults and recovery ------------------------------------------------------------------
    async def fault(self, phase: Phase, anchor: float) -> None:
        assert phase.fault is not None
        delay = anchor - self.ctx.clock()
        if delay > 0:
            await asyncio.sleep(delay)
        spec = FaultSpec.from_dict(phase.fault)
        if self.unrecovered:  # the target is already down for good: another fault proves nothing
            return
        window: list[float | None] | None = None
        prof = self.plan.profile
        if prof.producers and not covers(phase.fault, durable=prof.durable, durable_services=prof.durable_services):
            window = [self.now(), None]
            self.forgetting.append(window)
        injected = await self.ctx.injector.inject(spec, derive_seed(self.plan.seed, "fault", phase.index))
        if window is not None:
            window[1] = self.now()
        self.faults.append({"phase": phase.index, "kind": spec.kind, "subject": spec.subject,
                            "params": spec.params, "start": round(injected.started_at - self.t0, 6),
                            "end": round(injected.ended_at - self.t0, 6), "applied": injected.applied,
                            "not_applicable": injected.not_applicable, "observed": injected.observed})
        if not injected.not_applicable:
            await self.recover(phase.index, spec.kind)

    async def recover(self, phase: int, kind: str) -> None:
        """The health path, then one read, each answered below 500 within the recovery deadline."""
        after = self.now()
        deadline = self.ctx.clock() + self.ctx.recovery_deadline_s
        detail, ok = "", False
        if self.plan.profile.producers:  # an item no create of this run made: 404 (or 401) is a success
            probe = self.item_path(pair_of(self.plan.profile, 0), "0")
        else:
            probe = self.plan.profile.key_path(self.key(PROBE_KEY))
        while not ok and self.ctx.clock() < deadline:
            conn = Conn(self.ctx.address, self.ctx.clock, timeout_s=max(0.2, min(2.0, deadline - self.ctx.clock())))
            try:
                for path in (self.ctx.health_path, probe):
                    ans = await conn.request("GET", path)
                    if ans.status is None or ans.status >= 500:
                        detail = f"GET {path}: {ans.error or ans.status}"
                        break
                else:
                    ok = True
            finally:
                await conn.close()
            if not ok:
                await asyncio.sleep(0.1)
        if not ok:
            self.unrecovered = f"no recovery after {kind} (phase {phase})"
        self.recoveries.append({"phase": phase, "kind": kind, "after": after, "ok": ok,
                                "elapsed": round(self.now() - after, 6), "detail": "" if ok else detail})

    async def reread(self) -> None:
        """The reads after recovery start as soon as the last recovery probe succeeded, inside the
        last window's grace, where I-T3-5XX excuses a 5xx and a reset or a timeout leaves the key
        unjudged. Each read-back that got no usable answer there is read again once the grace has
        passed (on a fresh connection, marked ``reread``): what the old 1.7 s wait before every
        read-back judged, paid only when a read needs it."""
        if self.unrecovered:
            return
        until, again = to_reread(self.requests, self.faults, self.ctx.grace_s)
        if not again:
            return
        wait = until - self.now()
        if wait > 0:
            await asyncio.sleep(min(wait, self.ctx.grace_s + 0.05))
        conn = max(s.conn for s in self.plan.steps) + 1
        for r in again:
            await self.step(r["step"], Step(r["phase"], 0, conn, "verify", r["key"]))
            self.requests[-1]["reread"] = True

    # ---- phases ---------------------------------------------------------------------------------
    async def phase(self, phase: Phase, steps: list[tuple[int, Step]]) -> None:
        start = self.ctx.clock()
        anchor = start + phase.lead_ms / 1000
        by_conn: dict[int, list[tuple[int, Step]]] = defaultdict(list)
        for index, step in sorted(steps, key=lambda s: (s[1].at_ms, s[0])):
            by_conn[step.conn].append((index, step))
        workers = [asyncio.create_task(self.conn_worker(anchor, s)) for s in by_conn.values()]
        if phase.fault is not None:
            await self.fault(phase, anchor)
            if self.unrecovered:  # what is still waiting on the target would only time out
                for w in workers:
                    w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        hold = phase.fault["duration_s"] if phase.fault is not None else 0.0
        rest = anchor + hold + phase.tail_ms / 1000 - self.ctx.clock()
        if rest > 0:
            await asyncio.sleep(rest)
        for cid in {s.conn for _, s in steps if s.op == "hold"}:  # held connections end with their phase
            conn = self.conns.pop(cid, None)
            if conn is not None:
                await conn.close()

    async def run(self) -> dict[str, Any]:
        indexed = list(enumerate(self.plan.steps))
        try:
            if self.plan.profile.producers and self.plan.profile.login:
                await self.login(self.auth_gen)
            for phase in self.plan.phases:
                await self.phase(phase, [(i, s) for i, s in indexed if s.phase == phase.index])
            await self.reread()
        finally:
            for conn in self.conns.values():
                await conn.close()
        return {"salt": self.ctx.salt, "namespace": f"{self.plan.namespace:#010x}", "duration_s": self.now(),
                "requests": sorted(self.requests, key=lambda r: (r["sent"], r["step"])), "faults": self.faults,
                "recoveries": self.recoveries, "keys": {str(k): v for k, v in sorted(self.keys.items())},
                **({"ids": {str(k): v for k, v in sorted(self.ids.items())}, "logins": self.logins}
                   if self.plan.profile.producers else {})}


async def run_plan(plan: Plan, ctx: RunContext) -> dict[str, Any]:
    """Run ``plan`` once against ``ctx``; the observed timeline."""
    return await _Run(plan, ctx).run()
