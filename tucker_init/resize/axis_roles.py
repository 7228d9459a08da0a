"""Axis maps for remainder tensors whose axes the adapter names (``BackboneAdapter.remainder_axes``).

An adapter says what an axis of a dense tensor indexes (:class:`backbones.axes.AxisRole`):

- ``width`` of sequence s: k chunks of the unit width d of s's group, mapped by the group's
  width map tiled k times (a Swin patch merging's input: 4 copies of the previous stage);
- ``heads`` of sequence s, ``head_dim`` channels each: the heads whose channels the group's width
  map keeps, in their order (slice: the first heads of each chunk of d); under ``interpolate``
  the heads of each chunk are interpolated linearly, like the channels; under ``select``, whose
  evenly spaced channels mix heads, evenly spaced heads (weight selection's rule for them);
- ``depth`` of sequence s: one entry per block, mapped by the group's depth map.

Each role resolves against the one group of its sequence (Swin stages, a ViT's blocks); a
sequence of several groups (a ResNet stage) has no single map, so such a role does not resolve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from backbones.axes import AxisRole

from ..templates.layout import ModelLayout
from .axis_maps import AxisMap, uniform_indices, width_map

if TYPE_CHECKING:
    from .plan import GroupMatch

__all__ = ["AxisRoles"]


def _sequence_name(group_name: str) -> str:
    """``"layers.1.blocks[0:2]"`` -> ``"layers.1.blocks"``."""
    return group_name.rpartition("[")[0] or group_name


class AxisRoles:
    """Resolves :class:`~backbones.axes.AxisRole` axes to the matched groups' depth and width maps.

    Args:
        source_layout, target_layout: the template's and the target's layouts.
        matches: the group matches of the resize.
    """

    def __init__(self, source_layout: ModelLayout, target_layout: ModelLayout, matches: Sequence[GroupMatch]) -> None:
        per_sequence: dict[str, list[tuple[int, int, GroupMatch]]] = {}
        for m in matches:
            seq = _sequence_name(target_layout.groups[m.target].name)
            d, d_new = source_layout.groups[m.source].width, target_layout.groups[m.target].width
            per_sequence.setdefault(seq, []).append((d, d_new, m))
        # Only sequences of one group have one map for all their channels.
        self._groups = {seq: found[0] for seq, found in per_sequence.items() if len(found) == 1}

    def maps(
        self, roles: Sequence[AxisRole | None], src_shape: Sequence[int], tgt_shape: Sequence[int]
    ) -> list[AxisMap | None] | None:
        """Per axis the map of its role (``None`` for an axis without one, which must keep its
        size), or ``None`` when some axis cannot be mapped onto the target's size."""
        if not (len(roles) == len(src_shape) == len(tgt_shape)):
            return None
        maps: list[AxisMap | None] = []
        for role, n, n_new in zip(roles, src_shape, tgt_shape, strict=True):
            amap = None if role is None else self._axis_map(role, n)
            if (amap is None and n != n_new) or (amap is not None and amap.n_out != n_new):
                return None
            maps.append(None if amap is not None and amap.is_identity else amap)
        return maps

    def _axis_map(self, role: AxisRole, n: int) -> AxisMap | None:
        """The map of ``n`` source entries along ``role``, or ``None`` when it does not resolve."""
        if role.sequence not in self._groups:
            return None
        d, d_new, match = self._groups[role.sequence]
        if role.kind == "depth":
            return match.depth if n == match.depth.n_in else None
        if role.kind == "width":
            return match.width.tile(n // d) if n % d == 0 else None
        return self._heads_map(role.head_dim, n, d, d_new, match.width)

    @staticmethod
    def _heads_map(head_dim: int, n: int, d: int, d_new: int, channels: AxisMap) -> AxisMap | None:
        """``n`` heads of ``head_dim`` channels: per chunk of d, the heads the channel map keeps;
        where it keeps evenly spaced channels that mix heads (width ``select``), evenly spaced heads."""
        if d % head_dim or d_new % head_dim or (n * head_dim) % d:
            return None  # heads would straddle chunks of d; the adapter's check_target says so
        per_chunk, per_chunk_new = d // head_dim, d_new // head_dim
        if not channels.is_selection:
            return width_map(per_chunk, per_chunk_new, "interpolate").tile(n // per_chunk)
        first = torch.arange(per_chunk_new) * head_dim  # each target head's first channel
        lo = channels.lo[first]
        # Whole heads only: each target head's channels are one source head's, in order (or all fresh).
        offsets = torch.arange(head_dim)
        rows = channels.lo[first[:, None] + offsets]
        fresh = channels.fresh[first]
        whole = (lo % head_dim == 0) & (rows == lo[:, None] + offsets).all(dim=1)
        if not bool((whole | fresh).all()):
            if bool(fresh.any()) or per_chunk_new > per_chunk:
                return None
            # Evenly spaced channels (width 'select') mix heads, as weight selection does; its rule
            # for a per-head tensor is the same uniform selection, over heads.
            return AxisMap.selection(uniform_indices(per_chunk, per_chunk_new), per_chunk).tile(n // per_chunk)
        heads = torch.where(fresh, torch.zeros_like(lo), lo // head_dim)
        return AxisMap.selection(heads, per_chunk, fresh.clone()).tile(n // per_chunk)
