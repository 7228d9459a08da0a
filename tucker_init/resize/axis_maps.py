"""Axis maps: how an axis of one size (a template's layers or channels) becomes an axis of
another (a target's), by selection, slicing or linear interpolation (DESIGN.md 1.4).

An :class:`AxisMap` is plain data (source indices and weights per output row); ``depth_map`` /
``width_map`` build them from a rule, and :func:`map_width` applies one, filling rows that have
no source (a wider target) with random values of the source's scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ..validation import check_choice

__all__ = ["DEPTH_RULES", "WIDTH_RULES", "AxisMap", "depth_map", "map_width", "uniform_indices", "width_map"]

DEPTH_RULES = ("select", "first", "interpolate", "identity", "learn")
WIDTH_RULES = ("slice", "select", "interpolate", "zero_fanout", "learn")


@dataclass(frozen=True)
class AxisMap:
    """A linear map along one axis: ``out[j] = (1 - t[j]) * src[lo[j]] + t[j] * src[hi[j]]``.

    Rows with ``fresh[j]`` have no source (a width larger than the source's under ``slice``);
    their value is supplied by the caller (random scaler rows, or the target's own init). With
    ``zero_fanout`` (width rule ``zero_fanout``) the weights that *read* a fresh channel start at
    zero instead, so the new channels change no output until training makes them, and the
    templated weights that *write* one get independent noise (see ``target_weights``).

    Attributes:
        lo, hi: ``(n_out,)`` int64 source indices. t: ``(n_out,)`` float64 weights in [0, 1).
        fresh: ``(n_out,)`` bool. n_in: size of the source axis.
        zero_fanout: the readers of fresh channels start at zero.
    """

    lo: Tensor
    hi: Tensor
    t: Tensor
    fresh: Tensor
    n_in: int
    zero_fanout: bool = False
    # Computed once here: apply() runs every training step when a plan is reused, and reading a
    # flag off a tensor on an accelerator would wait for it each time.
    is_selection: bool = field(init=False, repr=False, compare=False)
    """True when every output row is one source row (no interpolation)."""
    has_fresh: bool = field(init=False, repr=False, compare=False)
    """True when some output row has no source."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_selection", bool((self.t == 0).all()))
        object.__setattr__(self, "has_fresh", bool(self.fresh.any()))

    @classmethod
    def selection(cls, lo: Tensor, n_in: int, fresh: Tensor | None = None) -> AxisMap:
        """The map that takes source row ``lo[j]`` as output row j (no interpolation).

        Args:
            lo: ``(n_out,)`` int64 source indices. n_in: size of the source axis.
            fresh: ``(n_out,)`` bool, rows without a source (default: none).
        """
        n_out = int(lo.numel())
        fresh = torch.zeros(n_out, dtype=torch.bool) if fresh is None else fresh
        return cls(lo, lo, torch.zeros(n_out, dtype=torch.float64), fresh, n_in)

    @property
    def n_out(self) -> int:
        return int(self.lo.numel())

    @property
    def is_identity(self) -> bool:
        return (
            self.n_in == self.n_out
            and self.is_selection
            and not self.has_fresh
            and bool((self.lo.cpu() == torch.arange(self.n_in)).all())
        )

    def to(self, device: torch.device | str) -> AxisMap:
        """The same map with its index tensors on ``device`` (where the tensors it maps live)."""
        lo, hi, t, fresh = (x.to(device) for x in (self.lo, self.hi, self.t, self.fresh))
        return replace(self, lo=lo, hi=hi, t=t, fresh=fresh)

    def apply(self, x: Tensor, dim: int = 0) -> Tensor:
        """Map axis ``dim`` of ``x`` (size n_in) to size n_out; fresh rows come out as the first
        source row and must be overwritten by the caller."""
        if x.shape[dim] != self.n_in:
            raise ValueError(
                f"axis {dim} of a {tuple(x.shape)} tensor has size {x.shape[dim]}, map expects {self.n_in}"
            )
        lo = x.index_select(dim, self.lo.to(x.device))
        if self.is_selection:
            return lo  # exact: no arithmetic on selected values
        hi = x.index_select(dim, self.hi.to(x.device))
        shape = [1] * x.ndim
        shape[dim] = -1
        t = self.t.to(device=x.device, dtype=x.dtype).view(shape)
        return lo * (1 - t) + hi * t

    def tile(self, chunks: int) -> AxisMap:
        """The same map applied to each of ``chunks`` consecutive blocks of n_in (e.g. the q, k, v
        parts of a qkv axis): ``(chunks*n_in) -> (chunks*n_out)``."""
        if chunks == 1:
            return self
        offsets = (torch.arange(chunks, device=self.lo.device) * self.n_in).repeat_interleave(self.n_out)
        return AxisMap(
            lo=self.lo.repeat(chunks) + offsets,
            hi=self.hi.repeat(chunks) + offsets,
            t=self.t.repeat(chunks),
            fresh=self.fresh.repeat(chunks),
            n_in=self.n_in * chunks,
            zero_fanout=self.zero_fanout,
        )


def _interpolation(n_in: int, n_out: int) -> AxisMap:
    # Output j sits at source position j*(n_in-1)/(n_out-1); integer arithmetic keeps positions
    # that land on a source row exact (so n_out == n_in is the identity, bit for bit).
    j = torch.arange(n_out, dtype=torch.int64)
    if n_out == 1 or n_in == 1:
        lo = torch.zeros(n_out, dtype=torch.int64)
        t = torch.zeros(n_out, dtype=torch.float64)
    else:
        num = j * (n_in - 1)
        lo = num // (n_out - 1)
        t = (num % (n_out - 1)).double() / (n_out - 1)
    hi = torch.clamp(lo + 1, max=n_in - 1)
    return AxisMap(lo, hi, t, torch.zeros(n_out, dtype=torch.bool), n_in)


def _evenly_spaced(n_in: int, n_out: int) -> Tensor:
    """``round(linspace(0, n_in-1, n_out))`` as int64 ``(n_out,)``."""
    return torch.linspace(0, n_in - 1, n_out, dtype=torch.float64).round().long()


def uniform_indices(n_in: int, n_out: int) -> Tensor:
    """Evenly spaced indices ``(n_out,)`` int64 of ``n_out`` out of ``n_in`` elements (weight selection, Xu et al.
    2023): every ``n_in // n_out``-th element when it divides, else ``round(linspace(0, n_in-1, n_out))``.
    Width ``select`` uses it so that a lossless template builds weight selection's model; depth
    ``select`` keeps :func:`_evenly_spaced` (first and last layer kept: 12 -> 6 gives
    0, 2, 4, 7, 9, 11 where this gives 0, 2, ..., 10)."""
    if n_out > n_in:
        raise ValueError(f"uniform selection needs n_out <= n_in, found n_out={n_out} > n_in={n_in}")
    if n_in % n_out == 0:
        return torch.arange(n_out) * (n_in // n_out)
    return torch.linspace(0, n_in - 1, n_out, dtype=torch.float64).round().long()


def depth_map(n_in: int, n_out: int, rule: str) -> AxisMap:
    """Map of L source layers to L' target layers under ``rule``: ``select`` (evenly spaced),
    ``first`` (the first L', weight selection's rule; L' <= L), ``interpolate`` (linear over
    normalized depth; ``learn`` starts from it), ``identity`` (``first`` for L' <= L; deeper, every
    source layer once, in order, at target position ``i * L' // L``, and the layers between them
    fresh: new blocks that start as the identity, see :mod:`~tucker_init.resize.new_blocks`).
    A fresh row's ``lo`` is the source layer just before it."""
    check_choice("depth", rule, DEPTH_RULES)
    if rule == "identity" and n_out > n_in:
        kept = torch.arange(n_in) * n_out // n_in  # target positions of the source layers; kept[0] = 0
        fresh = torch.ones(n_out, dtype=torch.bool)
        fresh[kept] = False
        before = torch.cumsum((~fresh).long(), 0) - 1  # the last source layer at or before each row
        return AxisMap.selection(before, n_in, fresh)
    if rule == "identity":
        rule = "first"
    if rule == "first":
        if n_out > n_in:
            raise ValueError(
                f"depth='first' keeps the first {n_out} of the template's {n_in} layers, so the target must not be "
                "deeper; use depth='select' or 'interpolate' for deeper targets"
            )
        lo = torch.arange(n_out)
        return AxisMap.selection(lo, n_in)
    if rule == "select":
        lo = _evenly_spaced(n_in, n_out)
        return AxisMap.selection(lo, n_in)
    return _interpolation(n_in, n_out)


def width_map(n_in: int, n_out: int, rule: str) -> AxisMap:
    """Map of d source channels to d' target channels under ``rule`` (``learn`` starts from slice).

    ``slice`` keeps the first ``min(d, d')`` channels; for d' > d the remaining rows are fresh.
    ``select`` keeps evenly spaced channels (:func:`uniform_indices`, weight selection's rule; d' <= d).
    ``zero_fanout`` is ``slice`` whose fresh channels nothing reads yet: the weights that read them
    start at zero (:attr:`AxisMap.zero_fanout`), the weights that write them at independent noise.
    """
    check_choice("width", rule, WIDTH_RULES)
    if rule == "interpolate":
        return _interpolation(n_in, n_out)
    if rule == "select":
        if n_out > n_in:
            raise ValueError(
                f"width='select' keeps {n_out} evenly spaced of the template's {n_in} channels (per unit), so the "
                "target must not be wider; use width='slice' or 'interpolate' for wider targets"
            )
        lo = uniform_indices(n_in, n_out)
        return AxisMap.selection(lo, n_in)
    j = torch.arange(n_out, dtype=torch.int64)
    fresh = j >= n_in
    lo = torch.where(fresh, torch.zeros_like(j), j)
    return replace(AxisMap.selection(lo, n_in, fresh), zero_fanout=rule == "zero_fanout")


def _random_rows(like: Tensor, rows: int, dim: int, generator: torch.Generator, per_column: bool) -> Tensor:
    """``rows`` random entries along ``dim`` with ``like``'s scale (per column of a matrix)."""
    shape = list(like.shape)
    shape[dim] = rows
    noise = torch.randn(shape, generator=generator, dtype=torch.float64).to(like.dtype)
    if per_column:
        return noise * like.std(dim=dim, keepdim=True, unbiased=False)
    return noise * like.std(unbiased=False)


def map_width(
    x: Tensor, dim: int, wmap: AxisMap, generator: torch.Generator, per_column: bool, reads: bool = False
) -> Tensor:
    """Apply ``wmap`` along ``dim``; its fresh rows get random values of ``x``'s scale (per
    column of a matrix with ``per_column``), drawn from ``generator``, or zeros when ``x``'s
    ``dim`` is the input side of the weights (``reads``) and the map is ``zero_fanout``."""
    out = wmap.apply(x, dim)
    if wmap.has_fresh:
        rows = int(wmap.fresh.sum())
        if reads and wmap.zero_fanout:
            new = x.new_zeros([rows if i == dim else n for i, n in enumerate(x.shape)])
        else:
            new = _random_rows(x, rows, dim, generator, per_column)
        index = wmap.fresh.nonzero().flatten().to(x.device)
        out = out.index_copy(dim, index, new.to(x.device))
    return out
