"""What an adapter tells the core: where a model's blocks are and which weights are templated.

An adapter locates *block sequences* (``model.blocks`` of a ViT, ``layer1``..``layer4`` of a
ResNet, ``stages.i.blocks`` of a ConvNeXt). The core then cuts each sequence into *groups*
(runs of blocks whose templated weights have identical shapes) and lays every templated
weight out as d x d slices, see :mod:`tucker_init.templates.layout`.

A weight is *templated* (a "primary" weight) when it belongs to an ``nn.Linear`` or to an
``nn.Conv2d`` with ``groups == 1``: both of its leading axes are channel axes. Biases, norm
affines, depthwise kernels and layer-scale vectors stay dense, as do all parameters outside
the blocks (stem, embeddings, down-sampling layers between stages, head).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from .axes import AxisRole

__all__ = ["BackboneAdapter", "BlockSequence", "default_is_primary"]


@dataclass(frozen=True)
class BlockSequence:
    """An ordered run of blocks in one container, e.g. ``model.blocks``.

    Attributes:
        name: the container's module path, e.g. ``"blocks"`` or ``"stages.1.blocks"``.
        block_names: full module path of each block, in forward order.
    """

    name: str
    block_names: tuple[str, ...]


def default_is_primary(module: nn.Module, param_name: str) -> bool:
    """True for the weight of an ``nn.Linear`` or a dense (``groups == 1``) ``nn.Conv2d``."""
    if param_name != "weight":
        return False
    if isinstance(module, nn.Linear):
        return module.in_features > 1 and module.out_features > 1
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.in_channels > 1 and module.out_channels > 1
    return False


def sequence_of(model: nn.Module, path: str) -> BlockSequence:
    """The blocks held by the container at ``path`` (an ``nn.Sequential`` or ``nn.ModuleList``)."""
    container = model.get_submodule(path)
    if not isinstance(container, (nn.Sequential, nn.ModuleList)):
        raise TypeError(
            f"block container {path!r} must be an nn.Sequential or nn.ModuleList, found {type(container).__name__}"
        )
    names = tuple(f"{path}.{child}" for child, _ in container.named_children())
    return BlockSequence(name=path, block_names=names)


class BackboneAdapter:
    """Base class of backbone adapters; subclass it to support a new model family.

    A subclass sets :attr:`family` and :attr:`description`, and implements :meth:`matches`
    and :meth:`block_sequences`. Override :meth:`is_primary` to template other weights, and
    :meth:`width_multiple` when widths must stay multiples of some unit (ViT heads).
    """

    family: ClassVar[str] = "base"
    description: ClassVar[str] = ""
    # What ``model.forward_features(images)`` returns: "NCHW" (a CNN's feature map), "NHWC"
    # (Swin's), "NLC" (a token sequence: ViT, Eva, BEiT), None (not known). The masked-input
    # objective (tucker_init.objectives.mae.MaskedConvAutoencoder) takes the two feature-map layouts.
    features_layout: ClassVar[str | None] = None
    # Candidate sets of a block's residual writers (see :meth:`residual_writers`), tried in order.
    residual_writer_paths: ClassVar[tuple[tuple[str, ...], ...]] = ()
    # Whether a block computes something different at an index of the other parity (Swin's shift).
    block_parity_matters: ClassVar[bool] = False

    def matches(self, model: nn.Module) -> bool:
        """Whether this adapter understands ``model``."""
        raise NotImplementedError

    def block_sequences(self, model: nn.Module) -> list[BlockSequence]:
        """The model's block sequences, in forward order."""
        raise NotImplementedError

    def is_primary(self, module: nn.Module, param_name: str) -> bool:
        """Whether ``module.<param_name>`` (inside a block) is cut into template slices."""
        return default_is_primary(module, param_name)

    def width_multiple(self, model: nn.Module) -> int:
        """Target widths must be multiples of this (e.g. the head dimension of a ViT)."""
        return 1

    def resize_remainder(self, model: nn.Module, name: str, value: Tensor) -> Tensor | None:
        """A template's non-templated tensor ``name`` resized to ``model`` on the axes that are not
        channel (width) axes, e.g. a ViT's position embedding on another patch grid; ``None`` when
        there is nothing to resize. ``initialize()`` then maps the width axes as usual, and a tensor
        that still does not fit stays at the target's init."""
        return None

    def check_target(self, facts: Mapping[str, Any], target: nn.Module) -> None:
        """Raise ValueError when ``target`` cannot be initialized from a template whose source
        model :meth:`describe` gave ``facts``, with a message naming the sizes that work (e.g. a
        ViT whose heads would be split). The core's own checks (families, block structure,
        ranks) run regardless; the default adds none."""

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Size facts recorded in template files, e.g. depth and width."""
        return {
            "class": type(model).__name__,
            "depths": [len(s.block_names) for s in self.block_sequences(model)],
        }

    def remainder_axes(self, model: nn.Module, name: str) -> tuple[AxisRole | None, ...] | None:
        """What each axis of the non-templated tensor ``name`` of ``model`` indexes, where its
        sizes alone do not tell ``initialize()``: a :class:`~backbones.axes.AxisRole` (channels,
        heads or blocks of a block sequence) or ``None`` (an axis that keeps its size, after
        :meth:`resize_remainder`), one entry per axis. ``None`` for the whole tensor: the default
        rule, every axis of another size is a channel axis found by its size."""
        return None

    def residual_writers(self, model: nn.Module, block: str) -> tuple[str, ...] | None:
        """The submodules of ``block`` (a block path of ``model``; the result relative to it) whose
        outputs the block adds to its residual stream: with their parameters zero the block is the
        identity (a ViT's ``attn.proj`` and ``mlp.fc2``, a ResNet block's last BN). ``None``: not
        known, and depth ``identity`` cannot add blocks to this family. The default takes the first
        set of :attr:`residual_writer_paths` that the block has."""
        module = model.get_submodule(block)
        names = {name for name, _ in module.named_modules()}
        return next((paths for paths in self.residual_writer_paths if set(paths) <= names), None)

    def is_derived(self, model: nn.Module, name: str) -> bool:
        """Whether ``name`` is a buffer that ``model`` computes from its geometry (attention masks,
        RoPE tables, index tables): ``initialize()`` leaves the target's own value."""
        return False
