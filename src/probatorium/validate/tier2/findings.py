"""A Tier 2 finding's path to an incident: confirm by replay, shrink, write the dossier.

Each (checker, operation, status) bucket is handled once: the sequence that
showed it is replayed alone (a finding that does not come back is counted
``unconfirmed_<ID>``, never reported), shrunk with :func:`probatorium.shrink.ddmin`
over its steps (candidates that break a binding or a login are never sent),
then over the payload fields of the failing step (not for mutated steps: their
violation is what is judged), each candidate replayed within a bound. The
dossier holds ``sequence.json`` (``{"steps": [...]}``), ``repro.py`` and
``curl.sh`` beside the recorder's ``incident.json``.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from collections.abc import Awaitable, Callable

from ... import __version__
from ...shrink import ShrinkResult, ddmin
from ..incidents import Evidence
from .checks import Finding, check_sequence
from .exchange import well_formed
from .minischema import schema_errors
from .repro import api_repro

MAX_REPLAYS = 40
SHRINK_SECONDS = 20.0
SHRINK_GRACE = 20.0  # past the tier's deadline by more than this, findings are recorded unshrunk


def curl_lines(exchanges: list, addr: str) -> str:
    """curl.sh: the shrunk sequence as curl commands with the values of the recorded replay."""
    out = ["#!/bin/sh", "# The shrunk sequence as curl commands, with the ids and tokens of the recorded replay:",
           "# a fresh target hands out other values; repro.py resolves the bindings itself.",
           f'ADDR="${{1:-{addr}}}"', ""]
    for ex in exchanges:
        parts = ["curl", "-si", "-X", ex.method]
        for k, v in ex.request_headers:
            parts += ["-H", f"{k}: {v}"]
        if ex.request_body is not None:
            parts += ["--data-binary", ex.request_body]
        out.append(f"# step {ex.step}: {ex.op_id} as user {ex.user} -> {ex.status}")
        out.append(" ".join(shlex.quote(p) for p in parts) + f' "http://$ADDR"{shlex.quote(ex.path)}')
    return "\n".join(out) + "\n"


class FindingHandler:
    """Confirms, shrinks and records findings for one Tier 2 run."""

    def __init__(self, ops: dict, report: Callable, tally, seed: int, say: Callable[[str], None]) -> None:
        self.ops, self.report, self.tally, self.seed, self.say = ops, report, tally, seed, say
        self.buckets: dict[tuple, str] = {}  # bucket → "pending" | "recorded" | "unconfirmed"
        self.recorded: list[dict] = []

    def _oracle(self, runner, f: Finding) -> Callable[[list], Awaitable[int | None]]:
        async def test(steps: list) -> int | None:
            self.tally["shrink_replays"] += 1
            seq = await runner.run(steps)
            _, got = check_sequence(seq, self.ops, schema_errors, only=f.predicate)
            hit = next((g for g in got if g.predicate == f.predicate and g.op_id == f.op_id), None)
            return None if hit is None else hit.step
        return test

    async def handle(self, f: Finding, steps: list, runner, addr: str, deadline: float) -> None:
        """Confirm, shrink and record one finding unless its bucket was handled already."""
        if f.bucket in self.buckets:
            self.tally[f"occurrences_{f.predicate}"] += 1
            return
        self.buckets[f.bucket] = "pending"
        test = self._oracle(runner, f)
        at = await test(steps)
        if at is None:
            self.buckets[f.bucket] = "unconfirmed"
            self.tally[f"unconfirmed_{f.predicate}"] += 1
            return
        now = time.monotonic()
        if now > deadline + SHRINK_GRACE:
            res = ShrinkResult(steps[:at + 1], 0, False, "not shrunk: the tier's budget is spent")
            return await self._record(f, res.sequence, await runner.run(res.sequence), addr, res)
        stop = now + SHRINK_SECONDS if now < deadline else now + 8.0
        res = await ddmin(steps[:at + 1], test, max_tests=MAX_REPLAYS, deadline=stop, valid=well_formed)
        final, fields = res.sequence, await self._shrink_fields(res.sequence, test, stop)
        if fields is not None:
            final = fields
        seq = await runner.run(final)
        _, got = check_sequence(seq, self.ops, schema_errors, only=f.predicate)
        hit = next((g for g in got if g.predicate == f.predicate and g.op_id == f.op_id), None)
        if hit is None:  # flaky after shrinking: keep the sequence that was confirmed
            final = steps
            seq = await runner.run(final)
        await self._record(f if hit is None else hit, final, seq, addr, res)

    async def _shrink_fields(self, steps: list, test, stop: float) -> list | None:
        """ddmin over the top-level fields of the failing step's JSON body (not of a mutated one)."""
        last = steps[-1]
        body = last.get("body")
        if last.get("violates") or not isinstance(body, dict) or len(body) < 2:
            return None
        keys = list(body)

        async def keep(kept: list) -> int | None:
            cand = [*steps[:-1], {**last, "body": {k: body[k] for k in kept}}]
            return None if await test(cand) is None else len(kept) - 1

        got = await ddmin(keys, keep, max_tests=MAX_REPLAYS // 2, deadline=stop)
        if len(got.sequence) == len(keys):
            return None
        return [*steps[:-1], {**last, "body": {k: body[k] for k in got.sequence}}]

    async def _record(self, f: Finding, steps: list, seq: list, addr: str, res) -> None:
        case = f"{f.op_id}-{f.status}"
        sev = f.severity or None
        repro = api_repro(steps=steps, ops=self.ops, predicate=f.predicate, op_id=f.op_id, detail=f.detail,
                          addr=addr, version=__version__, case=case)
        ev = Evidence(predicate=f.predicate, detail=f.detail, case=case, seed=self.seed, severity=sev,
                      extra={"op_id": f.op_id, "status": f.status, "bucket": list(f.bucket),
                             "shrink": {"steps": len(steps), "replays": res.tests, "complete": res.complete,
                                        "reason": res.reason},
                             "exchanges": [e.to_dict() for e in seq]},
                      repro=repro, files={"sequence.json": json.dumps({"steps": steps}, indent=1) + "\n",
                                          "curl.sh": curl_lines(seq, addr)})
        inc = await asyncio.to_thread(self.report, ev)
        self.buckets[f.bucket] = "recorded"
        if f.predicate == "I-API-SCHEMA" and sev == "MED":
            self.tally["schema_undeclared_status"] += 1
        else:
            self.tally[f"findings_{f.predicate}"] += 1
        self.recorded.append({"predicate": f.predicate, "severity": sev or "", "op_id": f.op_id,
                              "status": f.status, "detail": f.detail, "steps": len(steps),
                              "shrink": res.reason, "dossier": getattr(inc, "dossier", "")})
