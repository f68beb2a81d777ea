"""The slow-client phase of the adversarial slice (issue 12, items 4 and 5).

Once per cell, next to the catalogue's walkers, every held connection is opened at once
(K from ``--slowloris-connections``, split over the four kinds of slowcore.py) and kept until
the server closes it or the cap (62 s); while they are held, one legitimate request every 2 s
checks the target still serves, and eight unfinished heads streamed as fast as the server reads
them check that its memory does not grow with what a client sends (RSS of the target's process
tree, sampled like the resource sampler does). Verdicts (pure, in slowcore.py):

* I-ADV-SLOWLORIS (MED): a partial request (half a request-line, a head trickled one byte every
  2 s, a stalled body) held open for the whole cap, RFC 9112 §9.5;
* I-ADV-STARVE (HIGH): legitimate requests refused or timed out while the connections were held;
* I-ADV-MEMORY (HIGH): the resident set grew by at least half the unfinished-head bytes the
  server took (RFC 9110 §5.4 lets it refuse with 431 instead).

The phase needs cap + 5 s (67 s) of the cell; a shorter cell says not_judged with the reason.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...repro import connect  # the reproducer runtime's: judge_slow also runs inside repro.py
from .slowcore import (HOLD_KINDS, PARTIAL_KINDS, close_streams, hold, judge_holds, judge_memory, judge_starvation,
                       legit, listener_pids, rss_of, stream_header)

FD_MARGIN = 128  # descriptors kept free for the other slices' connections


@dataclass(frozen=True)
class SlowConfig:
    """The slow-client phase's parameters (tests use small caps; the CLI sets `connections`)."""

    connections: int = 200  # K held connections, split over the four kinds
    # seconds a held connection is kept at most: just above the common 60 s timeouts (nginx's
    # client_header_timeout, Twisted's inactivity timeout), so a server with one is not at the cap
    cap: float = 62.0
    trickle: float = 2.0  # seconds between the bytes of a trickled head
    legit_every: float = 2.0
    legit_timeout: float = 5.0
    memory_streams: int = 8
    memory_bytes: int = 8 << 20  # per unfinished head
    memory_seconds: float = 20.0
    margin: float = 5.0

    @property
    def needed_s(self) -> float:
        return self.cap + self.margin


def fd_budget(want: int, extra: int) -> tuple[int, str]:
    """How many of `want` held connections fit under our RLIMIT_NOFILE (the soft limit is raised
    toward the hard one when needed); the reason when fewer fit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 64
    need = used + want + extra + FD_MARGIN
    inf = resource.RLIM_INFINITY
    if soft != inf and soft < need:
        new = need if hard == inf else min(hard, need)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == inf or soft >= need:
        return want, ""
    room = max(0, soft - used - extra - FD_MARGIN)
    return room, (f"--slowloris-connections {want} reduced to {room}: RLIMIT_NOFILE soft limit {soft} "
                  f"(hard {hard}), {used} descriptors in use")


def split_kinds(k: int) -> dict[str, int]:
    """K connections over the four kinds, the remainder to the first ones."""
    base, rest = divmod(k, len(HOLD_KINDS))
    return {kind: base + (1 if i < rest else 0) for i, kind in enumerate(HOLD_KINDS)}


class SlowClients:
    """One cell's slow-client phase against one target."""

    def __init__(self, host: str, port: int, host_header: str, *, config: SlowConfig, target: str, echo: bool,
                 pid: Callable[[], int | None] | None = None, say: Callable[[str], None] | None = None) -> None:
        self.host, self.port, self.host_header = host, port, host_header
        self.config, self.target, self.echo = config, target, echo
        self.pid = pid or (lambda: None)
        self.say = say or (lambda msg: None)
        self.reason = "the slow-client phase did not run"
        self.notes: list[str] = []
        self.holds: dict[str, dict] = {}
        self.starvation: dict | None = None
        self.memory: dict | None = None
        self.legit_log: list[dict] = []

    # ---- running ---------------------------------------------------------------------------------
    async def run(self, deadline: float, stop: Callable[[], bool] = lambda: False) -> None:
        cfg = self.config
        left = deadline - time.monotonic()
        if cfg.connections <= 0:
            self.reason = "--slowloris-connections 0: the slow-client phase is off"
            return
        if left < cfg.needed_s:
            self.reason = (f"the cell leaves {left:.0f} s for the slow-client phase; it needs {cfg.needed_s:.0f} s "
                           f"(cap {cfg.cap:.0f} s + {cfg.margin:.0f} s): run longer cells")
            return
        k, why = fd_budget(cfg.connections, cfg.memory_streams + 8)
        if why:
            self.notes.append(why)
            self.say(f"  adversarial: {why}")
        if k < len(HOLD_KINDS):
            self.reason = why or "fewer held connections than kinds"
            return
        self.reason = ""
        baseline = await legit(self.host, self.port, self.target, self.host_header, nonce="slow-base",
                               echo=self.echo, timeout=cfg.legit_timeout)
        t0 = time.monotonic()
        tasks: dict[str, list[asyncio.Task]] = {
            kind: [asyncio.create_task(hold(self.host, self.port, kind, self.target, self.host_header, cap=cfg.cap,
                                            trickle=cfg.trickle, stop=stop)) for _ in range(n)]
            for kind, n in split_kinds(k).items()}
        everything = [t for ts in tasks.values() for t in ts]
        memory = asyncio.create_task(self._memory(t0 + 1.0))
        during = await self._legit_loop(t0, everything, stop)
        results = {kind: await asyncio.gather(*ts) for kind, ts in tasks.items()}
        await memory
        self.holds = {kind: judge_holds(kind, list(rows), cfg.cap) for kind, rows in results.items()}
        self.starvation = judge_starvation(baseline, during)
        self.legit_log = [baseline, *during][:40]

    async def _legit_loop(self, t0: float, held: list[asyncio.Task], stop: Callable[[], bool]) -> list[dict]:
        """A legitimate request every legit_every s while at least half the held connections are open."""
        cfg = self.config
        out: list[dict] = []
        n = 0
        next_at = t0 + min(2.0, cfg.cap / 4)
        last = t0 + cfg.cap - cfg.legit_timeout
        while time.monotonic() < last and not stop() and n < 1000:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += cfg.legit_every
            open_now = sum(1 for t in held if not t.done())
            if 2 * open_now < len(held):
                continue  # the server let most of them go: a failure now would not be theirs
            n += 1
            res = await legit(self.host, self.port, self.target, self.host_header, nonce=f"slow-legit-{n}",
                              echo=self.echo, timeout=cfg.legit_timeout)
            res["held_open"] = open_now
            out.append(res)
        return out

    async def _memory(self, start_at: float) -> None:
        cfg = self.config
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        pid = self.pid()
        before = _rss(pid)
        sending = [asyncio.create_task(stream_header(self.host, self.port, self.target, self.host_header,
                                                     limit=cfg.memory_bytes, seconds=cfg.memory_seconds))
                   for _ in range(cfg.memory_streams)]
        peak = before
        settle_until = None
        while True:  # sample while the heads stream and for 1 s after (bounded by memory_seconds + 2)
            await asyncio.sleep(0.25)
            rss = _rss(pid)
            if rss is not None and (peak is None or rss > peak):
                peak = rss
            if settle_until is None and all(t.done() for t in sending):
                settle_until = time.monotonic() + 1.0
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            if time.monotonic() > start_at + cfg.memory_seconds + 2.0:
                break
        streams = [t.result() if t.done() and not t.cancelled() and t.exception() is None else {"sent": 0}
                   for t in sending]
        for t in sending:
            t.cancel()
        await close_streams(streams)
        self.memory = judge_memory(before, peak, streams)

    # ---- verdicts --------------------------------------------------------------------------------
    def evidence(self) -> dict:
        from ....results.schema import PropertyResult

        def nj(reason: str) -> PropertyResult:
            return PropertyResult(status="not_judged", reason=reason)

        if self.reason:
            return {p: nj(self.reason) for p in ("I-ADV-SLOWLORIS", "I-ADV-STARVE", "I-ADV-MEMORY")}
        partial = [self.holds[k] for k in PARTIAL_KINDS if k in self.holds]
        judged = [r for r in partial if r["verdict"] in ("held_to_cap", "closed")]
        evals = sum(r["connected"] for r in judged)
        if any(r["verdict"] == "held_to_cap" for r in judged):
            slow = PropertyResult(status="failed", evaluations=evals)
        elif judged:
            slow = PropertyResult(status="passed", evaluations=evals)
        else:
            slow = nj("no held connection connected")
        st = self.starvation or {"verdict": "not_judged", "reason": "no starvation check ran"}
        starve = {"starved": PropertyResult(status="failed", evaluations=st.get("sent", 0)),
                  "ok": PropertyResult(status="passed", evaluations=st.get("sent", 0))}.get(
            st["verdict"]) or nj(st.get("reason") or "not judged")
        mem = self.memory or {"verdict": "not_judged", "reason": "the memory probe did not run"}
        memory = {"grew": PropertyResult(status="failed", evaluations=mem.get("streams", 0)),
                  "bounded": PropertyResult(status="passed", evaluations=mem.get("streams", 0))}.get(
            mem["verdict"]) or nj(mem.get("reason") or "not judged")
        return {"I-ADV-SLOWLORIS": slow, "I-ADV-STARVE": starve, "I-ADV-MEMORY": memory}

    def findings(self) -> list[tuple[str, str, str, dict]]:
        """(predicate, case, detail, repro payload) per violation."""
        if self.reason:
            return []
        cfg = self.config
        out = []
        base = {"target": self.target, "echo": self.echo, "trickle": cfg.trickle}
        for kind in PARTIAL_KINDS:
            row = self.holds.get(kind)
            if row and row["verdict"] == "held_to_cap":
                out.append(("I-ADV-SLOWLORIS", f"slowloris_{kind}",
                            f"{row['held_to_cap']} of {row['connected']} {kind} connections were still open at the "
                            f"{cfg.cap:.0f} s cap (RFC 9112 §9.5; evidence: connection state)",
                            {**base, "mode": "hold", "kind": kind, "connections": 5, "cap": min(cfg.cap, 30.0)}))
        st = self.starvation or {}
        if st.get("verdict") == "starved":
            k = sum(r["connected"] for r in self.holds.values())
            out.append(("I-ADV-STARVE", "slowloris_starvation",
                        f"{st['failed']} of {st['sent']} legitimate requests failed ({', '.join(st['failures'])}) "
                        f"while {k} slow connections were held (evidence: {st.get('evidence', 'status')})",
                        {**base, "mode": "starve", "connections": k, "cap": min(cfg.cap, 25.0),
                         "legit_timeout": cfg.legit_timeout}))
        mem = self.memory or {}
        if mem.get("verdict") == "grew":
            out.append(("I-ADV-MEMORY", "header_memory_growth",
                        f"RSS grew by {mem['growth'] >> 20} MiB while {mem['streams']} unfinished heads of "
                        f"{mem['bytes_taken'] >> 20} MiB in total were held (RFC 9110 §5.4: 431 bounds it; "
                        f"evidence: resident set of the target's process tree)",
                        {**base, "mode": "memory", "streams": cfg.memory_streams, "bytes": cfg.memory_bytes,
                         "seconds": cfg.memory_seconds}))
        return out

    def detail(self) -> dict:
        return {"reason": self.reason, "notes": self.notes, "cap_s": self.config.cap,
                "trickle_s": self.config.trickle, "connections": self.config.connections,
                "holds": self.holds, "starvation": self.starvation, "memory": self.memory,
                "legit": self.legit_log}


def _rss(pid: int | None) -> int | None:
    """The resident set of the target's process tree (the resource sampler's measure)."""
    if pid is None:
        return None
    from ...resources import sample_tree

    sample = sample_tree(pid)
    return None if sample is None else int(sample["rss_bytes"])


# ---- repro.py ---------------------------------------------------------------------------------


def judge_slow(host: str, port: int, addr: str, payload: dict) -> tuple[bool, str]:
    """Re-run one slow-client finding against HOST:PORT (standard library only; embedded in repro.py)."""
    connect(host, port).close()  # UNREACHABLE when nothing listens
    mode, target, echo = payload["mode"], payload["target"], payload["echo"]
    if mode == "hold":
        kind, cap = payload["kind"], payload["cap"]

        async def holds():
            return await asyncio.gather(*[hold(host, port, kind, target, addr, cap=cap, trickle=payload["trickle"])
                                          for _ in range(payload["connections"])])

        row = judge_holds(kind, list(asyncio.run(holds())), cap)
        print(f"{row['connected']} {kind} connections; open at the {cap:.0f} s cap: {row['held_to_cap']}; "
              f"median {row['median_s']} s, max {row['max_s']} s; responses {row['responses']}")
        return row["verdict"] == "held_to_cap", f"{kind}: {row['verdict']}"
    if mode == "starve":
        cap, k = payload["cap"], payload["connections"]

        async def starve():
            base = await legit(host, port, target, addr, nonce="repro-base", echo=echo,
                               timeout=payload["legit_timeout"])
            kinds = ("partial_line", "trickle_headers", "stalled_body", "idle")
            tasks = [asyncio.create_task(hold(host, port, kinds[i % 4], target, addr, cap=cap,
                                              trickle=payload["trickle"])) for i in range(k)]
            during = []
            await asyncio.sleep(2.0)
            for n in range(int((cap - payload["legit_timeout"] - 2.0) // 2.0)):
                if 2 * sum(1 for t in tasks if not t.done()) < len(tasks):
                    break
                during.append(await legit(host, port, target, addr, nonce=f"repro-legit-{n}", echo=echo,
                                          timeout=payload["legit_timeout"]))
                await asyncio.sleep(1.0)
            await asyncio.gather(*tasks)
            return base, during

        base, during = asyncio.run(starve())
        st = judge_starvation(base, during)
        print(f"{k} held connections; legitimate requests sent {st['sent']}, failed {st['failed']}: "
              f"{st.get('failures', [])} {st.get('reason', '')}")
        return st["verdict"] == "starved", f"starvation: {st['verdict']}"
    pids = listener_pids(port)
    print(f"processes listening on port {port}: {pids or 'none readable (run as the target user on its host)'}")

    async def memory():
        before = rss_of(pids)
        tasks = [asyncio.create_task(stream_header(host, port, target, addr, limit=payload["bytes"],
                                                   seconds=payload["seconds"])) for _ in range(payload["streams"])]
        peak = before
        end = time.monotonic() + payload["seconds"] + 2.0
        while time.monotonic() < end:
            await asyncio.sleep(0.25)
            rss = rss_of(pids)
            if rss is not None and (peak is None or rss > peak):
                peak = rss
            if all(t.done() for t in tasks):
                break
        streams = list(await asyncio.gather(*tasks))
        await asyncio.sleep(1.0)
        rss = rss_of(pids)
        if rss is not None and (peak is None or rss > peak):
            peak = rss
        await close_streams(streams)
        return judge_memory(before, peak, streams)

    row = asyncio.run(memory())
    print(f"unfinished heads: {row['streams']}, bytes taken {row['bytes_taken']}, closed early "
          f"{row['closed_early']}; RSS before {row['rss_before']}, peak {row['rss_peak']}")
    return row["verdict"] == "grew", f"memory: {row['verdict']} {row.get('reason', '')}".strip()


def slow_repro(*, predicate: str, case: str, detail: str, payload: dict, addr: str, version: str) -> str:
    """Source of a standalone repro.py for one slow-client finding."""
    from ...repro import build_repro
    from . import slowcore

    how = ("Holds connections the way the run did (kind, count, cap in PAYLOAD), sends legitimate requests "
           "or unfinished heads as the mode says, and judges with probatorium's slow-client rules (embedded).")
    return build_repro("slow-clients", payload, judge_slow, predicate=predicate, detail=detail, addr=addr,
                       version=version, case=case, how=how, modules=(slowcore,))
