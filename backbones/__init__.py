"""Backbone adapters: where a model's block groups are and which weights are templated.

``get_adapter(model)`` finds the adapter for a timm ViT / DeiT, ResNet, ConvNeXt, Swin, Eva
(EVA-02, RoPE ViTs) or BEiT; pass a
:class:`GenericAdapter` for your own module, or register a new family with
:func:`register_adapter` (like timm's model registry).
"""

from __future__ import annotations

from torch import nn

from .axes import AxisRole, depth_axis, heads_axis, width_axis
from .base import BackboneAdapter, BlockSequence, default_is_primary
from .beit import BeitAdapter
from .convnext import ConvNeXtAdapter
from .eva import EvaAdapter
from .generic import GenericAdapter
from .resnet import ResNetAdapter
from .swin import SwinAdapter
from .vit import ViTAdapter

__all__ = [
    "AxisRole",
    "BackboneAdapter",
    "BeitAdapter",
    "BlockSequence",
    "ConvNeXtAdapter",
    "EvaAdapter",
    "GenericAdapter",
    "ResNetAdapter",
    "SwinAdapter",
    "ViTAdapter",
    "default_is_primary",
    "depth_axis",
    "get_adapter",
    "heads_axis",
    "list_adapters",
    "register_adapter",
    "width_axis",
]

_REGISTRY: dict[str, type[BackboneAdapter]] = {}


def register_adapter(cls: type[BackboneAdapter]) -> type[BackboneAdapter]:
    """Class decorator that makes ``get_adapter`` try ``cls`` (by its ``family``)."""
    if not (isinstance(cls, type) and issubclass(cls, BackboneAdapter)):
        raise TypeError(f"register_adapter expects a BackboneAdapter subclass, found {cls!r}")
    _REGISTRY[cls.family] = cls
    return cls


# Each adapter matches by isinstance on its own timm class (Eva, Beit and SwinTransformer are
# not VisionTransformer subclasses), so the order only decides among user-registered ones.
for _cls in (ViTAdapter, ResNetAdapter, ConvNeXtAdapter, SwinAdapter, EvaAdapter, BeitAdapter):
    register_adapter(_cls)


def list_adapters() -> dict[str, str]:
    """Registered families and what each supports."""
    return {family: cls.description for family, cls in _REGISTRY.items()}


def get_adapter(model: nn.Module, adapter: BackboneAdapter | str | None = None) -> BackboneAdapter:
    """The adapter for ``model``: ``adapter`` itself, the registered family it names, or the
    first registered adapter that matches the model.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``adapter`` has the wrong type.
        ValueError: no adapter matches (the message lists the supported families), or the family
            that ``adapter`` names does not match ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, found {type(model).__name__}")
    if isinstance(adapter, BackboneAdapter):
        return adapter
    if isinstance(adapter, str):
        if adapter not in _REGISTRY:
            raise ValueError(f"unknown adapter family {adapter!r}; registered: {sorted(_REGISTRY)}")
        named = _REGISTRY[adapter]()
        if not named.matches(model):  # else it fails later on a missing attribute
            raise ValueError(
                f"adapter family {adapter!r} ({named.description}) does not match {type(model).__name__}; "
                "pass adapter=None to find the model's own family"
            )
        return named
    if adapter is not None:
        raise TypeError(f"adapter must be a BackboneAdapter, a family name or None, found {type(adapter).__name__}")
    for cls in _REGISTRY.values():
        candidate = cls()
        if candidate.matches(model):
            return candidate
    supported = "; ".join(f"{k}: {v}" for k, v in list_adapters().items())
    raise ValueError(
        f"no backbone adapter for {type(model).__name__}. Supported families: {supported}. "
        "For another model pass adapter=GenericAdapter(block_containers=['path.to.blocks']) "
        "or subclass backbones.BackboneAdapter and decorate it with @register_adapter "
        "(see backbones/generic.py)."
    )
