"""Tier 2: RESTler-style stateful API fuzzing (SPEC.md §5, §9).

`exchange` (the recorded exchange and the step language) and `checks` (the
checker registry) are pure and standard-library only, so a reproducer embeds
them verbatim and judges with the very rules the run judged with.
"""
