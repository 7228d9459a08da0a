"""Adapter for timm's ``Beit`` (BEiT and BEiT v2, ``beit_*`` / ``beitv2_*``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from timm.models.beit import Beit
from torch import Tensor, nn

from ._transformer import (
    FlatTransformerAdapter,
    attention_head_dim,
    check_heads_and_mlp,
    mlp_hidden,
    mlp_kind,
    resize_bias_table,
)
from .axes import AxisRole, heads_axis
from .vit import ViTAdapter

_TABLE = re.compile(r"^(blocks\.\d+\.attn|rel_pos_bias)\.relative_position_bias_table$")


class BeitAdapter(FlatTransformerAdapter):
    """One block sequence, ``model.blocks``, as for a ViT (d = D, S = 12 at mlp ratio 4).

    Templated: ``attn.qkv`` ``(3D, D)``, ``attn.proj``, ``mlp.fc1`` / ``mlp.fc2`` (or a SwiGLU's
    ``fc1_g`` / ``fc1_x`` / ``fc2``). Dense remainder: ``q_bias`` / ``v_bias``, the layer scales
    ``gamma_1`` / ``gamma_2``, each block's ``attn.relative_position_bias_table``
    ``((2h-1)(2w-1) + 3, heads)`` (or the shared ``rel_pos_bias.relative_position_bias_table``),
    norms, embeddings and the head. ``k_bias`` (zeros) and the relative position index are
    buffers that timm derives from the geometry.

    For ``initialize()``: a bias table's head axis keeps whole heads (:meth:`remainder_axes`)
    and its position axis is resampled with timm's ``resize_rel_pos_bias_table`` when the
    target's patch grid differs (its 3 class-token rows kept); ``k_bias`` is the target's own.
    """

    family = "beit"
    description = "timm Beit (BEiT, BEiT v2)"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, Beit)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        block = model.blocks[0]
        window = block.attn.window_size
        if window is None and model.rel_pos_bias is not None:
            window = model.rel_pos_bias.window_size
        return {
            "class": type(model).__name__,
            "depth": len(model.blocks),
            "embed_dim": model.embed_dim,
            "num_heads": block.attn.num_heads,
            "head_dim": attention_head_dim(block.attn),
            "mlp_hidden": mlp_hidden(block.mlp),
            "mlp": mlp_kind(block.mlp),
            "rel_pos_bias": "per block"
            if block.attn.relative_position_bias_table is not None
            else ("shared" if model.rel_pos_bias is not None else None),
            "window_size": list(window) if window is not None else None,
            "abs_pos_embed": model.pos_embed is not None,
            "grid_size": list(model.patch_embed.grid_size),
            "num_classes": model.num_classes,
        }

    def remainder_axes(self, model: nn.Module, name: str) -> tuple[AxisRole | None, ...] | None:
        """A relative position bias table ``(positions, heads)``: whole heads of ``blocks``."""
        if _TABLE.match(name):
            return (None, heads_axis("blocks", attention_head_dim(model.blocks[0].attn)))
        return None

    def is_derived(self, model: nn.Module, name: str) -> bool:
        """The zero ``k_bias`` buffers (the relative position index is an integer buffer)."""
        return name.endswith(".attn.k_bias") and name in dict(model.named_buffers())

    def resize_remainder(self, model: nn.Module, name: str, value: Tensor) -> Tensor | None:
        """Another patch grid: bias tables resampled to the target's window (heads kept), the
        position embedding and patch kernel as for a ViT."""
        if _TABLE.match(name):
            owner = model.get_submodule(name.rpartition(".")[0])
            window = owner.window_size
            positions = owner.relative_position_bias_table.shape[0]
            if value.ndim == 2 and value.shape[0] != positions:
                return resize_bias_table(value, window, positions)
            return None
        return ViTAdapter().resize_remainder(model, name, value)

    def check_target(self, facts: Mapping[str, Any], target: nn.Module) -> None:
        """The template's head_dim and mlp ratio, and whole heads in the unit width."""
        check_heads_and_mlp(facts, self.describe(target))
