"""Delta debugging (Zeller & Hildebrandt, "Simplifying and Isolating Failure-Inducing Input", 2002).

`ddmin` shrinks a failing sequence to a shorter one that still fails, for any
element type and any asynchronous oracle: Tier 1's Markov slice shrinks request
sequences with it, Tier 2 and Tier 3 reuse it for their sequences and plans.

Two twists over the textbook algorithm, both for sequences whose replay can
stop early: the oracle returns *where* a candidate failed (the candidate is
cut after that element), and a `valid` predicate rejects candidates without
running the oracle (e.g. a request that uses a value no earlier request
captures). Both the number of oracle calls and the wall time are bounded; the
result says whether the search finished (1-minimal) or hit a bound.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_MAX_TESTS = 50


@dataclass
class ShrinkResult(Generic[T]):
    """The shortest failing sequence found, and how the search ended."""

    sequence: list[T]
    tests: int  # oracle calls (replays)
    complete: bool  # True: 1-minimal (no single element can be dropped); False: a bound stopped it
    reason: str = ""


async def ddmin(items: Sequence[T], test: Callable[[list[T]], Awaitable[int | None]], *,
                max_tests: int = DEFAULT_MAX_TESTS, deadline: float | None = None,
                valid: Callable[[list[T]], bool] | None = None) -> ShrinkResult[T]:
    """Shrink `items`, which fail `test`, to a shorter failing sequence.

    `test(candidate)` returns the index of the element at which the candidate fails, or None
    when it does not fail; a failing candidate is cut after that element. Candidates `valid`
    rejects, and candidates already tried, cost no test. Stops after `max_tests` tests or at
    `deadline` (time.monotonic()), returning the best sequence so far with complete=False.
    """
    every = list(items)
    cur = list(range(len(every)))  # positions in `items`, so equal elements stay distinct
    tried: set[tuple[int, ...]] = set()
    tests = 0

    async def fails(c: list[int]) -> list[int] | None:
        nonlocal tests
        k = tuple(c)
        if k in tried or (valid is not None and not valid([every[i] for i in c])):
            return None
        tried.add(k)
        tests += 1
        at = await test([every[i] for i in c])
        return None if at is None else c[: at + 1]

    def bound() -> str:
        if tests >= max_tests:
            return f"stopped after {tests} replays (bound {max_tests})"
        if deadline is not None and time.monotonic() >= deadline:
            return "stopped at the time bound"
        return ""

    def result(complete: bool, why: str) -> ShrinkResult[T]:
        return ShrinkResult([every[i] for i in cur], tests, complete, why)

    n = 2
    while len(cur) >= 2:
        size = len(cur)
        n = min(n, size)
        chunks = [cur[i * size // n:(i + 1) * size // n] for i in range(n)]
        # complements first: with data dependencies, dropping a chunk is likelier to stay valid
        complements = [[x for j, ch in enumerate(chunks) if j != i for x in ch] for i in range(n)]
        reduced = False
        for is_chunk, cand in [(False, c) for c in complements] + [(True, c) for c in chunks]:
            why = bound()
            if why:
                return result(False, why)
            got = await fails(cand)
            if got is not None and len(got) < len(cur):
                cur = got
                n = 2 if is_chunk else max(n - 1, 2)
                reduced = True
                break
        if reduced:
            continue
        if n >= size:
            break
        n = min(2 * n, size)
    return result(True, "1-minimal: no single step can be dropped")
