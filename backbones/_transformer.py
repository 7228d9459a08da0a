"""Size facts of timm transformer blocks shared by the ViT-like adapters (Eva, BEiT)."""

from __future__ import annotations

from torch import nn

__all__ = ["attention_head_dim", "mlp_hidden", "mlp_kind"]


def attention_head_dim(attn: nn.Module) -> int:
    """Channels per head: ``attn.head_dim`` where timm stores it, else from the fused or separate
    query projection (``(heads * head_dim, dim)``)."""
    if isinstance(getattr(attn, "head_dim", None), int):
        return attn.head_dim
    query = attn.qkv.out_features // 3 if getattr(attn, "qkv", None) is not None else attn.q_proj.out_features
    return query // attn.num_heads


def mlp_hidden(mlp: nn.Module) -> int:
    """The MLP's hidden width: ``fc1`` of a plain ``Mlp``, half of a packed ``GluMlp`` ``fc1``
    (value and gate stacked), ``fc1_x`` of a ``SwiGLU``."""
    if hasattr(mlp, "fc1_x"):
        return mlp.fc1_x.out_features
    if mlp_kind(mlp) == "GluMlp":
        return mlp.fc1.out_features // 2
    return mlp.fc1.out_features


def mlp_kind(mlp: nn.Module) -> str:
    """The timm class of the MLP, e.g. ``"Mlp"``, ``"GluMlp"``, ``"SwiGLU"``."""
    return type(mlp).__name__
