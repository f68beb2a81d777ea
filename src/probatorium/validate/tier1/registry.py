"""The Tier 1 slice registry: the only place slice names, shares and thresholds live.

SPEC.md §5: walkers share the concurrency C — markov ~60 % (from C ≥ 1),
adversarial ~20 % (C ≥ 1), h2c ~10 % (C ≥ 10), ws ~5 % and sse ~5 % (C ≥ 20).
The CLI's choices, the schedule's walker split, the results' tally keys and
the console summary all read this table. Adding a slice is one module (a
class implementing :class:`.base.Slice`) plus one :func:`register` call here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .base import Slice, SliceContext


@dataclass(frozen=True)
class SliceInfo:
    """One registered slice."""

    name: str  # the --slices name
    tally_key: str  # its sub-tally in a cell's tier_1
    share: float  # share of the walkers
    activates_at: int  # the concurrency from which it joins without --slices
    sent_counter: str  # the counter of its requests sent (summed into requests_sent)
    build: Callable[[SliceContext], Slice]
    summary: str  # one line for --help and the docs


SLICES: dict[str, SliceInfo] = {}


def register(info: SliceInfo) -> SliceInfo:
    """Add a slice to the registry (names are unique)."""
    if info.name in SLICES:
        raise ValueError(f"slice {info.name!r} is registered twice")
    SLICES[info.name] = info
    return info


def slice_names() -> tuple[str, ...]:
    return tuple(SLICES)


def tally_keys() -> dict[str, str]:
    """Slice name → its tier_1 sub-tally key."""
    return {s.name: s.tally_key for s in SLICES.values()}


# ---- the slices -------------------------------------------------------------------------
# Each builder imports its slice lazily: a run that does not use a slice never imports it.

def _markov(ctx: SliceContext) -> Slice:
    from .markov.slice import MarkovSlice

    openapi = ctx.openapi if ctx.openapi is not None and ctx.openapi.is_file() else None
    return MarkovSlice(*ctx.address(), openapi=openapi, markov=ctx.markov, seed=ctx.seed("markov"),
                       report=ctx.report, alive=ctx.alive, recover=ctx.recover, crashlog=ctx.crashlog,
                       held=ctx.streams)


def _adversarial(ctx: SliceContext) -> Slice:
    from .adversarial.runner import AdversarialSlice, sweep_targets
    from .adversarial.slow import SlowConfig

    return AdversarialSlice(*ctx.address(), echo_path=ctx.paths.echo, health_path=ctx.paths.health,
                            seed=ctx.seed("adversarial"), quiet_timeout=ctx.quiet_timeout, report=ctx.report,
                            alive=ctx.alive, recover=ctx.recover, sweep=sweep_targets(ctx.operations, ctx.paths),
                            crashlog=ctx.crashlog, say=ctx.say, held=ctx.streams, identity=ctx.identity,
                            slow=SlowConfig(connections=ctx.slowloris_connections),
                            debug_path=ctx.paths.debug)  # wt-smuggle (issue 12): counter evidence


def _h2c(ctx: SliceContext) -> Slice:
    from .h2c.runner import H2cChurnSlice

    return H2cChurnSlice(*ctx.address(), echo_path=ctx.paths.echo, seed=ctx.seed("h2c"), report=ctx.report,
                         alive=ctx.alive, recover=ctx.recover, timeout=ctx.quiet_timeout)


def _ws(ctx: SliceContext) -> Slice:
    from .ws.slice import WsTortureSlice

    return WsTortureSlice(*ctx.address(), ws_path=ctx.paths.ws, seed=ctx.seed("ws"), report=ctx.report,
                          alive=ctx.alive, recover=ctx.recover, identity=ctx.identity)


def _sse(ctx: SliceContext) -> Slice:
    from .sse.runner import SseKillSlice

    return SseKillSlice(*ctx.address(), sse_path=ctx.paths.sse, debug_path=ctx.paths.debug, seed=ctx.seed("sse"),
                        report=ctx.report, alive=ctx.alive, recover=ctx.recover, held=ctx.streams)


register(SliceInfo("markov", "markov", 0.60, 1, "requests", _markov,
                   "session-shaped traffic from markov.yaml over the OpenAPI operations"))
register(SliceInfo("adversarial", "adversarial", 0.20, 1, "adv_sent", _adversarial,
                   "raw HTTP/1.1 cases from the RFC 9110/9112 catalogue"))
register(SliceInfo("h2c", "h2c_churn", 0.10, 10, "h2c_sent", _h2c, "h2c upgrade preambles, valid and invalid"))
register(SliceInfo("ws", "ws_torture", 0.05, 20, "ws_sent", _ws, "RFC 6455 handshakes and bad frames"))
register(SliceInfo("sse", "sse_kill", 0.05, 20, "sse_sent", _sse, "SSE streams held, then reset"))
