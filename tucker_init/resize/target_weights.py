"""target weights = f(template, scalers, remainder; the target's depth and width), as one
differentiable function (DESIGN.md 1.4).

:func:`target_weights` is what :func:`~tucker_init.initialize` evaluates without grad and writes
into the target; sub-network pre-training evaluates it with grad on a live
:class:`~tucker_init.FactorizedModel` and runs a narrower / shallower target on the result::

    plan = plan_resize(fm, narrow).to(device)          # once: all checks, all index maps
    for x, y in loader:
        weights = target_weights(fm, narrow, plan=plan)  # grads reach fm's core, scalers, remainder
        loss = F.cross_entropy(torch.func.functional_call(narrow, weights, (x,)), y)
        loss.backward()
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from backbones import BackboneAdapter

from ..templates.factorized import FactorizedModel, master_dtype
from ..templates.kinds import get_kind
from ..templates.template import WeightTemplate, reconstruct_group
from .new_blocks import identity_blocks
from .plan import ResizePlan, SourceTensors, plan_resize, source_tensors
from .remainder import map_remainder
from .report import init_state

__all__ = ["resized_factors", "target_weights"]


def resized_factors(
    plan: ResizePlan, source: SourceTensors, dtype: torch.dtype, seed: int = 0
) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
    """The target's template and scalers: the source's template tensors keyed for the target,
    and its scalers resized by each match's depth and width maps (Tucker ``X (L*S, r1) ->
    (L'*S, r1)``, ``U, V (d, r) -> (d', r)``; Kronecker ``S``), all in ``dtype``. Rows that a
    wider target adds are random with the source rows' scale, drawn from ``seed``."""
    kind = get_kind(plan.source_config.method)
    generator = torch.Generator().manual_seed(seed)
    scalers = []
    for m in plan.matches:
        resized = kind.resize_scalers(
            source.scalers[m.source],
            plan.source_config.ranks[m.source],
            m.depth,
            m.width,
            plan.source_layout.groups[m.source],
            plan.target_layout.groups[m.target],
            generator,
        )
        scalers.append({k: v.to(dtype) for k, v in resized.items()})
    template = {tgt: source.template[src].to(dtype) for src, tgt in plan.template_keys}
    return template, scalers


def _fresh_features(tensor: Tensor, fresh: Tensor, generator: torch.Generator) -> Tensor:
    """Width ``zero_fanout``'s new output channels of a stacked group ``(n, d', d'[, kh, kw])``:
    independent noise with each slice's scale (the std of its trained block), reading no new channel.

    Rows reconstructed from the template's scalers would be fixed mixtures of the trained rows,
    the same mixture in every layer: copies of trained features, which fine-tuned no better than
    random init (README, "Widening"); independent noise gives features of their own.
    """
    fresh = fresh.to(tensor.device)
    trained = tensor[:, ~fresh][:, :, ~fresh]
    scale = trained.detach().flatten(1).std(dim=1).view(-1, *[1] * (tensor.ndim - 1))
    shape = (tensor.shape[0], int(fresh.sum()), *tensor.shape[2:])
    noise = torch.randn(shape, generator=generator, dtype=torch.float64).to(tensor) * scale
    noise[:, :, fresh] = 0
    return tensor.index_copy(1, fresh.nonzero().flatten(), noise)


def _templated_weights(
    plan: ResizePlan,
    template: Mapping[str, Tensor],
    scalers: list[dict[str, Tensor]],
    state: Mapping[str, Tensor],
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """Every templated weight of the target, ``(a*d', b*d'[, kh, kw])``, in its dtype and device;
    under width ``zero_fanout`` the new output channels are fresh features drawn from ``generator``."""
    weights: dict[str, Tensor] = {}
    for m, s in zip(plan.matches, scalers, strict=True):
        tensor = reconstruct_group(plan.config, plan.target_layout, m.target, template, s)  # (L'*S, d', d')
        if m.width.zero_fanout and m.width.has_fresh:
            tensor = _fresh_features(tensor, m.width.fresh, generator)
        weights.update(plan.target_layout.groups[m.target].unstack(tensor))
    return {k: v.to(device=state[k].device, dtype=state[k].dtype) for k, v in weights.items()}


def target_weights(
    source: WeightTemplate | FactorizedModel,
    target: nn.Module,
    *,
    depth: str | None = None,
    width: str | None = None,
    adapter: BackboneAdapter | str | None = None,
    seed: int = 0,
    plan: ResizePlan | None = None,
) -> dict[str, Tensor]:
    """The tensors of ``target``'s state that ``source`` determines, by state-dict key.

    Templated weights are reconstructed from the source's template and its scalers resized to the
    target's depth and width; the remainder (stem, embeddings, norms, biases, head, BN statistics)
    is mapped by the same rules (see :mod:`tucker_init.resize.remainder`). Tensors without a usable
    source are left out (the target keeps them); entries of fresh channels (a target wider than
    the template) hold the target's own values, detached. Nothing is written: pass the result to
    ``torch.func.functional_call(target, weights, args)`` or copy it in.

    With a :class:`~tucker_init.FactorizedModel` ``source`` and grad enabled, the result is
    differentiable in its template, scalers and remainder parameters (not its ``scaler_hook``).
    An unchanged remainder tensor may be returned as the source's tensor itself.

    Args:
        source: a :class:`~tucker_init.WeightTemplate` or a live :class:`~tucker_init.FactorizedModel`.
        target: a model of the source's family (any depth and width); read, never modified.
        depth, width: the rules when no ``plan`` is given (default ``"interpolate"`` / ``"slice"``;
            see :func:`~tucker_init.resize.plan.plan_resize`); with a ``plan`` they may only repeat its own.
        adapter: the target's adapter, when no ``plan`` is given.
        seed: seeds the random scaler rows of a width larger than the template's, width
            ``zero_fanout``'s new channels and depth ``identity``'s new blocks.
        plan: from :func:`~tucker_init.resize.plan.plan_resize` (reuse it across calls: it holds
            every check and index map); made here when ``None``.

    Returns:
        state-dict key -> tensor of the target's shape, dtype and device.

    Raises:
        TypeError, ValueError: see :func:`~tucker_init.resize.plan.plan_resize`; a ``plan`` made for
            another template or with other rules.
    """
    if plan is None:
        plan = plan_resize(source, target, depth or "interpolate", width or "slice", adapter)
    elif not isinstance(plan, ResizePlan):
        raise TypeError(f"plan must be a ResizePlan from plan_resize() or None, found {type(plan).__name__}")
    else:
        _check_repeats(plan, depth, width, adapter)
    tensors = source_tensors(source)
    plan.check_source(tensors)
    state = init_state(target)
    # Template and scalers in the target's dtype, at least float32 (see master_dtype).
    template, scalers = resized_factors(plan, tensors, master_dtype(state.values()), seed)
    # zero_fanout's new channels: one stream each for the remainder's and the templated weights',
    # apart from the scalers' rows (seed) so that either can change without moving the others.
    remainder_draws, feature_draws = (torch.Generator().manual_seed(seed + k) for k in (2, 1))
    remainder = map_remainder(plan.remainder, tensors.state, state, target, plan.adapter, remainder_draws)
    weights = remainder | _templated_weights(plan, template, scalers, state, feature_draws)
    if plan.new_blocks:  # depth identity's new blocks: a stream of their own (seed + 3)
        weights = identity_blocks(weights, plan.new_blocks, state, target, torch.Generator().manual_seed(seed + 3))
    return weights


def _check_repeats(plan: ResizePlan, depth: str | None, width: str | None, adapter: object) -> None:
    """With a plan, the rules are the plan's: arguments that say otherwise are a mistake."""
    for name, given, planned in (("depth", depth, plan.depth), ("width", width, plan.width)):
        if given is not None and given != planned:
            raise ValueError(f"{name}={given!r} differs from the plan's {name}={planned!r}; pass one of them")
    if adapter is not None and adapter is not plan.adapter and adapter != plan.adapter.family:
        raise ValueError("adapter differs from the plan's; the plan's adapter is used, pass one of them")
