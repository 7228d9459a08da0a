"""Adapter for timm's ``Eva``: EVA, EVA-02 (``eva02_*``) and the RoPE ViTs (``vit_*_rope_*``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from timm.models.eva import Eva
from torch import Tensor, nn

from ._transformer import FlatTransformerAdapter, attention_head_dim, check_heads_and_mlp, mlp_hidden, mlp_kind
from .axes import AxisRole, depth_axis, heads_axis
from .vit import ViTAdapter


class EvaAdapter(FlatTransformerAdapter):
    """One block sequence, ``model.blocks``, as for a ViT.

    Templated (every ``nn.Linear`` in a block): ``attn.qkv`` ``(3D, D)`` or the separate
    ``attn.q_proj`` / ``k_proj`` / ``v_proj`` ``(D, D)``, ``attn.proj``, a gated attention's
    ``attn.gate``, and the MLP: ``fc1`` / ``fc2`` of a plain ``Mlp``, the packed ``fc1``
    ``(2H, D)`` of a ``GluMlp`` (value and gate halves) or ``fc1_g`` / ``fc1_x`` ``(H, D)`` of a
    ``SwiGLU``. Unit width d = gcd(D, H): d = D at mlp ratio 4, d = D / 3 for EVA-02's
    ``H = 8D/3`` (192 -> 64). Dense remainder: ``q_bias`` / ``v_bias``, layer scales
    ``gamma_1`` / ``gamma_2``, norms (the SwiGLU's hidden ``mlp.norm``, the attention's
    ``attn.norm``), the embeddings, a mixed RoPE's learned ``rope.freqs``
    ``(depth, 2, heads, head_dim / 4)`` and the head. ``k_bias`` (zeros) and the RoPE tables
    of fixed frequencies are buffers that timm derives from the geometry.

    For ``initialize()``: the learned ``rope.freqs`` ``(2, depth, heads, head_dim / 2)`` follows
    the depth map and keeps whole heads (:meth:`remainder_axes`); the RoPE buffers and
    ``k_bias`` are the target's own (:meth:`is_derived`); the position embedding and patch kernel
    are resampled for another grid or patch size as for a ViT.
    """

    family = "eva"
    description = "timm Eva (EVA, EVA-02, RoPE ViTs)"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, Eva)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        block = model.blocks[0]
        rope = getattr(model, "rope", None)
        return {
            "class": type(model).__name__,
            "depth": len(model.blocks),
            "embed_dim": model.embed_dim,
            "num_heads": block.attn.num_heads,
            "head_dim": attention_head_dim(block.attn),
            "mlp_hidden": mlp_hidden(block.mlp),
            "mlp": mlp_kind(block.mlp),
            "rope": type(rope).__name__ if rope is not None else None,
            "abs_pos_embed": model.pos_embed is not None,
            "num_prefix_tokens": model.num_prefix_tokens,
            "grid_size": list(model.patch_embed.grid_size),
            "num_classes": model.num_classes,
        }

    def remainder_axes(self, model: nn.Module, name: str) -> tuple[AxisRole | None, ...] | None:
        """A mixed RoPE's learned frequencies: one row per block, one column per head."""
        if name == "rope.freqs" and model.rope.freqs.ndim == 4:
            head_dim = attention_head_dim(model.blocks[0].attn)
            return (None, depth_axis("blocks"), heads_axis("blocks", head_dim), None)
        return None

    def is_derived(self, model: nn.Module, name: str) -> bool:
        """Buffers timm computes from the geometry: the RoPE tables and the zero ``k_bias``."""
        return name in dict(model.named_buffers()) and (name.startswith("rope.") or name.endswith(".attn.k_bias"))

    def resize_remainder(self, model: nn.Module, name: str, value: Tensor) -> Tensor | None:
        """The position embedding and patch kernel for another grid or patch size, as for a ViT."""
        return ViTAdapter().resize_remainder(model, name, value)

    def check_target(self, facts: Mapping[str, Any], target: nn.Module) -> None:
        """The template's head_dim and mlp ratio, and whole heads in the unit width."""
        check_heads_and_mlp(facts, self.describe(target))
