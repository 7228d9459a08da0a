"""Adapter for timm's ``SwinTransformer`` (Swin v1: ``swin_*``, any depths, widths and windows)."""

from __future__ import annotations

import math
from typing import Any

from timm.models.swin_transformer import SwinTransformer
from torch import nn

from .base import BackboneAdapter, BlockSequence, sequence_of


def _head_dim(block: nn.Module) -> int:
    """Channels per head of a ``SwinTransformerBlock`` (its qkv is ``(3 * heads * head_dim, C)``)."""
    attn = block.attn
    return attn.qkv.out_features // (3 * attn.num_heads)


class SwinAdapter(BackboneAdapter):
    """One block sequence per stage, ``layers.i.blocks``, each of width C_i = embed_dim * 2^i and
    so a group of its own (unit width d = C_i, S = 12 slices per block at mlp ratio 4).

    Templated: ``attn.qkv`` ``(3C, C)``, ``attn.proj`` ``(C, C)``, ``mlp.fc1`` ``(4C, C)``,
    ``mlp.fc2`` ``(C, 4C)``. Dense remainder: each block's ``relative_position_bias_table``
    ``((2w-1)^2, heads)``, norms and biases; the patch embedding, the patch merging between
    stages (``layers.i.downsample``: norm ``(4 C_{i-1},)``, reduction ``(C_i, 4 C_{i-1})``), the
    final norm and the head. The index buffers and shifted-window attention masks are not
    learned: timm derives them from the geometry.
    """

    family = "swin"
    description = "timm SwinTransformer (Swin v1)"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, SwinTransformer)

    def block_sequences(self, model: nn.Module) -> list[BlockSequence]:
        return [sequence_of(model, f"layers.{i}.blocks") for i in range(len(model.layers))]

    def width_multiple(self, model: nn.Module) -> int:
        # Whole heads in every stage: the least common multiple of the stages' head dims
        # (one value, 32 in all of timm's Swin configurations).
        return math.lcm(*(_head_dim(stage.blocks[0]) for stage in model.layers))

    def describe(self, model: nn.Module) -> dict[str, Any]:
        stages = [stage.blocks[0] for stage in model.layers]
        return {
            "class": type(model).__name__,
            "depths": [len(stage.blocks) for stage in model.layers],
            "embed_dims": [block.dim for block in stages],
            "num_heads": [block.attn.num_heads for block in stages],
            "head_dims": [_head_dim(block) for block in stages],
            "mlp_hidden": [block.mlp.fc1.out_features for block in stages],
            "window_sizes": [list(block.attn.window_size) for block in stages],
            "patch_size": list(model.patch_embed.patch_size),
            "grid_size": list(model.patch_embed.grid_size),
            "num_classes": model.num_classes,
        }
