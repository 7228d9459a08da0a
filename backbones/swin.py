"""Adapter for timm's ``SwinTransformer`` (Swin v1: ``swin_*``, any depths, widths and windows)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from timm.layers import resample_patch_embed
from timm.models.swin_transformer import SwinTransformer
from torch import Tensor, nn

from ._transformer import resize_bias_table
from .axes import AxisRole, heads_axis, width_axis
from .base import BackboneAdapter, BlockSequence, sequence_of

_TABLE = re.compile(r"^layers\.(\d+)\.blocks\.\d+\.attn\.relative_position_bias_table$")
_MERGE = re.compile(r"^layers\.(\d+)\.downsample\.(norm\.(weight|bias)|reduction\.weight)$")
_MASK = re.compile(r"^layers\.\d+\.blocks\.\d+\.attn_mask$")


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

    For ``initialize()`` (:meth:`remainder_axes`): every channel axis follows its own stage's
    width map (a patch merging's input is 4 copies of the previous stage's channels), a bias
    table's head axis keeps whole heads alike, and its position axis is resampled with timm's
    ``resize_rel_pos_bias_table`` when the target's window differs.
    """

    family = "swin"
    residual_writer_paths = (("attn.proj", "mlp.fc2"),)
    block_parity_matters = True  # every odd block shifts its windows
    description = "timm SwinTransformer (Swin v1)"
    features_layout = "NHWC"

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

    def remainder_axes(self, model: nn.Module, name: str) -> tuple[AxisRole | None, ...] | None:
        """Per-stage channel and head axes of the dense tensors (see the class docstring)."""
        stages = [f"layers.{i}.blocks" for i in range(len(model.layers))]
        if m := _TABLE.match(name):
            stage = int(m.group(1))
            return (None, heads_axis(stages[stage], _head_dim(model.layers[stage].blocks[0])))
        if m := _MERGE.match(name):
            stage = int(m.group(1))
            into, out_of = width_axis(stages[stage]), width_axis(stages[stage - 1])
            return (into, out_of) if name.endswith("reduction.weight") else (out_of,)
        first, last = width_axis(stages[0]), width_axis(stages[-1])
        if name == "patch_embed.proj.weight":
            return (first, None, None, None)
        if name.startswith("patch_embed.") and name.endswith((".weight", ".bias")):
            return (first,)
        if name in ("norm.weight", "norm.bias"):
            return (last,)
        if name == "head.fc.weight":
            return (None, last)
        return None

    def is_derived(self, model: nn.Module, name: str) -> bool:
        """The shifted-window attention masks: timm computes them from the grid and window."""
        return bool(_MASK.match(name))

    def resize_remainder(self, model: nn.Module, name: str, value: Tensor) -> Tensor | None:
        """Another window: a bias table ``((2w-1)^2, heads)`` resampled to the target stage's window
        (heads kept; :meth:`remainder_axes` maps them). Another patch size: the patch kernel
        ``(C, 3, p, p)`` with FlexiViT's pseudo-inverse rule."""
        if m := _TABLE.match(name):
            window = model.layers[int(m.group(1))].blocks[0].attn.window_size
            positions = (2 * window[0] - 1) * (2 * window[1] - 1)
            if value.ndim == 2 and value.shape[0] != positions:
                return resize_bias_table(value, window, positions)
        if name == "patch_embed.proj.weight" and value.ndim == 4:
            kernel = list(model.patch_embed.proj.weight.shape[-2:])
            if list(value.shape[-2:]) != kernel:
                return resample_patch_embed(value, kernel)
        return None

    def check_target(self, facts: Mapping[str, Any], target: nn.Module) -> None:
        """As many stages as the template, each with the template's head_dim (whole heads) and mlp
        ratio; depths, widths in whole heads and windows may differ per stage."""
        if "head_dims" not in facts:
            return
        described = self.describe(target)
        if len(described["depths"]) != len(facts["depths"]):
            raise ValueError(
                f"the target has {len(described['depths'])} stages, the template {len(facts['depths'])}: "
                f"create the target with depths of {len(facts['depths'])} entries (e.g. {facts['depths']})"
            )
        for i, (src, tgt) in enumerate(zip(facts["head_dims"], described["head_dims"], strict=True)):
            if src != tgt:
                raise ValueError(
                    f"stage {i}: the target's heads (head_dim {tgt}, width {described['embed_dims'][i]}) would "
                    f"split the template's heads of head_dim {src}: use num_heads[{i}] = width / {src}"
                )
        ratios = [
            (h / c, h2 / c2)
            for h, c, h2, c2 in zip(
                facts["mlp_hidden"], facts["embed_dims"], described["mlp_hidden"], described["embed_dims"], strict=True
            )
        ]
        for i, (src, tgt) in enumerate(ratios):
            if src != tgt:
                raise ValueError(
                    f"stage {i}: different mlp ratio, the template's is {src:g}, the target's {tgt:g}; "
                    f"create the target with mlp_ratio={src:g}"
                )
