"""Checks on user input, run before any decomposition. Each error names the argument,
what was expected and what was found."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from .layout import ModelLayout

__all__ = ["check_choice", "check_finite", "check_ranks"]

TUCKER_MODES = (
    "mode 1 (depth: S*L slices, scaler X)",
    "mode 2 (output width, scaler U)",
    "mode 3 (input width, scaler V)",
)
KRONECKER_MODES = ("number of templates k", "template rows a", "template columns b")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` must be one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, found {value!r}")
    return value


def _rank_tuple(ranks: Any) -> tuple[int, int, int]:
    if isinstance(ranks, str) or not isinstance(ranks, Sequence):
        raise TypeError(
            f"ranks must be a tuple of 3 ints (r1, r2, r3) or 'full', found {type(ranks).__name__} {ranks!r}"
        )
    if len(ranks) != 3:
        raise ValueError(f"ranks must have 3 entries (r1, r2, r3), found {len(ranks)}: {tuple(ranks)!r}")
    for i, r in enumerate(ranks):
        if isinstance(r, bool) or not isinstance(r, int):
            raise TypeError(f"ranks[{i}] must be an int, found {type(r).__name__} {r!r}")
        if r <= 0:
            raise ValueError(f"ranks[{i}] must be positive, found {r}")
    return (int(ranks[0]), int(ranks[1]), int(ranks[2]))


def check_ranks(ranks: Any, layout: ModelLayout, method: str, share: bool) -> list[tuple[int, int, int]]:
    """Validate ``ranks`` against every group and return the ranks used for each group.

    Tucker: ``r_m`` may not exceed mode m of a group's ``(S*L, d, d)`` tensor; with a shared
    template the limit is the smallest group's. ``"full"`` takes each group's own mode sizes
    (lossless; with a shared template only when there is one group).
    Kronecker: ``(k, a, b)`` with ``a`` and ``b`` dividing every group's width and
    ``k <= a*b``; ``"full"`` is not defined (pass ``(a*b, a, b)``).
    """
    groups = layout.groups
    if method == "kronecker":
        if ranks == "full":
            raise ValueError(
                "ranks='full' is only defined for method='tucker'; for Kronecker pass (k, a, b), lossless at k = a*b"
            )
        k, a, b = _rank_tuple(ranks)
        for axis, size in (("a", a), ("b", b)):
            for g in groups:
                if g.width % size:
                    common = math.gcd(*(g.width for g in groups))
                    divisors = [x for x in range(1, common + 1) if common % x == 0]
                    raise ValueError(
                        f"ranks: template size {axis}={size} does not divide the width "
                        f"d={g.width} of group {g.name!r}; sizes that divide every group: {divisors}"
                    )
        if k > a * b:
            raise ValueError(f"ranks[0]: {KRONECKER_MODES[0]} allows at most a*b = {a * b}, found {k}")
        return [(k, a, b)] * len(groups)

    if ranks == "full":
        if share and len(groups) > 1:
            sizes = [g.shape for g in groups]
            raise ValueError(
                f"ranks='full' needs one template per group (share=False): the {len(groups)} "
                f"groups have different mode sizes {sizes}"
            )
        return [g.shape for g in groups]
    wanted = _rank_tuple(ranks)
    for mode, r in enumerate(wanted):
        for g in groups:
            if r > g.shape[mode]:
                limit = min(x.shape[mode] for x in groups) if share else g.shape[mode]
                raise ValueError(
                    f"ranks[{mode}]={r} exceeds the maximum {limit} for {TUCKER_MODES[mode]} "
                    f"of group {g.name!r} (unified tensor {g.shape})"
                )
    return [wanted] * len(groups)


def check_finite(named_tensors: Iterable[tuple[str, Tensor]]) -> None:
    """Every tensor must hold only finite values."""
    for name, tensor in named_tensors:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = (~torch.isfinite(tensor)).sum().item()
            raise ValueError(f"parameter {name!r} holds {bad} non-finite value(s) (NaN or Inf)")
