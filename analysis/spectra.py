"""Spectra of the template: singular values of each mode unfolding, and the energy they capture.

For a 3-way tensor ``T (n, d_out, d_in)`` the mode-m unfolding (tensorly's convention) is the
matrix ``(I_m, prod of the other sizes)``; its singular values say how much of the tensor a
rank-r factor of mode m can keep. For a Tucker core from a full-rank HOSVD they equal those of
the dense weights, so comparing the spectra of the core with those of the dense weights shows
what a truncated rank throws away (and what sharing one core across groups changes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from backbones import BackboneAdapter, get_adapter
from tucker_init.templates.factorized import FactorizedModel
from tucker_init.templates.io import WeightTemplate
from tucker_init.templates.kinds import get_kind
from tucker_init.templates.layout import ModelLayout, build_layout
from tucker_init.templates.template import TemplateConfig

from .report import new_figure, save_figure

__all__ = [
    "dense_spectra",
    "energy_curve",
    "mode_spectra",
    "plot_spectra",
    "ranks_for_energy",
    "template_parts",
    "template_spectra",
]

MODE_NAMES = ("mode 1 (depth: S·L slices)", "mode 2 (output width)", "mode 3 (input width)")

EXACT_SVD_MAX_ENTRIES = 1 << 16  # larger unfoldings: singular values from the Gram matrix

Spectra = list[np.ndarray]  # singular values of the 3 mode unfoldings, each decreasing


def template_parts(
    fm_or_template: FactorizedModel | WeightTemplate, name: str = "fm_or_template"
) -> tuple[TemplateConfig, ModelLayout, dict[str, Tensor], list[dict[str, Tensor]]]:
    """``(config, layout, template, scalers)`` of a factorized model or a stored template,
    as detached CPU tensors (template key -> tensor; per group, scaler name -> tensor)."""
    if isinstance(fm_or_template, FactorizedModel):
        template = {k: v.detach().cpu() for k, v in fm_or_template.template.items()}
        scalers = [
            {k: v.detach().cpu() for k, v in fm_or_template.scalers[f"g{i}"].items()}
            for i in range(len(fm_or_template.scalers))
        ]
        return fm_or_template.config, fm_or_template.layout, template, scalers
    if isinstance(fm_or_template, WeightTemplate):
        template = {k: v.detach().cpu() for k, v in fm_or_template.template.items()}
        scalers = [{k: v.detach().cpu() for k, v in s.items()} for s in fm_or_template.scalers]
        return fm_or_template.config, fm_or_template.layout, template, scalers
    raise TypeError(
        f"{name} must be a tucker_init FactorizedModel or WeightTemplate, found {type(fm_or_template).__name__}"
    )


def _as_array(tensor: Any, name: str = "tensor") -> np.ndarray:
    if isinstance(tensor, Tensor):
        array = tensor.detach().cpu().double().numpy()
    elif isinstance(tensor, np.ndarray):
        array = tensor.astype(np.float64, copy=False)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, found {type(tensor).__name__}")
    if array.ndim != 3:
        raise ValueError(f"{name} must be 3-way (n, d_out, d_in), found shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds non-finite values (NaN or Inf)")
    return array


def mode_spectra(tensor: Tensor | np.ndarray) -> Spectra:
    """Singular values of the three mode unfoldings.

    Args:
        tensor: ``(n, d_out, d_in)``, e.g. a group's unified tensor or a core ``(r1, r2, r3)``.

    Returns:
        ``[s1 (min(n, d_out*d_in),), s2 (min(d_out, n*d_in),), s3 (min(d_in, n*d_out),)]``,
        each in decreasing order, computed in float64: by SVD for unfoldings of up to
        ``EXACT_SVD_MAX_ENTRIES`` entries, else from the eigenvalues of the Gram matrix
        (values below ~1e-8 * s_1 are then at the rounding floor).
    """
    array = _as_array(tensor)
    return [_singular_values(np.moveaxis(array, m, 0).reshape(array.shape[m], -1)) for m in range(3)]


def _singular_values(matrix: np.ndarray) -> np.ndarray:
    # A full SVD of a wide unfolding (e.g. 512 x 9216 for a ResNet stage) costs seconds; the
    # eigenvalues of the small Gram matrix give the same values ~10x faster, accurate down to
    # ~1e-8 * s_1 (the square root of float64 rounding), far below any weight's spectrum.
    if matrix.size <= EXACT_SVD_MAX_ENTRIES:
        return np.linalg.svd(matrix, compute_uv=False)
    small = matrix if matrix.shape[0] <= matrix.shape[1] else matrix.T
    eigenvalues = np.linalg.eigvalsh(small @ small.T)[::-1]
    return np.sqrt(np.clip(eigenvalues, 0.0, None))


def energy_curve(singular_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Cumulative fraction of the energy (squared Frobenius norm) kept by the first r values.

    Args:
        singular_values: ``(k,)``, any order (sorted decreasing here).

    Returns:
        ``(k,)``: entry ``r-1`` is ``sum_{i<r} s_i^2 / sum_i s_i^2``; non-decreasing, ends at 1.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"singular_values must be a non-empty 1-D array, found shape {tuple(s.shape)}")
    if (s < 0).any() or not np.isfinite(s).all():
        raise ValueError("singular_values must be finite and non-negative")
    power = np.sort(s)[::-1] ** 2
    total = power.sum()
    if total == 0:
        raise ValueError("singular_values are all zero: the energy fraction is undefined")
    curve = np.cumsum(power) / total
    curve[-1] = 1.0  # exact, whatever the rounding of the cumulative sum
    return curve


def template_spectra(fm_or_template: FactorizedModel | WeightTemplate) -> dict[str, Spectra]:
    """Mode spectra of every template tensor.

    Args:
        fm_or_template: a :class:`~tucker_init.FactorizedModel` or a stored
            :class:`~tucker_init.WeightTemplate`.

    Returns:
        ``"G <key>"`` -> :func:`mode_spectra` of the Tucker core ``G (r1, r2, r3)`` for each
        template key (``"shared"`` or ``"g{i}"``). For a Kronecker model, ``"T <key>"`` -> the
        spectra of its templates ``(k, a, b)``.
    """
    config, _, template, _ = template_parts(fm_or_template)
    prefix = get_kind(config.method).symbol
    return {f"{prefix} {key}": mode_spectra(value) for key, value in template.items()}


@torch.no_grad()
def dense_spectra(
    model: nn.Module | FactorizedModel | WeightTemplate,
    adapter: BackboneAdapter | str | None = None,
) -> dict[str, Spectra]:
    """Mode spectra of the unified tensor ``(S*L, d, d)`` of each block group.

    Args:
        model: a dense model (timm ViT / ResNet / ConvNeXt, or any model with ``adapter``); or a
            factorized model or stored template, whose reconstructed weights are used.
        adapter: for a dense model: the backbone adapter or family name (``None`` detects it).

    Returns:
        ``"W <group name>"`` -> :func:`mode_spectra` of that group's unified tensor.
    """
    if isinstance(model, FactorizedModel):
        return {f"W {g.name}": mode_spectra(model.group_tensor(i)) for i, g in enumerate(model.layout.groups)}
    if isinstance(model, WeightTemplate):
        return {f"W {g.name}": mode_spectra(model.group_tensor(i)) for i, g in enumerate(model.layout.groups)}
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module, FactorizedModel or WeightTemplate, found {type(model).__name__}"
        )
    layout = build_layout(model, get_adapter(model, adapter))
    params = dict(model.named_parameters())
    return {f"W {g.name}": mode_spectra(g.stack(params)) for g in layout.groups}


def _check_spectra(spectra: Any, name: str = "spectra") -> dict[str, Spectra]:
    # Accept one tensor's spectra (a list of 3 arrays) or label -> spectra.
    if isinstance(spectra, Mapping):
        items = dict(spectra)
    elif isinstance(spectra, Sequence) and not isinstance(spectra, str):
        items = {"tensor": spectra}
    else:
        raise TypeError(
            f"{name} must be a dict label -> [s1, s2, s3] or a list [s1, s2, s3], found {type(spectra).__name__}"
        )
    if not items:
        raise ValueError(f"{name} is empty; expected at least one label -> [s1, s2, s3]")
    out = {}
    for label, value in items.items():
        if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 3:
            found = f"length {len(value)}" if isinstance(value, Sequence) else type(value).__name__
            raise ValueError(f"{name}[{label!r}] must hold 3 arrays (one per mode), found {found}")
        out[str(label)] = [np.asarray(s, dtype=np.float64) for s in value]
    return out


def ranks_for_energy(spectra: Spectra | Mapping[str, Spectra], energy: float = 0.9) -> tuple[int, int, int]:
    """Smallest ``(r1, r2, r3)`` whose mode unfoldings each keep ``energy`` of the energy.

    Args:
        spectra: ``[s1, s2, s3]`` of one tensor, or label -> ``[s1, s2, s3]``; for several
            tensors (e.g. groups that share one core) the largest rank over them is returned.
        energy: fraction in ``(0, 1]``.

    Returns:
        ``(r1, r2, r3)``.
    """
    if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1:
        raise ValueError(f"energy must be a fraction in (0, 1], found {energy!r}")
    ranks = [0, 0, 0]
    for values in _check_spectra(spectra).values():
        for mode, s in enumerate(values):
            curve = energy_curve(s)
            # A tolerance so that energy=1 (or a tensor of exact low rank) is not missed by rounding.
            r = int(np.searchsorted(curve, energy - 1e-12) + 1)
            ranks[mode] = max(ranks[mode], min(r, len(curve)))
    return (ranks[0], ranks[1], ranks[2])


def plot_spectra(
    spectra: Mapping[str, Spectra],
    path: str | Path,
    provenance: str | None = None,
    *,
    title: str = "Mode spectra",
    energy_marks: Sequence[float] = (0.9, 0.99),
    figsize: tuple[float, float] = (12.0, 7.0),
) -> Path:
    """Three columns (one per mode): normalized singular values ``s_k / s_1`` on a log axis
    (top row) and the energy curve (bottom row), one line per label.

    Args:
        spectra: label -> ``[s1, s2, s3]``, e.g. ``template_spectra(fm) | dense_spectra(model)``.
        path: the PNG to write.
        provenance: the command; defaults to the running command line.
        energy_marks: energy levels drawn as dotted lines; each label's rank for the level is
            listed in the legend of the energy panel.

    Returns:
        The path written (``figsize * DPI`` pixels).
    """
    spectra = _check_spectra(spectra)
    fig, axes = new_figure(figsize, nrows=2, ncols=3, sharex="col")
    for mode in range(3):
        top, bottom = axes[0, mode], axes[1, mode]
        for j, (label, values) in enumerate(spectra.items()):
            s = np.sort(values[mode])[::-1]
            rank = np.arange(1, len(s) + 1)
            color = f"C{j % 10}"
            # Exact zeros cannot go on a log axis; a tensor of low rank simply stops there.
            normalized = np.where(s > 0, s / s[0], np.nan) if s[0] > 0 else np.full_like(s, np.nan)
            top.plot(rank, normalized, marker=".", markersize=3, color=color, label=label)
            if s[0] > 0:
                curve = energy_curve(s)
                marks = ", ".join(f"{e:g}→r={int(np.searchsorted(curve, e - 1e-12) + 1)}" for e in energy_marks)
                bottom.plot(rank, curve, color=color, label=f"{label} ({marks})" if marks else label)
        top.set_yscale("log")
        top.set_title(MODE_NAMES[mode], fontsize=10)
        top.set_ylabel("singular value s_k / s_1 (log)")
        top.grid(alpha=0.3, which="both")
        for e in energy_marks:
            bottom.axhline(e, color="0.5", linestyle=":", linewidth=1)
        bottom.set_ylim(0, 1.02)
        bottom.set_xlabel("rank k")
        bottom.set_ylabel("energy kept (cumulative s² fraction)")
        bottom.grid(alpha=0.3)
        bottom.legend(fontsize=6, loc="lower right")
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return save_figure(fig, path, provenance)
