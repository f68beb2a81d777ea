"""Tier 3: deterministic seed replay with real faults (SPEC.md §5, §9; docs/tier3.md).

A seed expands into a :class:`~.plan.Plan` (workload + fault schedule) for a
:class:`~.profile.TargetProfile`; :mod:`.runner` drives it against the target
through :mod:`probatorium.faults`, records a timeline, and :mod:`.judges` decides
the Tier 3 predicates from the timeline alone. :mod:`.corpus` names the seeds,
:mod:`.tier` is the tier unit the cell runs.
"""
