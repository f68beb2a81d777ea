"""Binary search over an ordered list of releases, with skips (git bisect's semantics).

Pure: the caller's ``probe(index)`` returns ``"good"``, ``"bad"`` or ``"skip"``. The oldest and
the newest release are probed first, so a wrong premise (the "good" release is bad by the check)
is reported instead of bisected. Between them the search keeps ``lo`` (the newest release in the
old state) and ``hi`` (the oldest in the new state) and probes the untested release nearest the
middle; a skipped release is set aside and its neighbours are tried. The answer is the boundary
``(lo, hi)``; when skipped releases remain between them, the first release of the new state is
one of those or ``hi``, and the result says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

STATES = ("good", "bad", "skip")


class PremiseError(Exception):
    """An endpoint is not in the state the user said it is in (or could not be decided)."""


@dataclass
class SearchResult:
    lo: int  # index of the last release in the old state
    hi: int  # index of the first release in the new state (or of the last candidate)
    undecided: list[int] = field(default_factory=list)  # skipped releases strictly between lo and hi
    probed: list[tuple[int, str]] = field(default_factory=list)  # (index, state) in probe order


def bisect_releases(n: int, old_state: str, probe: Callable[[int], str], max_probes: int | None = None) -> SearchResult:
    """Find where the releases ``0..n-1`` change from `old_state` (release 0's state) to the other.

    ``max_probes`` bounds the probes (default: every release once). Raises PremiseError when
    release 0 is not `old_state` or release n-1 is not the other state.
    """
    if n < 2:
        raise ValueError("need at least two releases")
    new_state = "bad" if old_state == "good" else "good"
    budget = n if max_probes is None else max_probes
    result = SearchResult(lo=0, hi=n - 1)

    def run(i: int) -> str:
        state = probe(i)
        if state not in STATES:
            raise ValueError(f"probe returned {state!r}")
        result.probed.append((i, state))
        return state

    for i, want in ((0, old_state), (n - 1, new_state)):
        got = run(i)
        if got != want:
            raise PremiseError(f"release #{i} is {got}, expected {want}")
    skipped: set[int] = set()
    while len(result.probed) < budget:
        candidates = [i for i in range(result.lo + 1, result.hi) if i not in skipped]
        if not candidates:
            break
        middle = (result.lo + result.hi) / 2
        i = min(candidates, key=lambda c: (abs(c - middle), c))
        state = run(i)
        if state == "skip":
            skipped.add(i)
        elif state == old_state:
            result.lo = i
        else:
            result.hi = i
    result.undecided = sorted(i for i in skipped if result.lo < i < result.hi)
    if any(i not in skipped for i in range(result.lo + 1, result.hi)):
        # the probe budget ran out with untested releases in the boundary: they are undecided too
        result.undecided = list(range(result.lo + 1, result.hi))
    return result
