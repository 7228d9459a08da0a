"""Kronecker templates (WAVE / WeiT, DESIGN.md section 1.5).

Each d x d slice is ``W = sum_i kron(S_i, T_i)`` with shared templates ``T_i`` of shape
``(a, b)`` and per-slice coefficients ``S_i`` of shape ``(d/a, d/b)``. Rearranging each slice
(Van Loan & Pitsianis) turns this into a matrix product: ``R(W) = sum_i vec(S_i) vec(T_i)^T``
with ``R(W)`` of shape ``((d/a)*(d/b), a*b)``, so the best shared templates are the leading
right singular vectors of all rearranged slices stacked.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["kron_rearrange", "kronecker_reconstruct", "kronecker_svd"]


def kronecker_reconstruct(coefficients: Tensor, templates: Tensor) -> Tensor:
    """``W[n] = sum_i kron(S[n, i], T[n, i])``.

    Args:
        coefficients: ``(n, k, p, q)``: the S_i of each slice.
        templates: ``(n, k, a, b)`` (one per slice, usually an expanded view of a few
            shared ones) or ``(k, a, b)`` shared by all slices.

    Returns:
        ``(n, p*a, q*b)``.
    """
    n, _, p, q = coefficients.shape
    a, b = templates.shape[-2:]
    spec = "nkpq,kab->npaqb" if templates.ndim == 3 else "nkpq,nkab->npaqb"
    return torch.einsum(spec, coefficients, templates).reshape(n, p * a, q * b)


def kron_rearrange(slices: Tensor, a: int, b: int) -> Tensor:
    """``(n, p*a, q*b) -> (n, p*q, a*b)`` with ``R(kron(S, T)) = vec(S) vec(T)^T``."""
    n, rows, cols = slices.shape
    p, q = rows // a, cols // b
    return slices.reshape(n, p, a, q, b).permute(0, 1, 3, 2, 4).reshape(n, p * q, a * b)


def kronecker_svd(slices: Sequence[Tensor], rank: int, a: int, b: int) -> tuple[Tensor, list[Tensor]]:
    """Best ``rank`` templates shared by all slices of all given tensors.

    Args:
        slices: tensors of shape ``(n_g, d_g, d_g)``; each ``d_g`` divisible by ``a`` and ``b``.
        rank: k, the number of templates, at most ``a*b`` (exact at ``a*b``).

    Returns:
        ``(templates (k, a, b), [coefficients (n_g, k, d_g/a, d_g/b) per tensor])``.
    """
    rearranged = [kron_rearrange(s, a, b) for s in slices]
    gram = sum(torch.einsum("npi,npj->ij", r.double(), r.double()) for r in rearranged)
    _, vectors = torch.linalg.eigh(gram)
    basis = vectors[:, -rank:].flip(-1).to(slices[0].dtype)  # (a*b, k), orthonormal columns
    coefficients = []
    for s, r in zip(slices, rearranged, strict=True):
        p, q = s.shape[1] // a, s.shape[2] // b
        coefficients.append((r @ basis).permute(0, 2, 1).reshape(s.shape[0], rank, p, q))
    return basis.T.reshape(rank, a, b).contiguous(), coefficients
