"""What the axes of a dense (remainder) tensor index, so that ``initialize()`` resizes them right.

By default ``initialize()`` guesses a remainder tensor's channel axes from their sizes. That
guess fails where sizes say too little: a Swin patch merging ``(C_i, 4 C_{i-1})`` whose input
is four copies of the previous stage's channels (not two of this stage's), a relative position
bias table ``((2w-1)^2, heads)`` whose second axis counts heads, a mixed RoPE's learned
frequencies ``(depth, 2, heads, head_dim / 4)`` with one row per block. An adapter names such
axes with :class:`AxisRole` (``BackboneAdapter.remainder_axes``); the core turns each role
into the matching depth or width map of the template group that serves the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AXIS_KINDS", "AxisRole", "depth_axis", "heads_axis", "width_axis"]

AXIS_KINDS = ("width", "heads", "depth")


@dataclass(frozen=True)
class AxisRole:
    """One axis of a remainder tensor, in terms of a block sequence's group.

    Attributes:
        kind: ``"width"``: channels of ``sequence`` (size ``k * d`` for the group's unit width d:
            the group's width map on each of its k chunks, e.g. the 4 spatial copies that a Swin
            patch merging concatenates); ``"heads"``: the attention heads of ``sequence``, each of
            ``head_dim`` channels (whole heads follow the channels that the width map keeps);
            ``"depth"``: one entry per block of ``sequence`` (the group's depth map).
        sequence: the block sequence's module path, e.g. ``"blocks"`` or ``"layers.1.blocks"``.
        head_dim: channels per head; only for ``kind="heads"``.
    """

    kind: str
    sequence: str
    head_dim: int = 0

    def __post_init__(self) -> None:
        if self.kind not in AXIS_KINDS:
            raise ValueError(f"AxisRole.kind must be one of {list(AXIS_KINDS)}, found {self.kind!r}")
        if not isinstance(self.sequence, str) or not self.sequence:
            raise ValueError(f"AxisRole.sequence must name a block sequence, found {self.sequence!r}")
        if (self.kind == "heads") != (self.head_dim > 0):
            raise ValueError(
                f"AxisRole.head_dim must be positive exactly for kind='heads', found kind={self.kind!r}, "
                f"head_dim={self.head_dim!r}"
            )


def width_axis(sequence: str) -> AxisRole:
    """The channels of ``sequence`` (any whole number of its unit width)."""
    return AxisRole("width", sequence)


def heads_axis(sequence: str, head_dim: int) -> AxisRole:
    """The heads of ``sequence``'s attention, ``head_dim`` channels each."""
    return AxisRole("heads", sequence, head_dim)


def depth_axis(sequence: str) -> AxisRole:
    """One entry per block of ``sequence``."""
    return AxisRole("depth", sequence)
