"""Tier 3 as a tier unit: run seeds (each a plan of workload + faults) against the cell's target,
judge each from its timeline, write a dossier with a shrunk plan for the first failing seed of
each predicate, and tally (SPEC.md §5, §9; docs/tier3.md).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ...progress import reporter_of
from ...faults import FAULT_KINDS, SERVICE_KINDS
from ...results.store import write_json_atomic, write_text_atomic
from ..incidents import Evidence
from ..tier_api import TierEnv
from . import corpus
from .judges import covers
from .plan import Plan
from .profile import TargetProfile, tier3_contract
from .session import SeedResult, Session, Tier3Options

PREDICATES = ("I-T3-LOST-WRITE", "I-T3-NO-RECOVERY", "I-T3-5XX", "I-T3-DRAIN")


def aggregate(results: list[SeedResult], skipped: dict[str, str], profile: TargetProfile | None,
              why_not: str = "") -> dict[str, dict[str, Any]]:
    """Every seed's verdicts → one PropertyResult-shaped verdict per predicate (the catalogue's evidence)."""
    out: dict[str, dict[str, Any]] = {}
    for pred in PREDICATES:
        evals = sum(r.verdicts[pred]["evaluations"] for r in results if r.verdicts)
        bad = [f"seed {r.plan.seed:#x}: {v}" for r in results if r.verdicts for v in r.verdicts[pred]["violations"]]
        if bad:
            out[pred] = {"status": "failed", "evaluations": evals, "reason": "; ".join(bad)[:300]}
        elif evals:
            out[pred] = {"status": "passed", "evaluations": evals}
        else:
            reason = why_not or {"I-T3-DRAIN": "no target-term fault was injected",
                                 "I-T3-LOST-WRITE": "no acknowledged write was read back across a covered fault"
                                 }.get(pred, "no seed was judged")
            out[pred] = {"status": "not_judged", "evaluations": 0, "reason": reason}
    return out


def not_judged_across(profile: TargetProfile) -> list[str]:
    """The faults of ``profile`` across which the durability model judges no write ("target-kill",
    "service-kill memcached"): the tally says so, rather than counting such keys as passed."""
    out = []
    for kind in profile.faults:
        for subject in (profile.services if kind in SERVICE_KINDS else ("target",)):
            if not covers({"kind": kind, "subject": subject}, durable=profile.durable,
                          durable_services=profile.durable_services):
                out.append(kind if subject == "target" else f"{kind} {subject}")
    return out


class Tier3:
    """Deterministic seed replay with real faults."""

    number = 3
    key = "tier_3"
    sidecar = "tier3_tally.json"

    def __init__(self) -> None:
        self.results: list[SeedResult] = []
        self.skipped: dict[str, str] = {}
        self.profile: TargetProfile | None = None
        self.shrinks: dict[str, dict[str, Any]] = {}
        self._stopped = ""
        self._errors: list[str] = []
        self.opts = Tier3Options()

    def applies(self, openapi: Path | None) -> str | None:
        """Tier 3 needs the key/value contract, or a producer → reader pair, in the target's OpenAPI document."""
        try:
            return tier3_contract(openapi)
        except UsageError as e:
            return str(e)

    def configure(self, options: Tier3Options) -> None:
        """--seeds, --faults, --durable, --recovery-deadline (ValidateOptions.tier_options[3])."""
        self.opts = options

    async def run(self, env: TierEnv, budget_s: float) -> None:
        opts = replace(self.opts, durable=self.opts.durable or env.durable)  # --durable, or the refapp declares it
        if env.control is None:
            self._stopped = "no target control: Tier 3 cannot inject faults"
            return
        session = Session(env.address, env.control, opts, services=tuple(env.services),
                          health_path=env.paths.health)
        await session.start()
        try:
            await self._run(env, session, opts, budget_s)
        finally:
            await session.close()

    async def _run(self, env: TierEnv, session: Session, opts: Tier3Options, budget_s: float) -> None:
        kinds, self.skipped = session.kinds()
        try:
            self.profile = session.profile(env.openapi)
        except UsageError as e:
            self._stopped = str(e)
            env.say(f"  tier 3: {e}")
            return
        explicit = corpus.parse_seeds(opts.seeds)
        deadline = time.monotonic() + budget_s
        for i in range(len(explicit) if explicit is not None else corpus.SIZE):
            if env.stop():
                self._stopped = "interrupted"
                break
            spent = [r.timeline.get("duration_s", 0.0) for r in self.results]
            mean = sum(spent) / len(spent) if spent else 0.0
            if explicit is None and self.results and time.monotonic() + mean > deadline:
                break  # as many as fit the budget, at least one
            seed = explicit[i] if explicit is not None else corpus.seed_at(i)
            self._report_seed(env, i, seed, explicit, mean, deadline)
            res = await session.run(Plan.from_seed(seed, self.profile))
            self.results.append(res)
            env.say(f"  tier 3 seed {seed:#x} ({','.join(res.plan.kinds())}): {res.outcome}"
                    + (f" {','.join(res.failed)}" if res.failed else "") + (f" {res.error}" if res.error else ""))
            if res.error:
                self._errors.append(f"seed {seed:#x}: {res.error}")
            for pred in res.failed:
                if pred not in self.shrinks and not env.stop():
                    await self._incident(env, session, opts, res, pred)

    @staticmethod
    def _report_seed(env: TierEnv, i: int, seed: int, explicit: list[int] | None, mean: float,
                     deadline: float) -> None:
        """The progress line: seed i/n (i/~n when as many as fit the budget run); with explicit
        seeds, the seeds left x their mean is the cell's time left (they run whatever the budget)."""
        progress = reporter_of(env.options.progress if env.options else None)
        if explicit is not None:
            of = f"/{len(explicit)}"
            if mean > 0:
                progress.unit_left((len(explicit) - i) * mean)
        else:
            of = f"/~{i + 1 + int(max(0.0, deadline - time.monotonic() - mean) / mean)}" if mean > 0 else ""
        progress.sub(f"tier 3 seed {i + 1}{of} {seed:#x}")

    async def _incident(self, env: TierEnv, session: Session, opts: Tier3Options, res: SeedResult,
                        pred: str) -> None:
        """The first failing seed of a predicate: incident, dossier, shrunk plan, replay command."""
        seed = f"{res.plan.seed:#x}"
        base = opts.replay_command or "probatorium replay"
        replay = f"{base} --seed {seed}"
        first = res.verdicts[pred]["violations"][0]
        # A seed runs on the target the seed before it left (healthy by its probes, maybe with latent
        # damage, e.g. pooled backend connections broken by a service-kill): name that seed, and the
        # run of both, for when the seed alone does not reproduce.
        prev = self.results[-2] if len(self.results) > 1 and self.results[-1] is res else None
        extra: dict[str, Any] = {"seed": seed, "plan_digest": res.plan.digest(), "replay": replay,
                                 "violations": res.verdicts[pred]}
        pair = ""
        if prev is not None:
            extra["previous_seed"] = {"seed": f"{prev.plan.seed:#x}", "faults": prev.plan.kinds()}
            pair = (base.replace("probatorium replay", "probatorium validate", 1)
                    + f" --tiers 3 --seeds {prev.plan.seed:#x},{seed}")
            extra["replay_after_previous"] = pair
        inc = env.report(Evidence(predicate=pred, detail=f"seed {seed}: {first}"[:300], case=f"seed-{seed}",
                                  seed=res.plan.seed, extra=extra))
        self.shrinks[pred] = {"seed": seed}
        if inc is None or env.run_dir is None:
            return
        inc.seed = seed
        folder = Path(env.run_dir) / inc.dossier
        write_text_atomic(folder / "plan.json", res.plan.to_json(indent=2))
        write_json_atomic(folder / "timeline.json", res.timeline)
        before = extra.get("previous_seed") or {}
        after = (f"# if the seed alone does not reproduce it, run it after the seed before it "
                 f"({before['seed']}: {','.join(before['faults']) or 'no fault'}):\n# {pair}\n") if pair else ""
        write_text_atomic(folder / "replay.sh",
                          f"#!/bin/sh\n# reproduce {pred} (exit 1 when it fails)\n{replay}\n{after}")
        env.say(f"  tier 3: shrinking seed {seed} for {pred} (<= {opts.shrink_replays} replays, {opts.shrink_s:.0f}s)")
        minimal, info = await session.shrink(res.plan, pred)
        write_text_atomic(folder / "shrink" / "minimal-plan.json", minimal.to_json(indent=2))
        write_json_atomic(folder / "shrink" / "shrink.json", {**info, "replay": f"{base} --plan "
                                                              f"{(Path(inc.dossier) / 'shrink' / 'minimal-plan.json').as_posix()}"})
        self.shrinks[pred] = {"seed": seed, **info}

    # ---- what the cell reads ---------------------------------------------------------------------
    def tallies(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seeds_attempted": len(self.results),
                               "seeds_passed": sum(r.outcome == "passed" for r in self.results),
                               "seeds_failed": sum(r.outcome == "failed" for r in self.results),
                               "seeds_errored": sum(r.outcome == "errored" for r in self.results),
                               "requests": sum(len(r.timeline.get("requests", ())) for r in self.results),
                               # reads left out of I-T3-LOST-WRITE: their write met a fault the durability
                               # model does not cover (judges.lost_write)
                               "lost_write_excused": sum(r.verdicts.get("I-T3-LOST-WRITE", {}).get("excused", 0)
                                                         for r in self.results if r.verdicts)}
        for kind in FAULT_KINDS:
            out[f"faults_{kind}"] = sum(1 for r in self.results for f in r.timeline.get("faults", ())
                                        if f["kind"] == kind and f["applied"])
        return out

    def reasons(self) -> dict[str, str]:
        return {"tier_3": self._stopped} if self._stopped else {}

    def evidence(self) -> dict[str, Any]:
        why = self._stopped if not self.results else ""
        return {"tier3": aggregate(self.results, self.skipped, self.profile, why)}

    def detail(self) -> dict[str, Any]:
        return {"profile": self.profile.as_dict() if self.profile else None, "fault_kinds_skipped": self.skipped,
                "writes_not_judged_across": not_judged_across(self.profile) if self.profile else [],
                "recovery_deadline_s": self.opts.recovery_deadline_s,
                "grace_s": self.opts.grace_s, "shrinks": self.shrinks,
                "seeds": [r.as_dict() for r in self.results]}

    def stopped_reason(self) -> str:
        return self._stopped

    def internal_errors(self) -> list[str]:
        return list(self._errors)
