"""initialize(): start a model of another depth and width from a weight template (DESIGN.md 1.4).

Given a template (core ``G`` frozen) made on a source model with groups of depth L and unit width d,
and a target whose matching groups have depth L' and width d', new scalers are derived per group:

- depth, ``X (L*S, r1) -> X' (L'*S, r1)`` (Kronecker: ``S (L*S, k, p, q)`` along L):
  ``select`` takes evenly spaced source layers ``round(linspace(0, L-1, L'))``; ``first`` the first
  L'; ``interpolate`` interpolates linearly over normalized depth, target layer ``l`` sits at
  source position ``l * (L-1) / (L'-1)``; ``learn`` starts from ``interpolate`` and trains.
- width, ``U (d, r2) -> U' (d', r2)`` and ``V`` alike (Kronecker: the ``p = d/a`` and ``q = d/b``
  axes of S): ``slice`` keeps the first d' rows; for d' > d it keeps all d rows and appends
  ``d' - d`` random rows drawn with each column's standard deviation (Kronecker: S's standard
  deviation), so the new channels have weights of the usual magnitude; ``interpolate`` resamples
  the rows linearly (Tucker only); ``zero_fanout`` is ``slice`` with the new rows of V (the
  input side; Kronecker: S's q axis) at zero, so no templated weight reads a new channel yet
  (the remainder's readers, e.g. the head, start at zero there too), and the templated weights'
  new output rows are independent noise of each weight's scale, not rows of U: random rows of U
  make every new channel one fixed mixture of the trained ones, in every layer alike;
  ``learn`` starts from ``slice`` and trains.

The dense remainder is mapped by the same rules (:mod:`tucker_init.resize.remainder`). The steps:
:func:`~tucker_init.resize.plan.plan_resize` (every check), then for ``learn`` training the
scalers on a copy (:mod:`tucker_init.resize.learn`), then
:func:`~tucker_init.resize.target_weights.target_weights` under no grad, written into the target
only once everything is computed: it stays an ordinary model of its own class with plain
parameters, and a failure leaves it as it was.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from backbones import BackboneAdapter

from ..templates.factorized import FactorizedModel
from ..templates.template import WeightTemplate, as_template
from ..validation import check_choice, check_int, check_materialized
from .axis_maps import DEPTH_RULES, WIDTH_RULES
from .learn import LearnConfig, learn_scalers, starting_rules
from .plan import plan_resize
from .report import InitReport, init_state
from .target_weights import target_weights

__all__ = ["initialize"]


@torch.no_grad()
def _write(state: Mapping[str, Tensor], values: Mapping[str, Tensor]) -> None:
    for name, value in values.items():
        state[name].copy_(value.detach().to(device=state[name].device, dtype=state[name].dtype))


def _require_learn(depth: str, width: str, learn: LearnConfig | None) -> None:
    if learn is None and "learn" in (depth, width):
        raise ValueError(
            f"depth={depth!r}, width={width!r}: the 'learn' rule needs "
            "learn=LearnConfig(data=..., steps=... or epochs=...); found learn=None"
        )
    if learn is not None and depth == "identity":
        # Learned scalers would rebuild the new blocks from the template: no longer the identity.
        raise ValueError(
            "depth='identity' starts new blocks as the identity, which learned scalers would overwrite; "
            "pass learn=None, or depth='interpolate' / 'learn' to learn scalers"
        )


def initialize(
    target_model: nn.Module,
    template: WeightTemplate | FactorizedModel | str | os.PathLike,
    depth: str = "interpolate",
    width: str = "slice",
    learn: LearnConfig | Mapping[str, Any] | None = None,
    *,
    return_report: bool = False,
    adapter: BackboneAdapter | str | None = None,
    seed: int = 0,
) -> nn.Module | tuple[nn.Module, InitReport]:
    """Initialize ``target_model`` (any depth and width) from a weight template, in place.

    Args:
        target_model: a freshly built model of the template's family (e.g. a timm ViT of another
            depth / width); its parameters are overwritten in place.
        template: a :class:`~tucker_init.WeightTemplate`, a :class:`~tucker_init.FactorizedModel`
            or the path of a template file.
        depth: ``"select"`` | ``"first"`` | ``"interpolate"`` | ``"identity"`` | ``"learn"``: how the
            depth scaler ``X (L*S, r1)`` becomes ``X' (L'*S, r1)``; block-level remainder tensors follow
            the same map. ``identity``: ``first``, or for a deeper target the template's layers in order
            with new blocks between them that start as the identity (not with ``learn``).
        width: ``"slice"`` (the first d' rows) | ``"select"`` (evenly spaced rows, weight
            selection's rule; not for wider targets) | ``"interpolate"`` | ``"zero_fanout"``
            (``slice`` whose new channels nothing reads yet: the weights reading them start at
            zero) | ``"learn"``: how ``U, V (d, r)`` become ``(d', r)``; remainder channel axes
            follow the same map. Kronecker: ``slice`` / ``zero_fanout`` / ``learn``.
        learn: a :class:`LearnConfig` (or dict of its fields) to train new scalers before writing
            the weights. Trained are the scalers whose rule is ``"learn"`` (X for depth, U and V
            for width; Kronecker S for either), or all of them when neither rule is ``"learn"``.
        return_report: also return an :class:`InitReport`.
        adapter: the target's backbone adapter (required for templates of the generic family).
        seed: seeds the random rows of a width larger than the template's and depth ``identity``'s new blocks.

    Returns:
        ``target_model`` (and the report when ``return_report``).

    Raises:
        ValueError: bad option values; a target of another family; a width the rule cannot reach
            (e.g. not a multiple of a Kronecker template's size); heads that would be split; blocks
            with other proportions (mlp ratio); a block structure that cannot be matched.

    Example::

        fm = factorize(vit_small, ranks=(64, 256, 256))
        tiny = timm.create_model("vit_tiny_patch16_224", num_classes=10)
        initialize(tiny, fm, depth="interpolate", width="slice")
    """
    if not isinstance(target_model, nn.Module):
        raise TypeError(f"target_model must be a torch.nn.Module, found {type(target_model).__name__}")
    check_choice("depth", depth, DEPTH_RULES)
    check_choice("width", width, WIDTH_RULES)
    learn = LearnConfig.coerce(learn)
    _require_learn(depth, width, learn)
    seed = check_int("seed", seed)
    check_materialized(target_model, "target_model")
    wt = as_template(template)  # a FactorizedModel is copied out (detached, on the CPU): it is never touched
    plan = plan_resize(wt, target_model, *starting_rules(depth, width), adapter=adapter)

    report = InitReport(method=f"{wt.config.method} template (depth={depth}, width={width})")
    if plan.remainder.note is not None:
        report.notes.append(plan.remainder.note)
    source, used = wt, plan
    if learn is not None:
        learned = learn_scalers(wt, target_model, plan, learn, depth=depth, width=width, seed=seed)
        report.losses = learned.losses
        report.notes.append(f"learned {learned.trained} for {learn.num_steps} steps, lr {learn.lr}")
        # The learned model is the target, factorized: an identity plan reads it out.
        source = learned.model
        used = plan_resize(source, target_model, "select", "slice", adapter=plan.adapter)
    with torch.no_grad():
        weights = target_weights(source, target_model, plan=used, seed=seed)

    # Everything is computed before the target is touched: a failure leaves it as it was.
    state = init_state(target_model)
    _write(state, weights)
    for name, source_name in plan.entries().items():
        report.set(name, source_name, state[name].shape)
    report.sort_like(state)
    return (target_model, report) if return_report else target_model
