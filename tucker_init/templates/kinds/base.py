"""The interface of a template kind and the registry of kinds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from ...resize.axis_maps import AxisMap
from ..layout import GroupLayout, ModelLayout

if TYPE_CHECKING:
    from ..template import TemplateConfig

__all__ = ["TemplateKind", "get_kind", "list_kinds", "orthonormal", "register_kind"]

Template = dict[str, Tensor]
Scalers = list[dict[str, Tensor]]


class TemplateKind:
    """How a group's unified tensor ``T (S*L, d, d)`` is factorized.

    Attributes:
        name: the registry key, stored as ``method`` in configs and template files.
        rank_modes: what each of the three ranks means (for error messages).
        width_scaling: whether width-wise stochastic scaling (masks on U, V) applies.
        symbol: the template's letter in plots (``G`` for a Tucker core).
    """

    name: ClassVar[str]
    rank_modes: ClassVar[tuple[str, str, str]]
    width_scaling: ClassVar[bool] = False
    symbol: ClassVar[str] = "T"

    # -- ranks and keys ---------------------------------------------------------------------------
    def check_ranks(self, ranks: Any, layout: ModelLayout, share: bool) -> list[tuple[int, int, int]]:
        """Validate ``ranks`` against every group; the ranks used for each group."""
        raise NotImplementedError

    def template_keys(self, layout: ModelLayout, config: TemplateConfig) -> list[list[str]]:
        """For each group, for each slot: the key of the template tensor it uses."""
        raise NotImplementedError

    def shapes(self, layout: ModelLayout, config: TemplateConfig) -> dict[str, tuple[int, ...]]:
        """Every tensor of a template on ``layout``, keyed as in a template file
        (``template.<key>``, ``scalers.g<i>.<name>``), with its shape."""
        raise NotImplementedError

    # -- building and using ------------------------------------------------------------------------
    def decompose(
        self, tensors: Sequence[Tensor], layout: ModelLayout, config: TemplateConfig
    ) -> tuple[Template, Scalers]:
        """Template and scalers from the groups' unified tensors (``init="hosvd"``; lossless at full rank)."""
        raise ValueError(f"init='hosvd' is not available for {self.name!r} templates; use init='random'")

    def random(
        self, tensors: Sequence[Tensor], layout: ModelLayout, config: TemplateConfig, generator: torch.Generator
    ) -> tuple[Template, Scalers]:
        """A random template whose weights have the RMS of ``tensors`` (``init="random"``)."""
        raise NotImplementedError

    def reconstruct(
        self,
        config: TemplateConfig,
        layout: ModelLayout,
        index: int,
        template: Mapping[str, Tensor],
        scalers: Mapping[str, Tensor],
    ) -> Tensor:
        """Unified tensor ``(S*L, d, d)`` of group ``index``; scalers of another size than the
        layout's (a target of another depth or width) give a tensor of their size."""
        raise NotImplementedError

    # -- other sizes ------------------------------------------------------------------------------
    def check_width(self, ranks: tuple[int, int, int], group: str, d: int, d_new: int, rule: str) -> None:
        """Raise ValueError when the width rule cannot take a group from ``d`` to ``d_new``."""

    def unit_width_maps(self) -> bool:
        """Whether groups of different unit widths may change width together (see initialize)."""
        return True

    def resize_scalers(
        self,
        scalers: Mapping[str, Tensor],
        ranks: tuple[int, int, int],
        depth: AxisMap,
        width: AxisMap,
        source: GroupLayout,
        target: GroupLayout,
        generator: torch.Generator,
    ) -> dict[str, Tensor]:
        """Scalers of ``target`` from those of ``source``: ``depth`` maps the layers, ``width`` the channels."""
        raise NotImplementedError


_KINDS: dict[str, TemplateKind] = {}


def register_kind(cls: type[TemplateKind]) -> type[TemplateKind]:
    """Class decorator: make the kind available by its ``name`` (replacing one of that name)."""
    if not (isinstance(cls, type) and issubclass(cls, TemplateKind)):
        raise TypeError(f"register_kind expects a TemplateKind subclass, found {cls!r}")
    _KINDS[cls.name] = cls()
    return cls


def get_kind(name: str) -> TemplateKind:
    """The kind registered as ``name``.

    Raises:
        ValueError: no such kind; the message lists the registered ones.
    """
    if not isinstance(name, str) or name not in _KINDS:
        raise ValueError(f"method must be one of {list_kinds()}, found {name!r}")
    return _KINDS[name]


def list_kinds() -> list[str]:
    """Names of the registered kinds."""
    return list(_KINDS)


def orthonormal(rows: int, cols: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """A random ``(rows, cols)`` matrix with orthonormal columns (or rows, when wide)."""
    q, _ = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=dtype))
    return q if rows >= cols else q.T


def rms_scale(tensor: Tensor, ranks: Sequence[int]) -> Tensor:
    """The scale of a Gaussian core of size ``ranks`` that, with orthonormal factors, gives
    weights of ``tensor``'s RMS (``||T||_F = ||G||_F``)."""
    return tensor.pow(2).mean().sqrt() * math.sqrt(tensor.numel() / math.prod(ranks))
