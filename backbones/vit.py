"""Adapter for timm's ``VisionTransformer`` (ViT, DeiT, DeiT-distilled, any depth and width)."""

from __future__ import annotations

from typing import Any

from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .base import BackboneAdapter, BlockSequence, sequence_of


class ViTAdapter(BackboneAdapter):
    """One block sequence, ``model.blocks``; width d = embed_dim, S = 12 slices per block
    (qkv 3, proj 1, fc1 4, fc2 4 at mlp_ratio 4)."""

    family = "vit"
    description = "timm VisionTransformer (ViT, DeiT)"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, VisionTransformer)

    def block_sequences(self, model: nn.Module) -> list[BlockSequence]:
        return [sequence_of(model, "blocks")]

    def width_multiple(self, model: nn.Module) -> int:
        # Width must keep whole heads: d' = heads' * head_dim.
        return model.blocks[0].attn.head_dim

    def describe(self, model: nn.Module) -> dict[str, Any]:
        attn = model.blocks[0].attn
        return {
            "class": type(model).__name__,
            "depth": len(model.blocks),
            "embed_dim": model.embed_dim,
            "num_heads": attn.num_heads,
            "head_dim": attn.head_dim,
            "mlp_hidden": model.blocks[0].mlp.fc1.out_features,
            "num_classes": model.num_classes,
        }
