"""Initializers by name, behind one interface (DESIGN.md 1.6), like timm's model registry.

Every initializer is called as ``init_fn(target_model, source, **options) -> target_model``: it
writes into ``target_model`` in place and returns it, or ``(target_model, InitReport)`` with
``return_report=True``. An experiment can loop over methods::

    for name in list_initializers():
        model = build_target()
        get_initializer(name)(model, sources[name], **options[name])

Registered:

- ``random``: timm's default init (the target as built; ``seed=`` re-runs its init).
- ``weight_selection``: Xu et al. 2023, "Initializing Models with Larger Ones": from a larger
  dense source, every tensor by name, uniform element selection along each axis (evenly spaced
  indices) and the first N layers for depth (same names).
- ``linear_expansion``: TLEG / learngene: per block parameter, ``theta_l = A + (l/L) B``
  (l = 1..L) fitted by least squares over the source's layers and expanded to the target depth
  L'; width by the same uniform selection.
- ``kronecker``: a Kronecker template (WAVE / WeiT); new scalers learned when ``learn`` is given.
- ``tucker``: a Tucker template with the depth / width rules, nothing learned.
- ``tucker_learned``: a Tucker template, new scalers learned (``learn`` required).
- ``pretrained``: a dense source of the target's very size copied as is (direct pre-training).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from backbones import BackboneAdapter, get_adapter

from ..templates.factorized import FactorizedModel
from ..templates.layout import build_layout
from ..templates.template import WeightTemplate, as_template
from ..validation import as_int
from .axis_maps import uniform_indices
from .initialize import initialize
from .learn import LearnConfig
from .plan import match_groups
from .report import InitReport, init_state

__all__ = [
    "expand_linear",
    "fit_linear_expansion",
    "get_initializer",
    "list_initializers",
    "register_initializer",
    "uniform_indices",
    "uniform_select",
]

Initializer = Callable[..., Any]
_REGISTRY: dict[str, Initializer] = {}


def register_initializer(name: str) -> Callable[[Initializer], Initializer]:
    """Decorator registering ``fn(target_model, source, **options)`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"initializer name must be a non-empty str, found {name!r}")

    def decorate(fn: Initializer) -> Initializer:
        if not callable(fn):
            raise ValueError(f"register_initializer({name!r}) must decorate a callable, found {fn!r}")
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"an initializer named {name!r} is already registered ({_REGISTRY[name].__module__})")
        _REGISTRY[name] = fn
        return fn

    return decorate


def get_initializer(name: str) -> Initializer:
    """The initializer registered as ``name``; a ValueError lists the registered names."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown initializer {name!r}; registered initializers: {list_initializers()}")
    return _REGISTRY[name]


def list_initializers() -> list[str]:
    """Names of all registered initializers, sorted."""
    return sorted(_REGISTRY)


def _finish(target: nn.Module, report: InitReport, return_report: bool) -> nn.Module | tuple[nn.Module, InitReport]:
    report.sort_like(init_state(target))
    return (target, report) if return_report else target


def _dense(source: Any, argument: str = "source") -> nn.Module:
    if isinstance(source, FactorizedModel):
        return source.materialize()
    if isinstance(source, WeightTemplate | str | os.PathLike):
        raise ValueError(
            f"{argument} must be a dense nn.Module (or a FactorizedModel, which is materialized); "
            f"found a template ({type(source).__name__}): use the 'tucker' or 'kronecker' initializer"
        )
    if not isinstance(source, nn.Module):
        raise ValueError(f"{argument} must be an nn.Module, found {type(source).__name__}")
    return source


# ----------------------------------------------------------------------------------- random
@register_initializer("random")
def random_init(
    target_model: nn.Module, source: Any = None, *, seed: int | None = None, return_report: bool = False
) -> nn.Module | tuple[nn.Module, InitReport]:
    """timm's default initialization: the target as built (``source`` is ignored).

    With ``seed`` the target's init is re-run under ``torch.manual_seed(seed)`` (global RNG state
    restored afterwards): its ``init_weights()`` when it has one (timm ViT, ResNet), else
    ``reset_parameters()`` of every submodule.
    """
    if seed is not None:
        if as_int(seed) is None:
            raise ValueError(f"seed must be an int or None, found {type(seed).__name__} {seed!r}")
        seed = as_int(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if callable(getattr(target_model, "init_weights", None)):
                target_model.init_weights()
            else:
                for module in target_model.modules():
                    if callable(getattr(module, "reset_parameters", None)):
                        module.reset_parameters()
    report = InitReport("random")
    for name, value in init_state(target_model).items():
        report.set(name, "target-init", value.shape)
    return _finish(target_model, report, return_report)


# ------------------------------------------------------------------------- weight selection
def uniform_select(tensor: Tensor, shape: tuple[int, ...], name: str = "tensor") -> Tensor:
    """Uniform element selection of ``tensor`` down to ``shape``, axis by axis.

    Raises:
        ValueError: different number of axes, or ``shape`` larger than ``tensor`` on some axis.
    """
    shape = tuple(shape)
    if tensor.ndim != len(shape) or any(n_out > n_in for n_in, n_out in zip(tensor.shape, shape, strict=True)):
        raise ValueError(
            f"weight selection of {name!r}: the source's {tuple(tensor.shape)} cannot be reduced to the "
            f"target's {shape}; the source must be at least as large on every axis"
        )
    out = tensor
    for dim, n_out in enumerate(shape):
        if out.shape[dim] != n_out:
            out = out.index_select(dim, uniform_indices(out.shape[dim], n_out).to(out.device))
    return out


def _select_by_name(source_state: Mapping[str, Tensor], current: Tensor, name: str) -> tuple[Tensor, str] | None:
    src = source_state.get(name)
    if src is None:
        return None
    if src.shape == current.shape:
        return src, "copied"
    return uniform_select(src, tuple(current.shape), name), "selected"


@register_initializer("weight_selection")
def weight_selection(
    target_model: nn.Module, source: nn.Module, *, return_report: bool = False
) -> nn.Module | tuple[nn.Module, InitReport]:
    """Weight selection (Xu et al. 2023) from a larger dense ``source``.

    Each target tensor (parameters and float buffers) takes the source tensor of the same name,
    reduced by uniform element selection along every axis; matching names make depth the first
    N layers. Target tensors without a counterpart keep their own init.
    """
    source = _dense(source)
    source_state = source.state_dict()
    report = InitReport("weight_selection")
    with torch.no_grad():
        for name, current in init_state(target_model).items():
            picked = _select_by_name(source_state, current, name)
            if picked is None:
                report.set(name, "target-init", current.shape)
                continue
            current.copy_(picked[0].to(device=current.device, dtype=current.dtype))
            report.set(name, picked[1], current.shape)
    return _finish(target_model, report, return_report)


# ------------------------------------------------------------------------- linear expansion
def fit_linear_expansion(layers: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares ``A, B`` of ``theta_l = A + (l/L) B`` over layers l = 1..L.

    Args:
        layers: ``(L, ...)`` the same parameter of L consecutive layers.

    Returns:
        ``(A, B)``, each of shape ``layers.shape[1:]`` (for L = 1: ``A = theta_1, B = 0``).
    """
    L = layers.shape[0]
    x = layers.double()
    if L == 1:
        return layers[0].clone(), torch.zeros_like(layers[0])
    pos = torch.arange(1, L + 1, dtype=torch.float64) / L
    pos = pos.view(-1, *([1] * (x.ndim - 1)))
    mean_pos, mean_x = pos.mean(), x.mean(0)
    centered = pos - mean_pos
    B = (centered * (x - mean_x)).sum(0) / centered.pow(2).sum()
    A = mean_x - B * mean_pos
    return A.to(layers.dtype), B.to(layers.dtype)


def expand_linear(A: Tensor, B: Tensor, depth: int) -> Tensor:
    """``theta_l = A + (l/depth) B`` for l = 1..depth, shape ``(depth, ...)``."""
    pos = (torch.arange(1, depth + 1, dtype=torch.float64) / depth).to(A.dtype).view(-1, *([1] * A.ndim))
    return A.unsqueeze(0) + pos * B.unsqueeze(0)


@register_initializer("linear_expansion")
def linear_expansion(
    target_model: nn.Module,
    source: nn.Module,
    *,
    adapter: BackboneAdapter | str | None = None,
    return_report: bool = False,
) -> nn.Module | tuple[nn.Module, InitReport]:
    """TLEG linear expansion across depth from a dense ``source``.

    Per matched block group (see :func:`~tucker_init.resize.plan.match_groups`) and per tensor of
    a block, ``A, B`` are fitted over the source group's L layers and the target's L' layers get
    ``A + (l/L') B``; width by uniform selection. Tensors outside the groups by name, as in
    weight selection.
    """
    source = _dense(source)
    src_adapter = get_adapter(source, adapter)
    tgt_adapter = get_adapter(target_model, adapter)
    src_layout = build_layout(source, src_adapter)
    tgt_layout = build_layout(target_model, tgt_adapter)
    pairs = match_groups(src_layout, tgt_layout)
    source_state = source.state_dict()
    target_state = init_state(target_model)
    report = InitReport("linear_expansion")
    done: set[str] = set()
    with torch.no_grad():
        for i, j in pairs:
            src_blocks = src_layout.groups[i].block_names
            tgt_blocks = tgt_layout.groups[j].block_names
            prefix = f"{tgt_blocks[0]}."
            for rel in [k[len(prefix) :] for k in target_state if k.startswith(prefix)]:
                names = [f"{b}.{rel}" for b in tgt_blocks]
                layers = [source_state.get(f"{b}.{rel}") for b in src_blocks]
                done.update(names)
                if any(x is None for x in layers) or len({x.shape for x in layers}) != 1:  # type: ignore[union-attr]
                    for n in names:
                        report.set(n, "target-init", target_state[n].shape)
                    continue
                A, B = fit_linear_expansion(torch.stack(layers))  # type: ignore[arg-type]
                expanded = expand_linear(A, B, len(tgt_blocks))
                for n, value in zip(names, expanded, strict=True):
                    current = target_state[n]
                    current.copy_(uniform_select(value, tuple(current.shape), n).to(current.dtype))
                    report.set(n, "interpolated", current.shape)
        for name, current in target_state.items():
            if name in done:
                continue
            picked = _select_by_name(source_state, current, name)
            if picked is None:
                report.set(name, "target-init", current.shape)
                continue
            current.copy_(picked[0].to(device=current.device, dtype=current.dtype))
            report.set(name, picked[1], current.shape)
    return _finish(target_model, report, return_report)


# ------------------------------------------------------------------------------- templates
def _from_template(
    target_model: nn.Module, source: Any, method: str, name: str, **options: Any
) -> nn.Module | tuple[nn.Module, InitReport]:
    """:func:`initialize` from ``source`` after checking that it is a ``method`` template."""
    wt = as_template(source)
    if wt.config.method != method:
        raise ValueError(
            f"initializer {name!r} needs a {method} template, found a {wt.config.method} template; "
            f"use the {'kronecker' if wt.config.method == 'kronecker' else 'tucker'!r} initializer"
        )
    return initialize(target_model, wt, **options)


@register_initializer("tucker")
def tucker_init(
    target_model: nn.Module,
    source: WeightTemplate | FactorizedModel | str | os.PathLike,
    *,
    depth: str = "interpolate",
    width: str = "slice",
    return_report: bool = False,
    adapter: BackboneAdapter | str | None = None,
    seed: int = 0,
) -> nn.Module | tuple[nn.Module, InitReport]:
    """A Tucker template with the depth rule (``select`` / ``first`` / ``interpolate``) and the width
    rule (``slice`` / ``select`` / ``interpolate`` / ``zero_fanout``); nothing is learned."""
    if "learn" in (depth, width):
        raise ValueError(
            f"the 'tucker' initializer learns nothing; found depth={depth!r}, width={width!r}: "
            "use 'tucker_learned' for learned scalers"
        )
    options = {"return_report": return_report, "adapter": adapter, "seed": seed}
    return _from_template(target_model, source, "tucker", "tucker", depth=depth, width=width, **options)


@register_initializer("tucker_learned")
def tucker_learned(
    target_model: nn.Module,
    source: WeightTemplate | FactorizedModel | str | os.PathLike,
    *,
    learn: LearnConfig | Mapping[str, Any] | None = None,
    depth: str = "learn",
    width: str = "learn",
    return_report: bool = False,
    adapter: BackboneAdapter | str | None = None,
    seed: int = 0,
) -> nn.Module | tuple[nn.Module, InitReport]:
    """A Tucker template with new scalers learned on ``learn`` (required), template frozen."""
    if learn is None:
        raise ValueError("the 'tucker_learned' initializer needs learn=LearnConfig(data=..., steps=... or epochs=...)")
    options = {"learn": learn, "return_report": return_report, "adapter": adapter, "seed": seed}
    return _from_template(target_model, source, "tucker", "tucker_learned", depth=depth, width=width, **options)


@register_initializer("kronecker")
def kronecker_init(
    target_model: nn.Module,
    source: WeightTemplate | FactorizedModel | str | os.PathLike,
    *,
    learn: LearnConfig | Mapping[str, Any] | None = None,
    depth: str = "interpolate",
    width: str = "slice",
    return_report: bool = False,
    adapter: BackboneAdapter | str | None = None,
    seed: int = 0,
) -> nn.Module | tuple[nn.Module, InitReport]:
    """A Kronecker template (WAVE / WeiT): coefficients by the depth rule and width ``slice`` or
    ``zero_fanout``; learned (all of them unless a rule says ``learn``) when ``learn`` is given."""
    options = {"learn": learn, "return_report": return_report, "adapter": adapter, "seed": seed}
    return _from_template(target_model, source, "kronecker", "kronecker", depth=depth, width=width, **options)


# ------------------------------------------------------------------------------ pretrained
@register_initializer("pretrained")
def pretrained(
    target_model: nn.Module, source: nn.Module, *, return_report: bool = False
) -> nn.Module | tuple[nn.Module, InitReport]:
    """Copy a dense ``source`` of the target's very architecture (direct pre-training baseline)."""
    source = _dense(source)
    source_state = source.state_dict()
    target_state = target_model.state_dict()
    missing = sorted(set(target_state) - set(source_state))
    unexpected = sorted(set(source_state) - set(target_state))
    mismatched = [
        f"{k}: source {tuple(source_state[k].shape)}, target {tuple(v.shape)}"
        for k, v in target_state.items()
        if k in source_state and source_state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            "the 'pretrained' initializer needs a source of the target's size and architecture; "
            f"missing in source: {missing[:5]}, extra in source: {unexpected[:5]}, "
            f"different shapes: {mismatched[:5]}"
        )
    target_model.load_state_dict(source_state)
    report = InitReport("pretrained")
    for name, value in init_state(target_model).items():
        report.set(name, "copied", value.shape)
    return _finish(target_model, report, return_report)
