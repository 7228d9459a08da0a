"""Adapter for timm's ``VisionTransformer`` (ViT, DeiT, DeiT-distilled, any depth and width)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .base import BackboneAdapter, BlockSequence, sequence_of


class ViTAdapter(BackboneAdapter):
    """One block sequence, ``model.blocks``; width d = embed_dim, S = 12 slices per block
    (qkv 3, proj 1, fc1 4, fc2 4 at mlp_ratio 4)."""

    family = "vit"
    description = "timm VisionTransformer (ViT, DeiT)"
    features_layout = "NLC"
    residual_writer_paths = (("attn.proj", "mlp.fc2"),)

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, VisionTransformer)

    def block_sequences(self, model: nn.Module) -> list[BlockSequence]:
        return [sequence_of(model, "blocks")]

    def width_multiple(self, model: nn.Module) -> int:
        # Width must keep whole heads: d' = heads' * head_dim.
        return model.blocks[0].attn.head_dim

    def resize_remainder(self, model: nn.Module, name: str, value: Tensor) -> Tensor | None:
        """Another image or patch size: the position embedding ``(1, prefix + h*w, d)`` is resampled
        bicubically to the target's patch grid (prefix tokens kept), the patch kernel ``(d, 3, p, p)``
        with FlexiViT's pseudo-inverse rule; both with timm's functions. Square source grids only."""
        if name == "pos_embed" and value.ndim == 3 and value.shape[1] != model.pos_embed.shape[1]:
            prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
            side = math.isqrt(value.shape[1] - prefix)
            if side * side != value.shape[1] - prefix:
                return None
            grid = list(model.patch_embed.grid_size)
            return resample_abs_pos_embed(value, new_size=grid, old_size=[side, side], num_prefix_tokens=prefix)
        if name == "patch_embed.proj.weight" and value.ndim == 4:
            kernel = list(model.patch_embed.proj.weight.shape[-2:])
            if list(value.shape[-2:]) != kernel:
                return resample_patch_embed(value, kernel)
        return None

    def check_target(self, facts: Mapping[str, Any], target: nn.Module) -> None:
        """Whole heads of the template's head_dim, and the template's mlp ratio."""
        if "head_dim" not in facts:
            return
        described = self.describe(target)
        head_dim = int(facts["head_dim"])
        tgt_head = self.width_multiple(target)
        if tgt_head != head_dim:
            width = described.get("embed_dim", "?")
            raise ValueError(
                f"the target's heads (head_dim {tgt_head}, embed_dim {width}) would split the template's "
                f"heads of head_dim {head_dim}: use num_heads = embed_dim / {head_dim}, i.e. widths "
                f"{[head_dim * h for h in range(1, 7)]}..."
            )
        if "mlp_hidden" in facts and "mlp_hidden" in described:
            src_ratio = facts["mlp_hidden"] / facts["embed_dim"]
            tgt_ratio = described["mlp_hidden"] / described["embed_dim"]
            if src_ratio != tgt_ratio:
                raise ValueError(
                    f"different mlp ratio: the template's is {src_ratio:g}, the target's {tgt_ratio:g}; "
                    f"create the target with mlp_ratio={src_ratio:g} (mlp hidden size "
                    f"{int(src_ratio * described['embed_dim'])} for embed_dim {described['embed_dim']})"
                )

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
