"""Layout of block groups: which weights are templated and how they become d x d slices.

A *group* is a run of L blocks whose templated weights have identical shapes; its unit
width d is the gcd of all their channel sizes. Each templated weight of shape
``(a*d, b*d)`` or ``(a*d, b*d, kh, kw)`` is cut into ``a*b*kh*kw`` slices of ``d x d``::

    linear  "(a o) (b i)       -> (a b) o i"
    conv    "(a o) (b i) kh kw -> (a b kh kw) o i"

and the S slices of every block are stacked into the group's unified tensor of shape
``(L*S, d, d)``, block-major (row ``l*S + s`` is slot s of block l).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import reduce
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from backbones import BackboneAdapter

__all__ = ["GroupLayout", "ModelLayout", "ParamSlot", "build_layout"]


@dataclass(frozen=True)
class ParamSlot:
    """One templated weight of a block.

    Attributes:
        name: path inside the block, e.g. ``"attn.qkv.weight"``.
        shape: the weight's shape, ``(a*d, b*d)`` or ``(a*d, b*d, kh, kw)``.
        offset: index of its first slice within the block's S slices.
    """

    name: str
    shape: tuple[int, ...]
    offset: int

    def blocks(self, width: int) -> tuple[int, int]:
        """``(a, b)``: how many d-blocks the output and input axes hold."""
        return self.shape[0] // width, self.shape[1] // width

    def count(self, width: int) -> int:
        """Number of d x d slices, ``a * b * kh * kw``."""
        a, b = self.blocks(width)
        return a * b * math.prod(self.shape[2:])


@dataclass(frozen=True)
class GroupLayout:
    """A run of structurally identical blocks and the slices of their templated weights.

    Attributes:
        name: e.g. ``"blocks[0:12]"``.
        block_names: full module path of each of the L blocks.
        width: unit width d.
        slots: the templated weights of one block.
    """

    name: str
    block_names: tuple[str, ...]
    width: int
    slots: tuple[ParamSlot, ...]

    @property
    def depth(self) -> int:
        """L, the number of blocks."""
        return len(self.block_names)

    @property
    def slices_per_block(self) -> int:
        """S, the number of d x d slices per block."""
        return sum(slot.count(self.width) for slot in self.slots)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the unified tensor, ``(L*S, d, d)``."""
        return (self.depth * self.slices_per_block, self.width, self.width)

    def param_names(self) -> list[str]:
        """Full names of all templated parameters of the group."""
        return [f"{block}.{slot.name}" for block in self.block_names for slot in self.slots]

    def slot_index(self) -> list[int]:
        """For each of the S slices of a block, the index of the slot it comes from."""
        return [i for i, slot in enumerate(self.slots) for _ in range(slot.count(self.width))]

    def stack(self, params: Mapping[str, Tensor]) -> Tensor:
        """Cut the group's weights into its unified tensor.

        Args:
            params: full parameter name -> tensor, holding at least :meth:`param_names`.

        Returns:
            Tensor of shape ``(L*S, d, d)``.
        """
        d = self.width
        per_block = []
        for block in self.block_names:
            pieces = []
            for slot in self.slots:
                w = params[f"{block}.{slot.name}"]
                if w.ndim == 2:
                    w = w[..., None, None]
                pieces.append(rearrange(w, "(a o) (b i) kh kw -> (a b kh kw) o i", o=d, i=d))
            per_block.append(torch.cat(pieces))
        return torch.cat(per_block)

    def _weight_views(self, tensor: Tensor) -> list[tuple[str, Tensor]]:
        """Every templated weight as a strided view of the unified tensor ``(L*S, d, d)``, with
        the weight's axes ``(a, o, b, i, kh, kw)`` (merge ``a o`` and ``b i`` for its shape), in
        :meth:`param_names` order. Writing into the views fills the unified tensor."""
        d = self.width
        per_layer = tensor.view(self.depth, self.slices_per_block, d, d)
        views = []
        for layer, block in zip(per_layer, self.block_names, strict=True):
            for slot in self.slots:
                a, b = slot.blocks(d)
                kernel = slot.shape[2:]
                chunk = layer[slot.offset : slot.offset + slot.count(d)].view(a, b, *kernel, d, d)
                order = (0, 4, 1, 5, 2, 3) if kernel else (0, 2, 1, 3)  # (a b kh kw) o i -> a o b i kh kw
                views.append((f"{block}.{slot.name}", chunk.permute(order)))
        return views

    def unstack(self, tensor: Tensor) -> dict[str, Tensor]:
        """Inverse of :meth:`stack`: ``(L*S, d, d)`` -> full parameter name -> weight.

        Each weight is a new contiguous tensor; in the backward pass each gradient is copied
        once into its place of the unified tensor's gradient (no per-slot ``cat`` or ``stack``).
        """
        names = self.param_names()
        return dict(zip(names, _Unstack.apply(tensor.contiguous(), self), strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "block_names": list(self.block_names),
            "width": self.width,
            "slots": [{"name": s.name, "shape": list(s.shape), "offset": s.offset} for s in self.slots],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GroupLayout:
        slots = tuple(ParamSlot(s["name"], tuple(s["shape"]), s["offset"]) for s in data["slots"])
        return cls(data["name"], tuple(data["block_names"]), int(data["width"]), slots)


class _Unstack(torch.autograd.Function):
    """``GroupLayout.unstack`` with one copy per weight each way: forward copies each strided
    view out, backward copies each weight's gradient into a view of one new tensor."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: GroupLayout) -> tuple[Tensor, ...]:
        ctx.group = group
        ctx.shape = tensor.shape
        shapes = [slot.shape for _ in group.block_names for slot in group.slots]
        views = group._weight_views(tensor)
        # Always a copy (never a view of ``tensor``), in the weight's own row-major layout.
        return tuple(
            v.clone(memory_format=torch.contiguous_format).view(s) for (_, v), s in zip(views, shapes, strict=True)
        )

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor, None]:
        like = next(g for g in grads if g is not None)
        make = torch.empty if all(g is not None for g in grads) else torch.zeros
        out = make(ctx.shape, dtype=like.dtype, device=like.device)
        for (_, view), grad in zip(ctx.group._weight_views(out), grads, strict=True):
            if grad is not None:
                view.copy_(grad.reshape(view.shape))
        return out, None


@dataclass(frozen=True)
class ModelLayout:
    """All groups of a model, in forward order, and the family that produced them."""

    family: str
    groups: tuple[GroupLayout, ...]

    def templated_names(self) -> set[str]:
        """Names of all parameters that the template reconstructs."""
        return {name for group in self.groups for name in group.param_names()}

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "groups": [g.to_dict() for g in self.groups]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelLayout:
        return cls(data["family"], tuple(GroupLayout.from_dict(g) for g in data["groups"]))


def _block_slots(adapter: BackboneAdapter, block: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    slots = []
    for module_name, module in block.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if adapter.is_primary(module, param_name):
                if param.ndim not in (2, 4):
                    raise ValueError(
                        f"adapter {adapter.family!r} marked {module_name}.{param_name} as templated, "
                        f"but it has shape {tuple(param.shape)}; expected (out, in) or (out, in, kh, kw)"
                    )
                full = f"{module_name}.{param_name}" if module_name else param_name
                slots.append((full, tuple(param.shape)))
    return slots


MIN_UNIT_WIDTH = 4


def _check_unit_width(group: GroupLayout) -> None:
    if group.width >= MIN_UNIT_WIDTH:
        return
    sizes = sorted({dim for slot in group.slots for dim in slot.shape[:2]})
    raise ValueError(
        f"group {group.name!r} has unit width d={group.width} (the gcd of its channel sizes {sizes}): "
        f"its {group.shape[0]} slices would hold {group.width**2} weight(s) each, so a template could not "
        f"be smaller than the weights (d must be at least {MIN_UNIT_WIDTH}). Template only weights whose "
        "channel sizes share a larger divisor (GenericAdapter(is_primary=...)) or leave these blocks out "
        "of block_containers"
    )


def _check_untied(model: nn.Module, layout: ModelLayout) -> None:
    """A templated weight shared by two names would be reconstructed twice (and written twice)."""
    first_name: dict[int, str] = {}
    templated = layout.templated_names()
    for name, param in model.named_parameters(remove_duplicate=False):
        other = first_name.setdefault(id(param), name)
        if other != name and (name in templated or other in templated):
            raise ValueError(
                f"weights tied across blocks are not supported: {name!r} is the same tensor as {other!r}; "
                "untie them (e.g. model.x.weight = nn.Parameter(model.x.weight.clone())) or template neither"
            )


def build_layout(model: nn.Module, adapter: BackboneAdapter) -> ModelLayout:
    """Cut each of the adapter's block sequences into groups of identical blocks.

    Raises:
        ValueError: no templated weights; a group of unit width below :data:`MIN_UNIT_WIDTH`;
            a templated weight tied to another parameter.
    """
    groups: list[GroupLayout] = []
    for seq in adapter.block_sequences(model):
        signatures = [tuple(_block_slots(adapter, model.get_submodule(b))) for b in seq.block_names]
        start = 0
        for stop in range(1, len(signatures) + 1):
            if stop < len(signatures) and signatures[stop] == signatures[start]:
                continue
            signature = signatures[start]
            if signature:
                width = reduce(math.gcd, (dim for _, shape in signature for dim in shape[:2]))
                slots, offset = [], 0
                for name, shape in signature:
                    slot = ParamSlot(name, shape, offset)
                    slots.append(slot)
                    offset += slot.count(width)
                groups.append(
                    GroupLayout(
                        name=f"{seq.name}[{start}:{stop}]",
                        block_names=seq.block_names[start:stop],
                        width=width,
                        slots=tuple(slots),
                    )
                )
            start = stop
    if not groups:
        raise ValueError(
            f"adapter {adapter.family!r} found no templated weights in {type(model).__name__}: "
            "no nn.Linear or dense nn.Conv2d inside its blocks"
        )
    for group in groups:
        _check_unit_width(group)
    layout = ModelLayout(family=adapter.family, groups=tuple(groups))
    _check_untied(model, layout)
    return layout
