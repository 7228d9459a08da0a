"""FactorizedModel and factorize(): a backbone whose block weights come from a template.

The model keeps a copy of the backbone with its templated weights removed; ``forward``
reconstructs them from template and scalers (one cached contraction per group) and runs the
backbone functionally with ``torch.func.functional_call``. Gradients flow to the template,
the scalers and the dense remainder parameters (stem, norms, biases, head).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from backbones import BackboneAdapter, get_adapter

from ..validation import check_choice, check_finite, check_int, check_materialized
from .kinds import get_kind
from .layout import ModelLayout, build_layout
from .template import KRONECKER_SHARING, TemplateConfig, reconstruct_group

__all__ = ["FactorizedModel", "TemplateConfig", "factorize"]

INITS = ("hosvd", "random")

ScalerHook = Callable[[int, dict[str, Tensor]], dict[str, Tensor]]


class FactorizedModel(nn.Module):
    """A backbone whose block weights are reconstructed from a shared template.

    Attributes:
        backbone: copy of the model; templated weights are removed (set to ``None``) and
            supplied at call time, the remainder parameters live here and train as usual.
        template: Tucker cores ``G (r1, r2, r3)`` keyed ``"shared"`` or ``"g{i}"``; or
            Kronecker templates ``T (k, a, b)`` keyed ``"all"`` or by component.
        scalers: per group ``"g{i}"``: Tucker ``X (S*L, r1)``, ``U (d, r2)``, ``V (d, r3)``;
            Kronecker ``S (S*L, k, d/a, d/b)``.
        layout: the groups and slices (:class:`~tucker_init.templates.layout.ModelLayout`).
        config: the :class:`TemplateConfig`.
        scaler_hook: optional ``f(group_index, scalers) -> scalers`` applied before each
            reconstruction (width-wise stochastic scaling uses it during pre-training).
    """

    def __init__(
        self,
        backbone: nn.Module,
        layout: ModelLayout,
        config: TemplateConfig,
        template: Mapping[str, Tensor],
        scalers: list[Mapping[str, Tensor]],
        adapter: BackboneAdapter,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.layout = layout
        self.config = config
        self.adapter = adapter
        self.template = nn.ParameterDict({k: nn.Parameter(v) for k, v in template.items()})
        self.scalers = nn.ModuleDict(
            {f"g{i}": nn.ParameterDict({k: nn.Parameter(v) for k, v in s.items()}) for i, s in enumerate(scalers)}
        )
        self.scaler_hook: ScalerHook | None = None
        # (key, weights, parameters) of the last reconstruction made without grad (see
        # reconstruct()); holding the parameters keeps their ids from being reused.
        self._cache: tuple[tuple[Any, ...], dict[str, Tensor], list[nn.Parameter]] | None = None
        for name in layout.templated_names():
            module_name, _, param_name = name.rpartition(".")
            backbone.get_submodule(module_name)._parameters[param_name] = None

    # -- reconstruction ------------------------------------------------------------------
    def group_tensor(self, index: int, apply_hook: bool = True) -> Tensor:
        """The unified tensor of group ``index``, shape ``(S*L, d, d)``.

        ``apply_hook=False`` ignores :attr:`scaler_hook` (exports must not carry a
        training-time width mask)."""
        scalers = dict(self.scalers[f"g{index}"].items())
        if apply_hook and self.scaler_hook is not None:
            scalers = self.scaler_hook(index, scalers)
        return reconstruct_group(self.config, self.layout, index, self.template, scalers)

    def reconstruct(self, apply_hook: bool = True) -> dict[str, Tensor]:
        """All templated weights, full parameter name -> tensor of the original shape, in the
        backbone's dtype (a float32 template of a bfloat16 model is rounded here, once).

        Without grad (``torch.no_grad()``, or no template / scaler parameter requires grad) the
        weights are cached and reused while the template and scalers are unchanged: an
        optimizer step, ``load_state_dict``, ``.to()``, an in-place edit or a new parameter
        object invalidates them (their version counters, storages and identities are
        compared). A reconstruction under an active :attr:`scaler_hook` (one without an
        ``active`` flag counts as active) neither uses nor fills the cache; one with grad drops
        it. Edits through ``.data`` bypass the version counter: call :meth:`clear_cache` after them.
        """
        dtype = next((p.dtype for p in self.backbone.parameters() if p.is_floating_point()), None)
        params = self._factor_parameters()
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        hooked = apply_hook and self.scaler_hook is not None and getattr(self.scaler_hook, "active", True)
        if needs_grad and getattr(self, "_cache", None) is not None:
            self._cache = None  # training: the next update makes it stale, free its memory
        cacheable = not needs_grad and not hooked
        if cacheable:
            key = (dtype, *((id(p), p.data_ptr(), p._version, p.dtype, p.device, p.shape) for p in params))
            cached = getattr(self, "_cache", None)  # None also for a model pickled before caching
            if cached is not None and cached[0] == key:
                return dict(cached[1])
        weights: dict[str, Tensor] = {}
        for i, group in enumerate(self.layout.groups):
            tensor = self.group_tensor(i, apply_hook)
            weights.update(group.unstack(tensor if dtype is None else tensor.to(dtype)))
        if cacheable:
            self._cache = (key, dict(weights), params)
        return weights

    def clear_cache(self) -> None:
        """Forget the weights cached by :meth:`reconstruct` (needed only after edits that
        bypass version counters, such as ``param.data.copy_(...)``)."""
        self._cache = None

    def _factor_parameters(self) -> list[nn.Parameter]:
        return [*self.template.values(), *(p for scalers in self.scalers.values() for p in scalers.values())]

    # -- calling the backbone -------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Reconstruct the weights once, then run ``backbone(*args, **kwargs)`` with them."""
        return torch.func.functional_call(self.backbone, self.reconstruct(), args, kwargs)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(backbone, *args, **kwargs)`` with reconstructed weights, for entry points
        other than ``forward`` (e.g. ``lambda m, x: m.forward_features(x)``)."""
        runner = _Runner(self.backbone, fn)
        weights = {f"backbone.{k}": v for k, v in self.reconstruct().items()}
        return torch.func.functional_call(runner, weights, args, kwargs)

    # -- leaving the factorization ----------------------------------------------------------
    @torch.no_grad()
    def materialize(self) -> nn.Module:
        """An ordinary dense copy of the backbone with the reconstructed weights in place
        (never masked by :attr:`scaler_hook`)."""
        dense = copy.deepcopy(self.backbone)
        for name, weight in self.reconstruct(apply_hook=False).items():
            module_name, _, param_name = name.rpartition(".")
            module = dense.get_submodule(module_name)
            module._parameters[param_name] = nn.Parameter(weight.detach().clone())
        return dense

    def num_template_parameters(self) -> int:
        """Parameters of the template and scalers (what replaces the block weights)."""
        return sum(p.numel() for p in self.template.parameters()) + sum(p.numel() for p in self.scalers.parameters())

    def extra_repr(self) -> str:
        groups = ", ".join(f"{g.name}: {g.shape}" for g in self.layout.groups)
        return f"method={self.config.method}, ranks={self.config.ranks[0]}, groups=[{groups}]"


class _Runner(nn.Module):
    def __init__(self, backbone: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(self.backbone, *args, **kwargs)


# -- building -----------------------------------------------------------------------------------
def master_dtype(tensors: Iterable[Tensor]) -> torch.dtype:
    """The dtype templates and scalers are kept in for weights like ``tensors``: theirs, but at
    least float32 (a float16 / bfloat16 template would round every factor, ~2 % off at full rank)."""
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    return torch.promote_types(dtype, torch.float32)


def factorize(
    model: nn.Module,
    ranks: tuple[int, int, int] | str = "full",
    method: str = "tucker",
    init: str = "hosvd",
    *,
    share: bool = True,
    kron_sharing: str = "all",
    adapter: BackboneAdapter | str | None = None,
    seed: int = 0,
) -> FactorizedModel:
    """Factorize the block weights of ``model`` into a weight template and scalers.

    Args:
        model: a timm ViT / DeiT, ResNet or ConvNeXt, or any module with ``adapter``. It is
            copied, never modified.
        ranks: Tucker ``(r1, r2, r3)`` (depth, output width, input width) or ``"full"``;
            Kronecker ``(k, a, b)``: k templates of size a x b.
        method: ``"tucker"`` (SWEET) or ``"kronecker"`` (WAVE / WeiT).
        init: ``"hosvd"`` decomposes the existing weights (lossless at full rank; for
            Kronecker the Van Loan-Pitsianis SVD); ``"random"`` draws a template whose
            weights have the backbone's RMS.
        share: Tucker: one core for all groups (CNN stages) rather than one per group.
        kron_sharing: Kronecker: ``"all"`` or per ``"component"``.
        adapter: a :class:`~backbones.BackboneAdapter`, a registered family, or ``None`` to
            detect it.
        seed: seeds the ``"random"`` init.

    Returns:
        A :class:`FactorizedModel`; its trainable parameters are the template, the scalers
        and the dense remainder of the backbone.

    Example::

        model = timm.create_model("vit_tiny_patch16_224", num_classes=10)
        fm = factorize(model, ranks=(48, 96, 96))
        logits = fm(images)          # (B, 10)
        dense = fm.materialize()     # an ordinary timm model
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, found {type(model).__name__}")
    kind = get_kind(method)
    check_choice("init", init, INITS)
    check_choice("kron_sharing", kron_sharing, KRONECKER_SHARING)
    if not isinstance(share, bool):
        raise TypeError(f"share must be a bool, found {type(share).__name__}")
    seed = check_int("seed", seed, minimum=0)
    check_materialized(model)
    adapter = get_adapter(model, adapter)
    layout = build_layout(model, adapter)
    per_group = kind.check_ranks(ranks, layout, share)
    check_finite(model.named_parameters())
    check_finite(model.named_buffers(), kind="buffer")

    config = TemplateConfig(method, tuple(per_group), share, kron_sharing)
    backbone = copy.deepcopy(model)
    params = dict(backbone.named_parameters())
    with torch.no_grad():
        # float16 / bfloat16 weights are decomposed, and their template kept, in float32:
        # reconstruct() rounds to the backbone's dtype once, so full rank stays lossless.
        tensors = [group.stack(params).to(master_dtype(params.values())) for group in layout.groups]
        if init == "hosvd":
            template, scalers = kind.decompose(tensors, layout, config)
        else:
            template, scalers = kind.random(tensors, layout, config, torch.Generator().manual_seed(seed))
    fm = FactorizedModel(backbone, layout, config, template, scalers, adapter)
    return fm.train(model.training)
