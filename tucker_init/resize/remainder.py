"""The dense remainder of a template (stem, embeddings, norms, biases, head, block-level vectors)
mapped onto a target of another depth and width (DESIGN.md 1.4).

The remainder follows the templated weights' own rules, so the residual stream stays aligned: a
block-level tensor follows the depth map of its group, and each channel axis of size ``a*d``
follows the group's width map applied to each of its ``a`` chunks of d (the 4 chunks of a ViT's
MLP hidden layer, the 3 of ``qkv.bias``). Channels the width map creates (d' > d under ``slice``)
keep the target's own initialization; under ``zero_fanout`` parameters there are drawn from a normal
with the source tensor's mean and std (new channels with the trained ones' statistics; buffers such
as BN running statistics keep the target's own), and the weights that read them (the input axis of
a Linear or convolution, e.g. the head's new columns) are zero. Axes that are not channel axes are
resized by the adapter first (a ViT's position embedding and patch kernel for another image or
patch size).

Which source tensors, blend weights and axis maps make each target tensor depends only on names
and shapes, so it is worked out once (:func:`plan_remainder`); :func:`map_remainder` then applies
it to the current values, differentiably, as often as needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from backbones import BackboneAdapter
from backbones.axes import AxisRole

from ..templates.layout import ModelLayout
from .axis_maps import AxisMap, width_map
from .axis_roles import AxisRoles

if TYPE_CHECKING:
    from .plan import GroupMatch

__all__ = ["RemainderPlan", "TensorMap", "drawn_like", "is_buffer", "map_remainder", "plan_remainder"]

Candidate = tuple[int, int, AxisMap]
"""``(d, d', width map)`` of one matched group: an axis of ``a*d`` channels maps by it, tiled."""
Unit = tuple[int, int, str]
"""``(u, u', rule)``: the common unit width map when groups of one sequence differ in width."""


@dataclass(frozen=True, eq=False)
class TensorMap:
    """How one target tensor is computed from the source's remainder.

    ``value = maps(resize(blend(sources)))``: the source tensor ``sources[0]``, blended as
    ``(1 - t) * a + t * b`` with ``sources[1]`` (the two blocks around an interpolated depth),
    resized by the adapter on non-channel axes when ``resize``, then mapped axis by axis
    (``None``: that axis is kept). Entries set in ``fresh`` (bool, the target's shape) have no
    source and keep the target's own values, or with ``draw`` (width ``zero_fanout``) are drawn
    from a normal with the source tensor's mean and std; entries set in ``zero`` (a subset:
    weights reading a channel that width ``zero_fanout`` created) are zero.

    Attributes:
        name: the target's state-dict key.
        sources: one or two source state-dict keys.
        t: the blend weight (0 with one source).
        resize: call ``adapter.resize_remainder`` first.
        maps: per axis of the (resized) source, an :class:`AxisMap` or ``None``.
        fresh: bool mask of the target's shape, or ``None`` when every entry has a source.
        zero: bool mask of the target's shape, or ``None`` when no entry starts at zero.
        source: what the report says (one of :data:`~tucker_init.resize.report.SOURCES`).
        draw: fresh entries are drawn at the source tensor's statistics, not the target's own.
    """

    name: str
    sources: tuple[str, ...]
    t: float
    resize: bool
    maps: tuple[AxisMap | None, ...]
    fresh: Tensor | None
    zero: Tensor | None
    source: str
    draw: bool = False

    def to(self, device: torch.device | str) -> TensorMap:
        maps = tuple(None if m is None else m.to(device) for m in self.maps)
        fresh, zero = (None if x is None else x.to(device) for x in (self.fresh, self.zero))
        return replace(self, maps=maps, fresh=fresh, zero=zero)

    def apply(
        self,
        source_state: Mapping[str, Tensor],
        current: Tensor,
        target: nn.Module,
        adapter: BackboneAdapter,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The target tensor (``current``'s shape, dtype and device) from the source's tensors;
        ``generator`` draws the fresh entries of a ``draw`` map (default: a fixed seed)."""
        value = source_state[self.sources[0]]
        if len(self.sources) == 2:
            value = value * (1 - self.t) + source_state[self.sources[1]] * self.t
        if self.resize:
            value = adapter.resize_remainder(target, self.name, value)
        stats = value.detach()
        for dim, amap in enumerate(self.maps):
            if amap is not None:
                value = amap.apply(value, dim)
        value = value.to(device=current.device, dtype=current.dtype)
        if self.fresh is not None:  # a constant either way: no gradient to the target's fresh entries
            new = drawn_like(stats, current, generator) if self.draw else current.detach()
            value = torch.where(self.fresh.to(current.device), new, value)
        if self.zero is not None:
            value = value.masked_fill(self.zero.to(current.device), 0.0)
        return value


def drawn_like(stats: Tensor, current: Tensor, generator: torch.Generator | None) -> Tensor:
    """``current``'s shape, drawn from a normal with ``stats``'s mean and std (std 0 for one entry)."""
    generator = generator or torch.Generator().manual_seed(0)
    # Plain numbers: ``stats`` may live on an accelerator, the generator's noise on the CPU.
    mean, std = float(stats.double().mean()), float(stats.double().std(unbiased=False))
    noise = torch.randn(current.shape, generator=generator, dtype=torch.float64)
    return (noise * std + mean).to(device=current.device, dtype=current.dtype)


@dataclass(frozen=True, eq=False)
class RemainderPlan:
    """The mapped tensors, and the report entry of every non-templated target tensor.

    Attributes:
        tensors: one :class:`TensorMap` per target tensor that the source determines.
        entries: ``(name, source)`` for every non-templated tensor of the target's state, in its
            order (``target-init`` for those without a usable source tensor).
        misfits: the source tensors of a target tensor's name that could not be mapped onto it.
    """

    tensors: tuple[TensorMap, ...]
    entries: tuple[tuple[str, str], ...]
    misfits: tuple[str, ...] = ()

    @property
    def note(self) -> str | None:
        """A report note (and warning) naming the misfits, or ``None``."""
        if not self.misfits:
            return None
        return "template tensors not used, the target keeps its own init: " + "; ".join(self.misfits)

    def to(self, device: torch.device | str) -> RemainderPlan:
        return replace(self, tensors=tuple(m.to(device) for m in self.tensors))


def map_remainder(
    plan: RemainderPlan,
    source_state: Mapping[str, Tensor],
    target_state: Mapping[str, Tensor],
    target: nn.Module,
    adapter: BackboneAdapter,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Every target tensor the plan determines, by state-dict key, from the source's remainder
    ``source_state`` (parameters and float buffers by name); differentiable in ``source_state``.
    A tensor that needs no change may be returned as the source's tensor itself. ``generator``
    draws the new channels' entries under width ``zero_fanout``."""
    return {m.name: m.apply(source_state, target_state[m.name], target, adapter, generator) for m in plan.tensors}


# ------------------------------------------------------------------------------------ planning
def _axis_maps_for(
    src_shape: tuple[int, ...],
    tgt_shape: tuple[int, ...],
    candidates: Sequence[Candidate],
    unit: Unit | None = None,
) -> list[AxisMap | None] | None:
    """Per axis: ``None`` (same size, identity) or the width map of a ``(d, d', map)`` candidate
    whose chunk count fits, else (with ``unit = (u, u', rule)``) ``width_map(n, n u'/u, rule)``;
    the whole tensor is ``None`` when some axis cannot be mapped."""
    if len(src_shape) != len(tgt_shape):
        return None
    maps: list[AxisMap | None] = []
    for n, n_new in zip(src_shape, tgt_shape, strict=True):
        if n == n_new:
            maps.append(None)
            continue
        fits = [(n // d, wmap) for d, d_new, wmap in candidates if n % d == 0 and n_new == (n // d) * d_new]
        if not fits and unit is not None and n * unit[1] == n_new * unit[0]:
            fits = [(1, width_map(n, n_new, unit[2]))]
        if not fits:
            return None
        fits.sort(key=lambda c: c[0])  # prefer a = 1: a residual-stream axis, not an inner chunked one
        maps.append(fits[0][1].tile(fits[0][0]))
    return maps


def _fresh_mask(maps: Sequence[AxisMap | None], shape: torch.Size) -> Tensor | None:
    """The entries that no source entry reaches (a fresh row along any axis), or ``None``."""
    fresh = torch.zeros(shape, dtype=torch.bool)
    for dim, amap in enumerate(maps):
        if amap is not None and amap.has_fresh:
            view = [1] * len(shape)
            view[dim] = -1
            fresh = fresh | amap.fresh.view(view)
    return fresh if fresh.any() else None


def _reading_axis(target: nn.Module, name: str) -> int | None:
    """The input-channel axis of ``name`` when it is the weight of a Linear or convolution, else ``None``."""
    module_name, _, leaf = name.rpartition(".")
    if leaf != "weight":
        return None
    try:
        module = target.get_submodule(module_name)
    except AttributeError:
        return None
    return 1 if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) else None


def is_buffer(target: nn.Module, name: str) -> bool:
    """Whether the state-dict key ``name`` is a buffer of ``target`` (not a parameter)."""
    module_name, _, leaf = name.rpartition(".")
    try:
        return leaf in target.get_submodule(module_name)._buffers
    except AttributeError:
        return False


def _zero_mask(maps: Sequence[AxisMap | None], shape: torch.Size, axis: int | None) -> Tensor | None:
    """The entries along ``axis`` that read a channel created by a ``zero_fanout`` map, or ``None``."""
    amap = None if axis is None or axis >= len(maps) else maps[axis]
    if amap is None or not (amap.zero_fanout and amap.has_fresh):
        return None
    view = [1] * len(shape)
    view[axis] = -1
    return amap.fresh.view(view).expand(shape).clone()


def _tensor_map(
    name: str,
    sources: tuple[str, ...],
    t: float,
    resize: bool,
    maps: list[AxisMap | None],
    current: Tensor,
    label: str,
    target: nn.Module,
) -> TensorMap:
    fresh = _fresh_mask(maps, current.shape)
    zero = _zero_mask(maps, current.shape, _reading_axis(target, name))
    # Buffers (BN running statistics) keep the target's own init: a drawn running_var could be negative.
    draw = not is_buffer(target, name) and any(m is not None and m.zero_fanout and m.has_fresh for m in maps)
    return TensorMap(name, sources, t, resize, tuple(maps), fresh, zero, label, draw)


def _changes(maps: Sequence[AxisMap | None]) -> tuple[bool, bool]:
    """``(interpolated, changed)``: whether any axis mixes entries / is not the identity."""
    used = [m for m in maps if m is not None]
    return any(not m.is_selection for m in used), any(not m.is_identity for m in used)


# A planned tensor: (map or None, its report entry, the source shape that did not fit or None).
_Planned = tuple[TensorMap | None, str, tuple[int, ...] | None]
# The adapter's roles of a tensor's axes (``remainder_axes``; None: the size rule) and their resolver.
_Axes = tuple[tuple[AxisRole | None, ...] | None, AxisRoles]


def _maps(
    axes: _Axes,
    src_shape: tuple[int, ...],
    tgt_shape: tuple[int, ...],
    candidates: Sequence[Candidate],
    unit: Unit | None,
) -> list[AxisMap | None] | None:
    """The axis maps by the adapter's roles where it names them, else by the axes' sizes."""
    roles, resolver = axes
    if roles is not None:
        return resolver.maps(roles, src_shape, tgt_shape)
    return _axis_maps_for(src_shape, tgt_shape, candidates, unit)


def _plan_global(
    name: str,
    current: Tensor,
    source_state: Mapping[str, Tensor],
    target: nn.Module,
    adapter: BackboneAdapter,
    candidates: Sequence[Candidate],
    unit: Unit | None,
    axes: _Axes,
) -> _Planned:
    """A tensor outside the blocks (stem, embeddings, final norm, head), by the same name."""
    src = source_state.get(name)
    if src is None:
        return None, "target-init", None
    with torch.no_grad():  # only its shape matters here
        resized = adapter.resize_remainder(target, name, src)
    if resized is not None:  # e.g. a position embedding on another patch grid
        src = resized
    maps = _maps(axes, tuple(src.shape), tuple(current.shape), candidates, unit)
    if maps is None:
        return None, "target-init", tuple(src.shape)
    interp, changed = _changes(maps)
    interp |= resized is not None
    label = "interpolated" if interp else ("selected" if changed else "copied")
    return _tensor_map(name, (name,), 0.0, resized is not None, maps, current, label, target), label, None


def _plan_block(
    name: str,
    current: Tensor,
    source_state: Mapping[str, Tensor],
    source_layout: ModelLayout,
    target_layout: ModelLayout,
    block: str,
    m: GroupMatch,
    l_new: int,
    target: nn.Module,
    adapter: BackboneAdapter,
    axes: _Axes,
) -> _Planned:
    """A block-level tensor: depth map over the matched template group's blocks, resized by the
    adapter (e.g. a relative position table for another window), then the group's own width
    map (tiled over each axis's chunks of d)."""
    rel = name[len(block) + 1 :]
    src_blocks = source_layout.groups[m.source].block_names
    lo, hi, t = int(m.depth.lo[l_new]), int(m.depth.hi[l_new]), float(m.depth.t[l_new])
    a_name, b_name = f"{src_blocks[lo]}.{rel}", f"{src_blocks[hi]}.{rel}"
    if a_name not in source_state or (t and b_name not in source_state):
        return None, "target-init", None
    shape = tuple(source_state[a_name].shape)
    if t and tuple(source_state[b_name].shape) != shape:
        return None, "target-init", tuple(source_state[b_name].shape)
    with torch.no_grad():  # only its shape matters here
        resized = adapter.resize_remainder(target, name, source_state[a_name])
    if resized is not None:
        shape = tuple(resized.shape)
    g_src, g_tgt = source_layout.groups[m.source], target_layout.groups[m.target]
    maps = _maps(axes, shape, tuple(current.shape), [(g_src.width, g_tgt.width, m.width)], None)
    if maps is None:
        return None, "target-init", shape
    interp, changed = _changes(maps)
    interp |= resized is not None
    label = "interpolated" if t or interp else ("selected" if changed or a_name != name else "copied")
    sources = (a_name, b_name) if t else (a_name,)
    return _tensor_map(name, sources, t, resized is not None, maps, current, label, target), label, None


def _enclosing_block(name: str, blocks: Mapping[str, Any]) -> str | None:
    """The longest block path that is a prefix of the parameter ``name``."""
    block = name.rpartition(".")[0]
    while block and block not in blocks:
        block = block.rpartition(".")[0]
    return block or None


def plan_remainder(
    source_state: Mapping[str, Tensor],
    source_layout: ModelLayout,
    target_state: Mapping[str, Tensor],
    target: nn.Module,
    target_layout: ModelLayout,
    matches: Sequence[GroupMatch],
    adapter: BackboneAdapter,
    unit: Unit | None = None,
) -> RemainderPlan:
    """How each non-templated tensor of ``target_state`` comes from ``source_state`` (the
    source's remainder parameters and float buffers): by the depth map of its block's group and
    the width maps, or by name outside the blocks; axes by the adapter's ``remainder_axes`` where
    it names them. Source tensors that do not fit the target are listed as misfits; the target
    keeps its own init there, and for buffers the adapter calls derived (``is_derived``)."""
    templated = target_layout.templated_names()
    block_of: dict[str, tuple[GroupMatch, int]] = {}
    for m in matches:
        for l_new, block in enumerate(target_layout.groups[m.target].block_names):
            block_of[block] = (m, l_new)
    candidates: list[Candidate] = [
        (source_layout.groups[m.source].width, target_layout.groups[m.target].width, m.width) for m in matches
    ]
    resolver = AxisRoles(source_layout, target_layout, matches)
    tensors, entries, misfits = [], [], []
    for name, current in target_state.items():
        if name in templated:
            continue
        if adapter.is_derived(target, name):  # computed by the target from its geometry
            entries.append((name, "target-init"))
            continue
        axes = (adapter.remainder_axes(target, name), resolver)
        block = _enclosing_block(name, block_of)
        if block is None:
            planned = _plan_global(name, current, source_state, target, adapter, candidates, unit, axes)
        else:
            m, l_new = block_of[block]
            planned = _plan_block(
                name, current, source_state, source_layout, target_layout, block, m, l_new, target, adapter, axes
            )
        tensor_map, label, misfit = planned
        entries.append((name, label))
        if tensor_map is not None:
            tensors.append(tensor_map)
        if misfit is not None:
            misfits.append(f"{name!r} {misfit} does not fit the target's {tuple(current.shape)}")
    return RemainderPlan(tuple(tensors), tuple(entries), tuple(misfits))
