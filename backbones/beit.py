"""Adapter for timm's ``Beit`` (BEiT and BEiT v2, ``beit_*`` / ``beitv2_*``)."""

from __future__ import annotations

from typing import Any

from timm.models.beit import Beit
from torch import nn

from ._transformer import attention_head_dim, mlp_hidden, mlp_kind
from .base import BackboneAdapter, BlockSequence, sequence_of


class BeitAdapter(BackboneAdapter):
    """One block sequence, ``model.blocks``, as for a ViT (d = D, S = 12 at mlp ratio 4).

    Templated: ``attn.qkv`` ``(3D, D)``, ``attn.proj``, ``mlp.fc1`` / ``mlp.fc2`` (or a SwiGLU's
    ``fc1_g`` / ``fc1_x`` / ``fc2``). Dense remainder: ``q_bias`` / ``v_bias``, the layer scales
    ``gamma_1`` / ``gamma_2``, each block's ``attn.relative_position_bias_table``
    ``((2h-1)(2w-1) + 3, heads)`` (or the shared ``rel_pos_bias.relative_position_bias_table``),
    norms, embeddings and the head. ``k_bias`` (zeros) and the relative position index are
    buffers that timm derives from the geometry.
    """

    family = "beit"
    description = "timm Beit (BEiT, BEiT v2)"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, Beit)

    def block_sequences(self, model: nn.Module) -> list[BlockSequence]:
        return [sequence_of(model, "blocks")]

    def width_multiple(self, model: nn.Module) -> int:
        # Width must keep whole heads: d' = heads' * head_dim.
        return attention_head_dim(model.blocks[0].attn)

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
