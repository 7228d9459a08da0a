"""Adapter for timm's ``ConvNeXt``."""

from __future__ import annotations

from typing import Any

from timm.models.convnext import ConvNeXt
from torch import nn

from .base import BackboneAdapter, BlockSequence, sequence_of


class ConvNeXtAdapter(BackboneAdapter):
    """Block sequences ``stages.i.blocks``. The pointwise MLP (``mlp.fc1`` / ``mlp.fc2``,
    Linear or 1x1 conv) is templated; the 7x7 depthwise kernel, norms, biases and the
    layer-scale ``gamma`` stay dense, as do the stem and the down-sampling layers."""

    family = "convnext"
    description = "timm ConvNeXt"
    features_layout = "NCHW"
    residual_writer_paths = (("mlp.fc2",),)

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, ConvNeXt)

    def block_sequences(self, model: nn.Module) -> list[BlockSequence]:
        return [sequence_of(model, f"stages.{i}.blocks") for i in range(len(model.stages))]

    def describe(self, model: nn.Module) -> dict[str, Any]:
        return {
            "class": type(model).__name__,
            "depths": [len(stage.blocks) for stage in model.stages],
            "widths": [stage.blocks[0].conv_dw.in_channels for stage in model.stages],
            "num_classes": model.num_classes,
        }
