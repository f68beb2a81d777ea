"""The bisect search (pure): both endpoints first, then halving; skips set aside (git bisect's rules)."""

from __future__ import annotations

import pytest

from probatorium.bisect.search import PremiseError, bisect_releases


def run(states: list[str], old: str = "good", **kw):
    calls: list[int] = []

    def probe(i: int) -> str:
        calls.append(i)
        return states[i]

    return bisect_releases(len(states), old, probe, **kw), calls


@pytest.mark.parametrize("first_bad", range(1, 9))
def test_finds_every_boundary_in_log_probes(first_bad):
    states = ["good"] * first_bad + ["bad"] * (9 - first_bad)
    res, calls = run(states)
    assert (res.lo, res.hi, res.undecided) == (first_bad - 1, first_bad, [])
    assert calls[:2] == [0, 8] and len(set(calls)) == len(calls) <= 2 + 3  # ceil(log2(7)) = 3


def test_fixed_direction_old_state_bad():
    res, _ = run(["bad", "bad", "bad", "good"], old="bad")
    assert (res.lo, res.hi) == (2, 3)


def test_skip_next_to_the_boundary_leaves_it_undecided():
    res, calls = run(["good", "good", "skip", "bad", "bad"])
    assert (res.lo, res.hi, res.undecided) == (1, 3, [2])
    assert sorted(calls) == [0, 1, 2, 3, 4]


def test_skip_away_from_the_boundary_is_walked_around():
    res, _ = run(["good", "skip", "skip", "good", "bad", "bad", "bad"])
    assert (res.lo, res.hi, res.undecided) == (3, 4, [])


@pytest.mark.parametrize("states, old", [(["bad", "bad"], "good"), (["good", "good"], "good"),
                                         (["skip", "bad"], "good"), (["good", "bad"], "bad")])
def test_wrong_premise_is_an_error_not_an_answer(states, old):
    with pytest.raises(PremiseError):
        run(states, old=old)


def test_probe_budget_leaves_the_rest_undecided():
    res, calls = run(["good"] + ["bad"] * 15, max_probes=3)
    assert len(calls) == 3 and res.lo == 0 and res.undecided == list(range(1, res.hi))
