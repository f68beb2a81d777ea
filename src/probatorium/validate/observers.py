"""Observers of a running cell: resource leaks (I-MEM-1 / I-FD-1 / I-TASK-1) and /metrics (I-OBS-1).

An observer watches the target while the tiers drive it and leaves evidence
for the catalogue's judges; it never decides the gate itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..results.schema import PropertyResult, utc_now_iso
from ..targets.control import FaultWindows
from .incidents import Evidence, IncidentRecorder

LEAK_PREDICATES = ("I-MEM-1", "I-FD-1", "I-TASK-1")
LEAK_CHECK_FROM_S = 40.0  # mid-run leak checks start here (a strong leak is caught within a minute)
#: Buckets a mid-run check needs (the end-of-cell judgment needs the judges' own 8): a mid-run
#: failure is only a signal that dates the incident, the end of the cell confirms it.
LEAK_SIGNAL_MIN_BUCKETS = 6
POLL_S = 2.0


class LeakObserver:
    """1 Hz samples of the target's process tree, judged mid-run (signals) and at the end (verdicts).

    A mid-run failure is a provisional SIGNAL (its time is kept); the incident is recorded
    when the end-of-cell judgment confirms it, with first_seen = the signal's time. Judging
    every 2 s is many looks at one series: a pile-up under load (connections a slice holds,
    a start-up ramp) can look like a leak for a while, then drain or level off; a leak does
    neither. The end-of-cell judgment fits the samples taken under traffic, then looks at
    the quiet settle window: fds or tasks back at their early floor once traffic stopped
    were held by the load, not leaked (docs/leaks.md).
    """

    def __init__(self, pid: Callable[[], int | None], debug_url: Callable[[], str], recorder: IncidentRecorder,
                 *, cell_seed: int, say: Callable[[str], None], faults: FaultWindows | None = None) -> None:
        from .resources import ResourceSampler

        # Planned faults (TargetControl's windows) are skipped: a restart is never a leak.
        self.sampler = ResourceSampler(pid, debug_url=debug_url, faults=faults)
        self.recorder, self.cell_seed, self.say = recorder, cell_seed, say
        self.started = 0.0
        self.signals: dict[str, tuple[str, float, str]] = {}  # predicate → (ISO time, cell seconds, reason)
        self.verdicts: dict[str, PropertyResult] | None = None
        self.traffic_end_t: float | None = None

    def start(self) -> "LeakObserver":
        self.sampler.start()
        self.started = time.monotonic()
        return self

    async def watch(self) -> None:
        """Judge every 2 s once enough samples exist: a strong leak is a signal within a minute."""
        while True:
            await asyncio.sleep(POLL_S)
            if time.monotonic() - self.started >= LEAK_CHECK_FROM_S:
                await asyncio.to_thread(self.check, False)

    def traffic_ended(self) -> None:
        samples = self.sampler.samples
        self.traffic_end_t = samples[-1]["t"] if samples else 0.0

    def finish(self, series_path: Path) -> None:
        """Stop sampling, write the series, judge while the target is still up (a confirmed
        leak's forensics see the leak); a judge bug must not lose the cell."""
        self.sampler.stop()
        self.sampler.write_series(series_path)
        try:
            self.verdicts = self.check(final=True)
        except Exception as e:
            reason = f"internal error in the leak judges: {type(e).__name__}: {e}"
            self.verdicts = {p: PropertyResult(status="not_judged", reason=reason) for p in LEAK_PREDICATES}

    def self_checks(self) -> dict[str, int] | None:
        """The target's self-check counts over the cell (docs/contracts.md), None without the contract."""
        from .resources import self_check_totals

        return self_check_totals(self.sampler.samples)

    def check(self, final: bool) -> dict[str, PropertyResult]:
        """Judge the leak properties on the samples so far (see the class docstring)."""
        from .resources import judge_all

        samples = self.sampler.samples
        settle: list[dict] = []
        if final and self.traffic_end_t is not None:
            settle = [x for x in samples if x["t"] > self.traffic_end_t]
            samples = [x for x in samples if x["t"] <= self.traffic_end_t]
        out: dict[str, PropertyResult] = {}
        kwargs = {} if final else {"min_buckets": LEAK_SIGNAL_MIN_BUCKETS}
        for pred, v in judge_all(samples, **kwargs).items():
            res = out[pred] = PropertyResult(status=v.status, evaluations=v.evaluations, reason=v.reason)
            if v.status != "failed" or self.recorder.seen(pred):
                continue
            if final:
                self._confirm(pred, v, res, samples, settle)
            elif pred not in self.signals:
                now_s = time.monotonic() - self.started
                self.signals[pred] = (utc_now_iso(), now_s, v.reason)
                self.say(f"  {pred} signal at {now_s:.0f} s: {v.reason[:100]} "
                         f"(an incident if the end of the cell confirms it)")
        if final:
            for pred, (_at, cell_s, reason) in self.signals.items():
                res = out.get(pred)
                if res is not None and res.status != "failed":
                    res.reason = (f"{res.reason}; a mid-run check flagged it at {cell_s:.0f} s ({reason[:160]}) "
                                  f"but the end of the cell does not confirm it: retracted")
        return out

    def _confirm(self, pred: str, v: Any, res: PropertyResult, traffic: list[dict], settle: list[dict]) -> None:
        from .resources import drained_after_traffic

        drained = drained_after_traffic(pred, traffic, settle)
        if drained:
            res.status, res.reason = "passed", f"{v.reason}; but {drained}: held by the load, not leaked"
            return
        signal = self.signals.get(pred)
        when = f", first flagged mid-run at {signal[1]:.0f} s into the cell" if signal else ""
        self.recorder.record(Evidence(
            predicate=pred, seed=self.cell_seed, first_seen=signal[0] if signal else None,
            detail=f"{v.reason} (slope {v.slope_per_min:.3g}/min){when}; confirmed at the end of the cell",
            extra={"evidence": v.evidence, "series": self.sampler.samples[-600:],
                   "mid_run_signal": signal and {"at": signal[0], "cell_s": round(signal[1], 1),
                                                 "reason": signal[2]}}))


class MetricsObserver:
    """Scrape /metrics every 2 s: cumulative series must never decrease (I-OBS-1 from outside)."""

    def __init__(self, target: Any, recorder: IncidentRecorder, cell_seed: int) -> None:
        from .metrics import MetricsScraper

        self.target, self.recorder, self.cell_seed = target, recorder, cell_seed
        self.scraper = MetricsScraper(target.host, target.port)

    async def watch(self) -> None:
        sc, pid = self.scraper, self.target.pid
        while True:
            await asyncio.sleep(POLL_S)
            if self.target.pid != pid:  # restarted: its counters legitimately start again
                sc.reset()
                pid = self.target.pid
            sc.port = self.target.port
            bad = await asyncio.to_thread(sc.check)
            if bad:
                self.recorder.record(Evidence(predicate="I-OBS-1", seed=self.cell_seed,
                                              detail=f"/metrics scraped from outside: {bad[0]}",
                                              extra={"violations": bad[:50]}))

    def evidence(self) -> dict[str, Any]:
        sc = self.scraper
        return {"comparisons": sc.comparisons, "violations": len(sc.violations), "absent_reason": sc.absent_reason}
