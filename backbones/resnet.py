"""Adapter for timm's ``ResNet`` (basic and bottleneck blocks, all four stages)."""

from __future__ import annotations

from typing import Any

from timm.models.resnet import ResNet
from torch import nn

from .base import BackboneAdapter, BlockSequence, sequence_of


class ResNetAdapter(BackboneAdapter):
    """Block sequences ``layer1`` .. ``layer4``. The first block of a stage, which changes
    width and holds the down-sampling shortcut, forms a group of its own; all its dense
    convolutions (shortcut included) are templated. Grouped convolutions (ResNeXt) and
    batch-norm affines stay dense."""

    family = "resnet"
    description = "timm ResNet (basic and bottleneck blocks)"
    features_layout = "NCHW"
    residual_writer_paths = (("bn3",), ("bn2",))  # bottleneck, basic block

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, ResNet)

    def block_sequences(self, model: nn.Module) -> list[BlockSequence]:
        return [sequence_of(model, f"layer{i}") for i in range(1, 5)]

    def describe(self, model: nn.Module) -> dict[str, Any]:
        return {
            "class": type(model).__name__,
            "depths": [len(getattr(model, f"layer{i}")) for i in range(1, 5)],
            "widths": [getattr(model, f"layer{i}")[-1].conv1.in_channels for i in range(1, 5)],
            "block": type(model.layer1[0]).__name__,
            "num_classes": model.num_classes,
        }
