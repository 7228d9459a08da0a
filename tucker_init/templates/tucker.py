"""Tucker templates: T ~= G x1 X x2 U x3 V (SWEET, DESIGN.md section 1.2).

Functions here work on plain tensors: the group's unified tensor ``T`` of shape
``(n, d, d)`` (n = S*L slices), the core ``G`` of shape ``(r1, r2, r3)``, and the scalers
``X (n, r1)``, ``U (d, r2)``, ``V (d, r3)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["depth_last", "hosvd", "mode_unfold", "shared_core", "tucker_reconstruct"]


# What a float moved costs, in multiply-adds: this CPU runs a single-thread GEMM at about
# 60 GFLOP/s and streams about 7 GB/s, i.e. 30 FLOPs (~17 multiply-adds) per 4-byte float moved.
_MADDS_PER_FLOAT = 17


def _gemm_cost(m: int, k: int, n: int) -> int:
    """Cost of an ``(m, k) @ (k, n)`` product (forward and backward scale alike): its
    multiply-adds plus the floats it reads and writes."""
    return m * k * n + _MADDS_PER_FLOAT * (m * k + k * n + m * n)


def depth_last(core_shape: Sequence[int], n: int, d_out: int, d_in: int) -> bool:
    """Whether :func:`tucker_reconstruct` applies X last (else first) for these shapes.

    X last builds ``M (r1, d_out, d_in)`` and expands it to n slices, X first builds
    ``(n, d_out, r3)`` and expands it to d_in columns. X last is cheaper when r1 is well
    below n; with ``r1 = n`` (a full-rank depth mode) X first saves the ``(r1, d, d)`` tensor
    and the product with few inner columns (``K = r1``) that streams it.
    """
    r1, r2, r3 = core_shape
    last = _gemm_cost(r1 * d_out, r2, r3) + _gemm_cost(r1 * d_out, r3, d_in) + _gemm_cost(n, r1, d_out * d_in)
    first = _gemm_cost(n, r1, r2 * r3) + _gemm_cost(n * d_out, r2, r3) + _gemm_cost(n * d_out, r3, d_in)
    return last <= first


def tucker_reconstruct(core: Tensor, X: Tensor, U: Tensor, V: Tensor) -> Tensor:
    """``G x1 X x2 U x3 V``.

    Three matrix products, each a plain GEMM whose output is the next one's contiguous row-major
    input and whose backward meets row-major gradients (the order comes from
    :func:`depth_last`). The output is contiguous.

    Args:
        core: ``(r1, r2, r3)``.
        X: ``(n, r1)`` depth scaler. U: ``(d_out, r2)``, V: ``(d_in, r3)`` width scalers.

    Returns:
        ``(n, d_out, d_in)``.
    """
    r1, r2, r3 = core.shape
    n, d_out, d_in = X.shape[0], U.shape[0], V.shape[0]
    if depth_last(core.shape, n, d_out, d_in):
        M = torch.matmul(U, core) @ V.T  # (r1, d_out, r3) @ (r3, d_in): small, then one GEMM
        return (X @ M.reshape(r1, d_out * d_in)).view(n, d_out, d_in)
    Y = (X @ core.reshape(r1, r2 * r3)).view(n, r2, r3)
    return torch.matmul(U, Y) @ V.T  # (n, d_out, r3) @ (r3, d_in): one GEMM


def mode_unfold(tensor: Tensor, mode: int) -> Tensor:
    """Mode-``mode`` unfolding (tensorly's convention): ``(I_mode, prod of the others)``."""
    return torch.movedim(tensor, mode, 0).reshape(tensor.shape[mode], -1)


def _leading_left_vectors(matrix: Tensor, rank: int) -> Tensor:
    """The ``rank`` leading left singular vectors of ``matrix (n, m)``, in float64.

    Memory stays proportional to the matrix (and to the ``(n, rank)`` answer): a wide matrix
    (n <= m) uses the eigen-decomposition of its small ``n x n`` Gram, much cheaper than an SVD
    of the wide unfolding; a long one (n > m) an economy SVD, never the ``n x n`` Gram (118800
    slices of 4 x 4 would ask for 113 GB). Vectors beyond the matrix's rank complete the basis.
    """
    m64 = matrix.double()
    n, m = m64.shape
    if n <= m:
        _, vectors = torch.linalg.eigh(m64 @ m64.T)
        return vectors[:, -rank:].flip(-1)
    vectors = torch.linalg.svd(m64, full_matrices=False).U[:, :rank]  # (n, min(rank, m))
    if vectors.shape[1] < rank:
        # Orthonormal completion: QR of [U, first unit vectors] keeps U's span first.
        padded = torch.cat([vectors, torch.eye(n, rank, dtype=m64.dtype)], dim=1)
        q, r = torch.linalg.qr(padded)
        vectors = q[:, :rank] * torch.sign(torch.diagonal(r)[:rank]).where(torch.diagonal(r)[:rank] != 0, 1.0)
    return vectors


def hosvd(tensor: Tensor, ranks: Sequence[int]) -> tuple[Tensor, list[Tensor]]:
    """Truncated higher-order SVD.

    Args:
        tensor: ``(n, d_out, d_in)``.
        ranks: ``(r1, r2, r3)``, each at most the matching mode size.

    Returns:
        ``(core (r1, r2, r3), [X (n, r1), U (d_out, r2), V (d_in, r3)])`` with orthonormal
        factor columns; exact when the ranks equal the mode sizes.
    """
    # float16 / bfloat16 are decomposed in float32 (factors in float64), then cast back once.
    work = tensor.to(torch.promote_types(tensor.dtype, torch.float32))
    factors = [_leading_left_vectors(mode_unfold(work, m), r).to(work.dtype) for m, r in enumerate(ranks)]
    core = project(work, factors)
    return core.to(tensor.dtype), [f.to(tensor.dtype) for f in factors]


def project(tensor: Tensor, factors: Sequence[Tensor]) -> Tensor:
    """``T x1 X^T x2 U^T x3 V^T``: the best core for orthonormal factors."""
    X, U, V = factors
    return torch.einsum("noi,na,ob,ic->abc", tensor, X, U, V)


def shared_core(tensors: Sequence[Tensor], ranks: Sequence[int]) -> tuple[Tensor, list[list[Tensor]]]:
    """One core for several groups, each with its own factors.

    Each group's factors come from its own truncated HOSVD; given orthonormal factors,
    the least-squares core minimising ``sum_g ||T_g - G x X_g x U_g x V_g||^2`` is the mean
    of the groups' projected cores.

    Returns:
        ``(core (r1, r2, r3), [[X_g, U_g, V_g] for each group])``.
    """
    cores, factors = zip(*(hosvd(t, ranks) for t in tensors), strict=True)
    return torch.stack(cores).mean(0), [list(f) for f in factors]
