"""Model factory used by the CLI, the demo and the experiments: sizes by depth and width.

``create_model("vit", depth=6, width=128)`` builds a timm ``VisionTransformer`` for small
images (head dimension 64, so width = 64 * heads); ``"resnet"``, ``"resnetd"`` and
``"convnext"`` build timm CNNs whose stage widths scale with ``width`` (``"resnetd"``: the
ResNet-D deep stem, which scales too, so its templates can change width); any other name goes to
``timm.create_model`` unchanged (e.g. ``"resnet18"``, ``"deit_tiny_patch16_224"``).
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models.convnext import ConvNeXt
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn

__all__ = ["FAMILIES", "create_model", "parse_size", "size_name"]

FAMILIES = ("vit", "resnet", "resnetd", "convnext")
HEAD_DIM = 64


def create_model(
    name: str,
    *,
    depth: int | None = None,
    width: int | None = None,
    num_classes: int = 10,
    img_size: int = 32,
    patch_size: int = 4,
    in_chans: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """A model of the family ``name`` at the given depth and width.

    Args:
        name: ``"vit"``, ``"resnet"``, ``"resnetd"``, ``"convnext"`` or any timm model name.
        depth: ViT blocks; CNNs: blocks per stage in the last three stages (the first has
            ``max(1, depth // 2)``), so depth 2 gives a ResNet-18-like ``(1, 2, 2, 2)``.
        width: ViT embedding width (a multiple of 64); CNNs: first-stage width (stages
            double it).
        num_classes, img_size, patch_size, in_chans: as in timm.

    Raises:
        ValueError: a size that the family cannot take, naming what would work.
    """
    if name == "vit":
        depth, width = depth or 6, width or 192
        if width % HEAD_DIM:
            raise ValueError(f"vit width must be a multiple of the head size {HEAD_DIM}, found {width}")
        return VisionTransformer(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=num_classes,
            embed_dim=width,
            depth=depth,
            num_heads=width // HEAD_DIM,
            **kwargs,
        )
    if name in ("resnet", "resnetd", "convnext"):
        depth, width = depth or 2, width or 32
        if depth < 1 or width < 1:
            raise ValueError(f"{name} depth and width must be positive, found depth={depth}, width={width}")
        depths = (max(1, depth // 2), depth, depth, depth)
        widths = tuple(width * 2**i for i in range(4))
        if name == "resnetd":
            # Deep stem: 3x3 convs of width/2, width/2, width channels (timm's plain stem is 64 wide
            # at every width, so a plain ResNet's first block changes proportions with the width).
            if width % 2:
                raise ValueError(f"resnetd width must be even (its stem is width / 2 wide), found {width}")
            kwargs = {"stem_type": "deep", "stem_width": width // 2} | kwargs
        if name in ("resnet", "resnetd"):
            return ResNet(
                BasicBlock,
                layers=depths,
                channels=widths,
                num_classes=num_classes,
                in_chans=in_chans,
                **kwargs,
            )
        return ConvNeXt(depths=depths, dims=widths, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if depth is not None or width is not None:
        raise ValueError(
            f"depth/width apply to the families {list(FAMILIES)}; for the timm model {name!r} leave them unset"
        )
    return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, pretrained=False, **kwargs)


def parse_size(text: str) -> tuple[int, int]:
    """``"L6w128"`` or ``"6x128"`` -> ``(depth, width)``."""
    cleaned = text.strip().lower().replace("l", "").replace("w", "x")
    parts = cleaned.split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"size must look like 'L6w128' (depth 6, width 128), found {text!r}")
    return int(parts[0]), int(parts[1])


def size_name(depth: int, width: int) -> str:
    """``(6, 128)`` -> ``"L6w128"``."""
    return f"L{depth}w{width}"
