"""Tier 1 as a tier unit: build the registered slices, run their walkers for the budget, settle."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ..tier_api import TierEnv
from .base import Slice, SliceContext
from .registry import SLICES


class Tier1:
    """Property stress: the slices share the walkers the schedule gives them (SPEC.md §5)."""

    number = 1
    key = "tier_1"
    sidecar = "tier1_tally.json"

    def __init__(self) -> None:
        self.slices: dict[str, Slice] = {}
        self.build_errors: dict[str, str] = {}  # slice → why it could not be built (e.g. a bad markov.yaml)

    def applies(self, openapi: Path | None) -> str | None:
        """Tier 1 applies to every target that speaks HTTP/1.1."""
        return None

    async def run(self, env: TierEnv, budget_s: float) -> None:
        ctx = SliceContext(address=env.address, cell_seed=env.cell_seed, paths=env.paths, report=env.report,
                           alive=env.alive, recover=env.recover, quiet_timeout=env.quiet_timeout,
                           openapi=env.openapi, markov=env.markov, crashlog=env.crashlog, streams=env.streams,
                           say=env.say, identity=env.control.identity if env.control is not None else None,
                           slowloris_connections=getattr(env.options, "slowloris_connections", 200))
        deadline = time.monotonic() + budget_s
        walkers = []
        for name, count in env.schedule.walkers.items():
            try:
                sl = SLICES[name].build(ctx)
            except UsageError as e:  # checked up front by the CLI; a library caller may pass a bad file
                self.build_errors[name] = str(e)
                env.say(f"  {name}: {e}")
                continue
            sl.follow(env.address)
            self.slices[name] = sl
            why = await sl.prepare()
            if why:
                env.say(f"  {name}: {why}")
                continue
            walkers += [sl.walker(i, deadline, env.stop) for i in range(count)]
        if walkers:
            await asyncio.gather(*walkers)
        if not env.stop():
            for sl in self.slices.values():
                await sl.finish()

    def tallies(self) -> dict[str, Any]:
        """The cell's tier_1 sub-tallies: one per slice that ran, the summed rfc tally, requests_sent."""
        out: dict[str, Any] = {}
        rfc: Counter = Counter()
        sent = 0
        for name, sl in self.slices.items():
            info = SLICES[name]
            out[info.tally_key] = sl.counters()
            sent += out[info.tally_key].get(info.sent_counter, 0)
            rfc.update(sl.rfc)
        if self.slices:
            out["rfc"] = dict(rfc)
            out["requests_sent"] = sent
        return out

    def reasons(self) -> dict[str, str]:
        return {SLICES[n].tally_key: sl.stopped_reason for n, sl in self.slices.items() if sl.stopped_reason}

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for sl in self.slices.values():
            out.update(sl.evidence())
        return out

    def detail(self) -> dict[str, Any]:
        """tier1_tally.json: per slice, per-case and per-operation detail."""
        out: dict[str, Any] = {name: {"error": why} for name, why in self.build_errors.items()}
        out.update({name: sl.detail() for name, sl in self.slices.items()})
        return out

    def stopped_reason(self) -> str:
        return "; ".join(f"{n}: {sl.stopped_reason}" for n, sl in self.slices.items() if sl.stopped_reason)

    def internal_errors(self) -> list[str]:
        return [e for sl in self.slices.values() for e in sl.internal_errors]
