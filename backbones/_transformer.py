"""Size facts and checks of timm transformer blocks shared by the Swin, Eva and BEiT adapters."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from timm.layers import resize_rel_pos_bias_table
from torch import Tensor, nn

from .base import BackboneAdapter, BlockSequence, sequence_of

__all__ = [
    "FlatTransformerAdapter",
    "attention_head_dim",
    "check_heads_and_mlp",
    "mlp_hidden",
    "mlp_kind",
    "resize_bias_table",
]


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


def _unit_width(facts: Mapping[str, Any]) -> int:
    """The layout's unit width d of a ViT-like block: the gcd of its channel sizes."""
    return math.gcd(int(facts["embed_dim"]), int(facts["mlp_hidden"]), int(facts["num_heads"]) * int(facts["head_dim"]))


def check_heads_and_mlp(facts: Mapping[str, Any], described: Mapping[str, Any]) -> None:
    """A ViT-like target keeps the template's head_dim and mlp ratio, and whole heads fit in the
    unit width d of both (the width map slices each chunk of d alike, so a head must not
    straddle two chunks: EVA-02's d = D / 3 at ``H = 8D/3``).

    Args:
        facts: the template's ``describe()`` facts: ``embed_dim``, ``num_heads``, ``head_dim``,
            ``mlp_hidden``.
        described: the same facts of the target.

    Raises:
        ValueError: naming the sizes that work.
    """
    if not all(k in facts for k in ("embed_dim", "num_heads", "head_dim", "mlp_hidden")):
        return
    head_dim, found = int(facts["head_dim"]), int(described["head_dim"])
    if found != head_dim:
        raise ValueError(
            f"the target's heads (head_dim {found}, embed_dim {described['embed_dim']}) would split the "
            f"template's heads of head_dim {head_dim}: use num_heads = embed_dim / {head_dim}, i.e. widths "
            f"{[head_dim * h for h in range(1, 7)]}..."
        )
    src_ratio = facts["mlp_hidden"] / facts["embed_dim"]
    tgt_ratio = described["mlp_hidden"] / described["embed_dim"]
    if src_ratio != tgt_ratio:
        raise ValueError(
            f"different mlp ratio: the template's mlp hidden / embed_dim is {facts['mlp_hidden']} / "
            f"{facts['embed_dim']} = {src_ratio:g}, the target's {described['mlp_hidden']} / "
            f"{described['embed_dim']} = {tgt_ratio:g}; create the target with an mlp hidden size of "
            f"{src_ratio:g} * embed_dim (an integer)"
        )
    if int(described["embed_dim"]) == int(facts["embed_dim"]):
        return  # the same width: nothing is sliced
    for who, sizes in (("template", facts), ("target", described)):
        unit = _unit_width(sizes)
        if unit % head_dim:
            raise ValueError(
                f"the {who}'s unit width d = gcd(embed_dim, mlp hidden, heads * head_dim) = {unit} is not a "
                f"multiple of head_dim {head_dim}, so a width change would cut heads; choose sizes whose "
                f"gcd is a multiple of {head_dim} (e.g. embed_dim a multiple of {3 * head_dim} at mlp ratio 8/3)"
            )


def resize_bias_table(table: Tensor, window: Sequence[int], positions: int) -> Tensor:
    """A relative position bias table ``(P, heads)`` resampled to ``window`` (``positions`` rows:
    ``(2h-1)(2w-1)``, plus BEiT's 3 class-token rows, which are kept), heads unchanged, with
    timm's ``resize_rel_pos_bias_table`` (BEiT's and Swin's checkpoint rule)."""
    with warnings.catch_warnings():
        # Without scipy timm interpolates in torch and trips torch's deprecation and performance
        # notices about its indexing; the values are right (a table linear in the offsets stays so).
        warnings.filterwarnings("ignore", category=UserWarning, module=r"timm\.layers\.interpolate")
        return resize_rel_pos_bias_table(table, tuple(window), (positions, table.shape[1]))


class FlatTransformerAdapter(BackboneAdapter):
    """What Eva and BEiT share: one ``blocks`` sequence of (B, N, C) tokens, widths in whole heads."""

    features_layout = "NLC"
    residual_writer_paths = (("attn.proj", "mlp.fc2"),)

    def block_sequences(self, model: nn.Module) -> list[BlockSequence]:
        return [sequence_of(model, "blocks")]

    def width_multiple(self, model: nn.Module) -> int:
        # Width must keep whole heads: d' = heads' * head_dim.
        return attention_head_dim(model.blocks[0].attn)
