"""Checks on user input, run before any decomposition. Each error names the argument,
what was expected and what was found."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "as_int",
    "check_choice",
    "check_finite",
    "check_int",
    "check_materialized",
    "full_ranks",
    "rank_tuple",
]


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` must be one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, found {value!r}")
    return value


def as_int(value: Any) -> int | None:
    """``value`` as a plain int when it is an integer of any standard kind (Python, numpy, a
    0-d torch integer tensor), else ``None`` (bools, floats, strings...)."""
    if isinstance(value, bool | np.bool_) or (isinstance(value, Tensor) and value.dtype == torch.bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as a plain int: Python, numpy and 0-d torch integers are accepted
    (``operator.index``), bools and floats are not; with ``minimum``, it must be at least that."""
    result = as_int(value)
    if result is None:
        raise TypeError(f"{name} must be an int, found {type(value).__name__} {value!r}")
    if minimum is not None and result < minimum:
        expected = "positive" if minimum == 1 else f"at least {minimum}"
        raise ValueError(f"{name} must be {expected}, found {result}")
    return result


def rank_tuple(ranks: Any) -> tuple[int, int, int]:
    """``ranks`` as three positive plain ints (a sequence, a numpy array or a 1-D tensor)."""
    if isinstance(ranks, np.ndarray | Tensor):
        if ranks.ndim != 1:
            raise ValueError(f"ranks must be a 1-D array of 3 ints, found an array of shape {tuple(ranks.shape)}")
        ranks = list(ranks)
    if isinstance(ranks, str) or not isinstance(ranks, Sequence):
        raise TypeError(
            f"ranks must be a tuple of 3 ints (r1, r2, r3) or 'full', found {type(ranks).__name__} {ranks!r}"
        )
    if len(ranks) != 3:
        raise ValueError(f"ranks must have 3 entries (r1, r2, r3), found {len(ranks)}: {tuple(ranks)!r}")
    r1, r2, r3 = (check_int(f"ranks[{i}]", r, minimum=1) for i, r in enumerate(ranks))
    return (r1, r2, r3)


def full_ranks(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The multilinear rank bound of a ``(n, d, d)`` tensor: each mode's size, capped at the
    product of the other two (a mode unfolding has no more independent rows than columns).
    Lossless, and the depth scaler of a long, thin group stays ``(n, d*d)`` instead of ``(n, n)``."""
    n, d_out, d_in = shape
    return (min(n, d_out * d_in), min(d_out, n * d_in), min(d_in, n * d_out))


def check_finite(named_tensors: Iterable[tuple[str, Tensor]], kind: str = "parameter", where: str = "") -> None:
    """Every floating-point tensor must hold only finite values; the error names the ``kind``
    of tensor (parameter, buffer, tensor), its name and ``where`` it came from (a file)."""
    for name, tensor in named_tensors:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = (~torch.isfinite(tensor)).sum().item()
            raise ValueError(f"{kind} {name!r} holds {bad} non-finite value(s) (NaN or Inf){where}")


def check_materialized(model: nn.Module, name: str = "model") -> None:
    """``model`` must hold real values: a meta-device tensor has a shape but no data, and any
    decomposition or copy into it would be silently empty."""
    for key, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_meta:
            raise ValueError(
                f"{name} has tensors on the meta device (e.g. {key!r}), which hold no values; "
                "materialize it first, e.g. model.to_empty(device='cpu') and load its weights"
            )
