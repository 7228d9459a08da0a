"""Depth ``identity``: the blocks a deeper target adds start as the identity (DESIGN.md 1.4).

Under depth ``identity`` the template's layers keep their order in the deeper target (layer i at
position ``i * L' // L``) and the blocks between them are new. A new block's *residual writers*
(the submodules whose outputs it adds to the residual stream: a ViT's ``attn.proj`` and
``mlp.fc2``, a ResNet block's last BN; :meth:`backbones.BackboneAdapter.residual_writers`) start
at zero, so the target computes exactly the template's model; every other parameter of it is
drawn from a normal with the mean and std of the same tensor in the block before it (features of
its own at the trained scale, as width ``zero_fanout`` does for new channels), and its buffers
(BN running statistics) keep the target's own init.

The target computes the template's model only where a block's computation does not depend on
its index: Swin shifts the windows of every odd block, so a trained block moved to a position of
the other parity (2 -> 4 blocks: block 1 to position 2) loses its shift; the plan warns then
(``BackboneAdapter.block_parity_matters``).

Why it exists beside depth ``interpolate`` (blends of trained blocks, another function than the
template's): it was the hypothesis for why deeper targets fine-tuned below random init with short
budgets. Measured at L12 w192 from L6 w128 after 2,400 steps, ``interpolate`` came out 1.0 point
above it on every seed (README, "Deeper and wider than the source"), so the lossless path keeps
``interpolate``; use ``identity`` where the deeper model must start as the template's function.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from backbones import BackboneAdapter

from ..templates.layout import ModelLayout
from .axis_maps import AxisMap
from .remainder import drawn_like, is_buffer

__all__ = ["NewBlock", "identity_blocks", "plan_new_blocks"]


@dataclass(frozen=True)
class NewBlock:
    """A block that depth ``identity`` added to the target.

    Attributes:
        name: its block path in the target (``"blocks.3"``).
        before: the target block path of the trained block just before it (its statistics).
        writers: its residual writers, paths relative to the block (``("attn.proj", "mlp.fc2")``).
    """

    name: str
    before: str
    writers: tuple[str, ...]


def plan_new_blocks(
    depth_maps: Sequence[tuple[int, AxisMap]], target_layout: ModelLayout, target: nn.Module, adapter: BackboneAdapter
) -> tuple[NewBlock, ...]:
    """The new blocks of every ``(target group index, depth map)`` whose map has fresh rows.

    Raises:
        ValueError: the adapter does not name a new block's residual writers.
    """
    found = []
    for group_index, depth in depth_maps:
        if not depth.has_fresh:
            continue
        blocks = target_layout.groups[group_index].block_names
        kept = {int(depth.lo[j]): blocks[j] for j in range(depth.n_out) if not depth.fresh[j]}
        if adapter.block_parity_matters:
            _warn_moved_parity(depth)
        for j in depth.fresh.nonzero().flatten().tolist():
            writers = adapter.residual_writers(target, blocks[j])
            if writers is None:
                raise ValueError(
                    f"depth='identity' adds block {blocks[j]!r}, which starts as the identity only when the "
                    f"{adapter.family!r} adapter names its residual writers (residual_writers), and it does not; "
                    "use depth='interpolate' or 'select' for deeper targets"
                )
            found.append(NewBlock(blocks[j], kept[int(depth.lo[j])], writers))
    return tuple(found)


def _warn_moved_parity(depth: AxisMap) -> None:
    """Warn when a kept block lands at a position of the other parity (Swin: it loses or gains its shift)."""
    moved = [(int(depth.lo[j]), j) for j in range(depth.n_out) if not depth.fresh[j] and (int(depth.lo[j]) - j) % 2]
    if moved:
        warnings.warn(
            f"depth='identity' moves template blocks to positions of the other parity {moved} (from, to), where "
            "this family's blocks compute differently (Swin shifts every odd block): the deeper model does not "
            "start as the template's function",
            stacklevel=4,
        )


def _is_writer(relative: str, writers: Sequence[str]) -> bool:
    return any(relative.startswith(w + ".") for w in writers)


def identity_blocks(
    weights: Mapping[str, Tensor],
    new_blocks: Sequence[NewBlock],
    state: Mapping[str, Tensor],
    target: nn.Module,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """``weights`` (state-dict key -> target tensor) with every tensor of a new block replaced: the
    target's own value for buffers, zero in its residual writers (added where ``weights`` lacks
    one), else drawn from ``generator`` at the statistics of the same tensor of the block before
    it. ``state``: the target's parameters and float buffers. Constants: no gradient flows to them."""
    out = dict(weights)
    for block in new_blocks:
        prefix = block.name + "."
        # Every tensor of the block: a writer the source could not fill must be zero all the same.
        for name in [k for k in state if k.startswith(prefix)]:
            relative, current = name[len(prefix) :], state[name]
            if is_buffer(target, name):  # BN running statistics: a zero running_var would be wrong
                if name in weights:
                    out[name] = current.detach().clone()
            elif _is_writer(relative, block.writers):
                out[name] = torch.zeros_like(current)
            elif name in weights:
                out[name] = drawn_like(weights[f"{block.before}.{relative}"].detach(), current, generator)
    return out
