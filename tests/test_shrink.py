"""ddmin on its own: pure oracles over plain lists, no sockets (probatorium.shrink)."""

from __future__ import annotations

import asyncio
import time

from probatorium.shrink import ShrinkResult, ddmin


def shrink(items, test, **kw):
    return asyncio.run(ddmin(items, test, **kw))


def a_before_b(calls: list):
    async def test(seq):
        calls.append(list(seq))
        if "A" in seq and "B" in seq[seq.index("A"):]:
            return seq.index("B", seq.index("A"))
        return None
    return test


def test_ddmin_finds_a_before_b_among_noise() -> None:
    items = list("xyzAwvBuBtsAr")
    calls: list = []
    res = shrink(items, a_before_b(calls))
    assert res.sequence == ["A", "B"]
    assert res.complete and res.tests == len(calls) <= 50


def test_ddmin_cuts_after_the_failing_element() -> None:
    res = shrink(list("ABxyz"), a_before_b([]))
    assert res.sequence == ["A", "B"] and res.complete


def test_ddmin_respects_the_replay_bound() -> None:
    calls: list = []
    res = shrink(list("qwertyuiopAasdfghjklzxcvbnmB"), a_before_b(calls), max_tests=3)
    assert len(calls) == res.tests == 3 and not res.complete and "bound 3" in res.reason
    assert "A" in res.sequence and "B" in res.sequence  # still a failing sequence


def test_ddmin_respects_the_time_bound() -> None:
    calls: list = []
    res = shrink(list("xAyB"), a_before_b(calls), deadline=time.monotonic() - 1)
    assert calls == [] and not res.complete and res.sequence == list("xAyB")


def test_invalid_candidates_cost_no_replay() -> None:
    calls: list = []
    # "B" is only valid with the "x" before it (a captured value it needs)
    valid = lambda seq: "B" not in seq or ("x" in seq and seq.index("x") < seq.index("B"))  # noqa: E731
    res = shrink(list("xyAzxB"), a_before_b(calls), valid=valid)
    assert res.sequence in (list("xAB"), list("AxB")) and res.complete
    assert all(valid(c) for c in calls)



def test_ddmin_single_and_empty_sequences_are_already_minimal() -> None:
    calls: list = []
    for items in ([], ["B"]):
        res = shrink(items, a_before_b(calls))
        assert res == ShrinkResult(list(items), 0, True, res.reason) and "1-minimal" in res.reason
    assert calls == []


def test_ddmin_keeps_equal_elements_distinct() -> None:
    # the failure needs three equal elements; positions, not values, identify them
    async def three_xs(seq):
        at = [i for i, c in enumerate(seq) if c == "x"]
        return at[2] if len(at) >= 3 else None  # fails at the third "x"

    res = shrink(list("xaxbxcx"), three_xs)
    assert res.sequence == ["x", "x", "x"] and res.complete


def test_ddmin_never_tests_a_candidate_twice() -> None:
    calls: list = []
    shrink(list("abcdefghAijklmnopB"), a_before_b(calls))
    assert len(calls) == len({tuple(c) for c in calls})


def test_ddmin_result_still_fails_the_oracle() -> None:
    items = list("qAwBeAr")
    res = shrink(items, a_before_b([]))
    assert asyncio.run(a_before_b([])(res.sequence)) == len(res.sequence) - 1
