"""Resizing a template onto a target of another depth and width (DESIGN.md 1.4), one concept a module:

axis_maps.py       AxisMap: how an axis of one size becomes another (select, first, slice, interpolate)
plan.py            plan_resize() -> ResizePlan: every check, the group matches and their maps, once
remainder.py       the dense remainder (stem, norms, biases, head) mapped by the same rules
target_weights.py  target_weights(): template + scalers + remainder -> the target's tensors, differentiable
learn.py           LearnConfig and the ``learn`` rule: the target's scalers trained on a copy
report.py          InitReport: where each target tensor came from
initialize.py      initialize(): plan -> (learn) -> target_weights under no grad -> write + report
initializers.py    the registry of initializers (random, weight selection, TLEG, templates, ...)

The public names are exported by :mod:`tucker_init`. This package imports nothing itself: the
template kinds use its axis maps, and its other modules build on the kinds.
"""
