"""Unit tests for the pure I-CONN-2 judge and the SSE body helpers."""

from __future__ import annotations

from probatorium.validate.tier1.sse.judge import (
    SETTLE_WINDOW,
    allowed,
    dechunk_prefix,
    judge_series,
    sse_events,
)


def series(values, held=0, dt=0.5):
    return [(i * dt, v, held if not callable(held) else held(i)) for i, v in enumerate(values)]


def test_allowance_is_held_plus_two_plus_five_percent() -> None:
    assert allowed(0) == 2 and allowed(20) == 23 and allowed(100) == 107


def test_no_sample_is_not_judged_never_passed() -> None:
    assert judge_series([]).status == "not_judged"
    r = judge_series([(0.0, None, 3), (0.5, None, 3)], final=True)
    assert r.status == "not_judged" and r.evaluations == 0


def test_within_allowance_passes() -> None:
    r = judge_series(series([20, 23, 22, 21], held=20) + series([5, 2, 0], held=0), final=True)
    assert r.status == "passed" and r.evaluations == 7


def test_excess_shorter_than_the_window_passes() -> None:
    # 9.5 s of excess after the walkers stop, then released: fine.
    vals = [10] * 20 + [0, 0]
    assert judge_series(series(vals), final=True).status == "passed"


def test_excess_longer_than_the_window_fails_with_the_worst_sample() -> None:
    vals = [10] * 22 + [9]  # 10.5 s > 10 s
    r = judge_series(series(vals), final=True)
    assert r.status == "failed" and r.excess_since == 0.0 and r.worst == (0.0, 10, 0)
    assert "10.5 s" in r.reason and str(int(SETTLE_WINDOW)) in r.reason


def test_a_dip_within_the_allowance_restarts_the_window() -> None:
    vals = [10] * 15 + [2] + [10] * 15
    assert judge_series(series(vals), final=True).status == "not_judged"  # still in excess at the end, < 10 s
    assert judge_series(series(vals), final=False).status == "passed"


def test_failed_polls_neither_break_nor_extend_a_run() -> None:
    vals = [10] * 10 + [None] * 4 + [10] * 10  # excess from 0 to 11.5 s with a gap
    assert judge_series(series(vals), final=True).status == "failed"


def test_excess_is_relative_to_what_the_validator_holds() -> None:
    held = lambda i: 40 if i < 30 else 0  # noqa: E731
    vals = [42] * 30 + [1, 0]
    assert judge_series(series(vals, held=held), final=True).status == "passed"
    vals = [45] * 30 + [1, 0]  # 45 > 40 + 2 + 2 for 14.5 s
    assert judge_series(series(vals, held=held), final=True).status == "failed"


def test_events_and_dechunking() -> None:
    body = b"id: 1\nevent: tick\ndata: {}\n\nid: 2\ndata: x\n\n: comment\n\nid: 3\ndata: y"
    assert sse_events(body) == 2
    assert sse_events(body.replace(b"\n", b"\r\n")) == 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b"data: a\n\n", b"data: b\n\n")) + b"5\r\ndat"
    assert dechunk_prefix(chunks) == b"data: a\n\ndata: b\n\n"
    assert dechunk_prefix(b"zz\r\n") == b""
