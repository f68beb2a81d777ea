"""The Tier 3 predicates as pure functions over one seed's timeline (no I/O, no clocks).

A timeline (written by :mod:`.runner`, stored in ``tier3_tally.json`` and each dossier's
``timeline.json``) holds, on one clock (seconds since the seed started):

- ``requests``: ``{step, phase, conn, op, key, write, sent, done, status, error, got}`` — ``got``
  is what a read found: ``"<key>:<write>"`` (the value of that write), ``"absent"`` (404) or
  ``"garbled"`` (a 200 whose body is no value the plan wrote);
- ``faults``: ``{phase, kind, subject, start, end, applied, not_applicable, observed}``;
- ``recoveries``: ``{phase, kind, after, ok, elapsed, detail}`` — the health path and one read
  after a fault window ended.

Each judge returns ``{"evaluations": n, "violations": [one line each]}``; the catalogue
(:mod:`..invariants`) turns the verdicts of every seed into passed / failed / not_judged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_GRACE_S = 2.0
DEFAULT_RECOVERY_DEADLINE_S = 10.0
DRAIN_MIN_AGE_S = 0.1  # a request in flight this long before SIGTERM must be completed
ALWAYS_COVERED = frozenset({"target-stop", "fd-squeeze", "service-stop", "net-latency", "net-jitter",
                            "net-bandwidth", "net-reset", "net-stall", "net-slice", "net-halfclose", "net-netem"})
NEVER_DURABLE_SERVICES = frozenset({"memcached"})

Verdict = dict[str, Any]


def verdict(evaluations: int, violations: list[str]) -> Verdict:
    return {"evaluations": evaluations, "violations": violations}


def covers(fault: Mapping[str, Any], *, durable: bool, durable_services: Sequence[str] = ()) -> bool:
    """Whether the durability model expects acknowledged writes to survive this fault (SPEC.md §9)."""
    kind = fault.get("kind", "")
    if kind in ALWAYS_COVERED:
        return True
    if kind in ("target-kill", "target-term"):
        return durable
    if kind == "service-kill":
        subject = fault.get("subject", "")
        return subject in durable_services and subject not in NEVER_DURABLE_SERVICES
    return False


WRITES = ("put", "create")  # a key/value PUT, or a producer's create (a new resource per key)


def _acked(req: Mapping[str, Any]) -> bool:
    status = req.get("status")
    if req["op"] in WRITES:
        return status is not None and 200 <= status < 300
    return status in (204, 404)  # delete: gone either way


def _state(req: Mapping[str, Any]) -> str:
    return f"{req['key']}:{req['write']}" if req["op"] in WRITES else "absent"


def overlaps(fault: Mapping[str, Any], start: float, end: float) -> bool:
    """Whether the fault's window [start, end] (an unended fault: to the end of time) meets [start, end]."""
    f_end = fault.get("end")
    return fault["start"] <= end and (f_end is None or f_end >= start)


def lost_write(timeline: Mapping[str, Any], *, durable: bool, durable_services: Sequence[str] = ()) -> Verdict:
    """I-T3-LOST-WRITE: every key read back after recovery holds its last acknowledged write (or a
    later unacknowledged one), unless a fault the durability model does not cover came between.

    "Between" is an overlap: a fault window [start, end] that meets [the write's sent, the read's
    sent] excuses the read, also when the write was sent after the fault began (a server still
    answering during a graceful shutdown acknowledges it, then exits) or its ack came during the
    fault. For a producer's key the interval starts at its create (the id it answered may name
    another resource after a restart that forgot it). An excused read is left out of judging and
    counted (``excused``)."""
    reqs = timeline.get("requests", [])
    faults = [f for f in timeline.get("faults", []) if f.get("applied")]
    uncovered = [f for f in faults if not covers(f, durable=durable, durable_services=durable_services)]
    evaluations, excused, bad = 0, 0, []
    for read in (r for r in reqs if r["op"] == "verify" and r.get("got") is not None):
        history = sorted((r for r in reqs if r["op"] in (*WRITES, "delete") and r["key"] == read["key"]
                          and r["sent"] < read["sent"]), key=lambda r: r["sent"])
        acked = [i for i, r in enumerate(history) if _acked(r)]
        if not acked:
            continue  # nothing acknowledged: any state is allowed
        last = history[acked[-1]]
        # a producer's key is read by the id its create answered: a fault that may have forgotten the
        # resource since then (its id may name another resource now) excuses the read as well
        since = min([last["sent"], *(r["sent"] for r in history if r["op"] == "create" and _acked(r))])
        if any(overlaps(f, since, read["sent"]) for f in uncovered):
            excused += 1  # e.g. a SIGKILL (or SIGTERM) of a target not declared durable: not judged
            continue
        evaluations += 1
        allowed = {_state(last)} | {_state(r) for r in history[acked[-1] + 1:]}
        if read["got"] in allowed:
            continue
        across = ", ".join(sorted({f["kind"] for f in faults if overlaps(f, last["sent"], read["sent"])})) \
            or "no fault"
        bad.append(f"key {read['key']}: acknowledged {_state(last)} (status {last['status']} at "
                   f"{last['done']:.3f}s), read back {read['got']} at {read['sent']:.3f}s across {across}")
    out = verdict(evaluations, bad)
    out["excused"] = excused
    return out


def no_recovery(timeline: Mapping[str, Any]) -> Verdict:
    """I-T3-NO-RECOVERY: after every fault window, the health path and one read succeeded in time."""
    recs = timeline.get("recoveries", [])
    bad = [f"after {r['kind']} (ended {r['after']:.3f}s): {r.get('detail') or 'no recovery'} within "
           f"{r['elapsed']:.1f}s" for r in recs if not r.get("ok")]
    return verdict(len(recs), bad)


def _window(f: Mapping[str, Any], grace_s: float) -> tuple[float, float]:
    end = f.get("end")
    return f["start"], (float("inf") if end is None else end + grace_s)


def server_errors(timeline: Mapping[str, Any], grace_s: float = DEFAULT_GRACE_S) -> Verdict:
    """I-T3-5XX: no 5xx answer to a request that overlaps no fault window (+ grace)."""
    windows = [_window(f, grace_s) for f in timeline.get("faults", []) if f.get("applied")]
    answered = [r for r in timeline.get("requests", []) if r.get("status") is not None]
    bad = []
    for r in answered:
        if r["status"] < 500:
            continue
        done = r["done"] if r.get("done") is not None else r["sent"]
        if any(r["sent"] <= end and done >= start for start, end in windows):
            continue
        bad.append(f"{r['op']} key {r['key']} answered {r['status']} at {done:.3f}s, outside every fault window")
    return verdict(len(answered), bad)


def drain(timeline: Mapping[str, Any]) -> Verdict:
    """I-T3-DRAIN: on target-term, a request in flight for >= 100 ms when SIGTERM landed is completed,
    and the process exits within its grace period."""
    evaluations, bad = 0, []
    for f in (f for f in timeline.get("faults", []) if f.get("kind") == "target-term" and f.get("applied")):
        evaluations += 1
        observed = f.get("observed") or {}
        if observed.get("killed_after_grace"):
            bad.append(f"target-term at {f['start']:.3f}s: the process outlived its grace period "
                       f"({observed.get('grace_s', '?')} s)")
        for r in timeline.get("requests", []):
            if r.get("skipped"):
                continue
            in_flight = r["sent"] <= f["start"] - DRAIN_MIN_AGE_S and (r.get("done") is None or r["done"] > f["start"])
            if not in_flight:
                continue
            evaluations += 1
            if r.get("status") is None:
                bad.append(f"{r['op']} key {r['key']} sent {f['start'] - r['sent']:.3f}s before SIGTERM was cut: "
                           f"{r.get('error') or 'no response'}")
    return verdict(evaluations, bad)


def judge_timeline(timeline: Mapping[str, Any], *, durable: bool, durable_services: Sequence[str] = (),
                   grace_s: float = DEFAULT_GRACE_S) -> dict[str, Verdict]:
    """Every Tier 3 predicate's verdict for one seed."""
    return {"I-T3-LOST-WRITE": lost_write(timeline, durable=durable, durable_services=durable_services),
            "I-T3-NO-RECOVERY": no_recovery(timeline),
            "I-T3-5XX": server_errors(timeline, grace_s),
            "I-T3-DRAIN": drain(timeline)}


def failed(verdicts: Mapping[str, Verdict]) -> list[str]:
    """The predicates a seed's verdicts violate."""
    return [p for p, v in verdicts.items() if v["violations"]]
