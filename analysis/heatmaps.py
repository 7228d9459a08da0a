"""Heat maps of the scalers (X over depth, U / V over width) and of slices of the template.

Values are shown on a diverging color map centered at zero (red positive, blue negative), with
a symmetric range per panel, so that sign patterns and magnitudes read at a glance.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from tucker_init.templates.factorized import FactorizedModel
from tucker_init.templates.io import WeightTemplate
from tucker_init.templates.kinds import get_kind

from .report import new_figure, save_figure
from .spectra import template_parts

__all__ = ["plot_scalers", "plot_template_slices"]

CMAP = "RdBu_r"


def _symmetric_limit(*arrays: np.ndarray) -> float:
    limit = max(float(np.abs(a).max()) if a.size else 0.0 for a in arrays)
    return limit if limit > 0 else 1.0  # an all-zero panel still needs a non-empty range


def _heatmap(fig, ax, array: np.ndarray, title: str, xlabel: str, ylabel: str, limit: float | None = None):
    limit = _symmetric_limit(array) if limit is None else limit
    image = ax.imshow(array, aspect="auto", cmap=CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for axis in (ax.xaxis, ax.yaxis):  # indices, never 2.5
        axis.set_major_locator(MaxNLocator(integer=True))
    return image


def _mark_blocks(ax, rows: int, slices_per_block: int) -> None:
    # Lines between blocks and one tick per block: the depth axis is block-major (row l*S + s).
    depth = rows // slices_per_block
    for l in range(1, depth):
        ax.axhline(l * slices_per_block - 0.5, color="k", linewidth=0.6, alpha=0.6)
    step = max(1, depth // 12)  # at most ~12 labels, whatever the depth
    blocks = range(0, depth, step)
    ax.set_yticks([l * slices_per_block + (slices_per_block - 1) / 2 for l in blocks], [f"block {l}" for l in blocks])


def _check_group(group: object, count: int) -> int:
    if isinstance(group, bool) or not isinstance(group, (int, np.integer)):
        raise TypeError(f"group must be an int (group index), found {type(group).__name__} {group!r}")
    if not 0 <= group < count:
        raise ValueError(f"group must be a group index in [0, {count}), found {group}")
    return int(group)


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def plot_scalers(
    fm_or_template: FactorizedModel | WeightTemplate,
    path: str | Path,
    group: int = 0,
    provenance: str | None = None,
    *,
    figsize: tuple[float, float] = (13.0, 5.0),
) -> Path:
    """Heat maps of one group's scalers.

    Tucker: three panels, ``X (S*L, r1)`` with depth on the y axis (block boundaries drawn,
    slice order inside a block as in the layout), ``U (d, r2)`` and ``V (d, r3)`` with width
    (channel index) on the y axis; the x axis is the rank component. Kronecker: one panel,
    ``||S[n, i]||_F`` of the scalers ``S (S*L, k, d/a, d/b)``, depth on the y axis.

    Args:
        fm_or_template: a :class:`~tucker_init.FactorizedModel` or :class:`~tucker_init.WeightTemplate`.
        path: the PNG to write.
        group: index of the block group.
        provenance: the command; defaults to the running command line.

    Returns:
        The path written (``figsize * DPI`` pixels).
    """
    _, layout, _, scalers = template_parts(fm_or_template)
    index = _check_group(group, len(layout.groups))
    layout_group, mats = layout.groups[index], scalers[index]
    S = layout_group.slices_per_block
    if set(mats) == {"X", "U", "V"}:  # Tucker scalers
        fig, axes = new_figure(figsize, ncols=3)
        X, U, V = (_numpy(mats[k]) for k in "XUV")
        panels = [
            (X, f"X: depth scaler {X.shape}", "rank component (r1)", "slice (block-major, S·L)"),
            (U, f"U: output-width scaler {U.shape}", "rank component (r2)", "output channel"),
            (V, f"V: input-width scaler {V.shape}", "rank component (r3)", "input channel"),
        ]
        for ax, (array, title, xlabel, ylabel) in zip(axes[0], panels, strict=True):
            image = _heatmap(fig, ax, array, title, xlabel, ylabel)
            fig.colorbar(image, ax=ax, shrink=0.9)
        if X.shape[0] % S == 0:  # scalers of the layout's own depth (not a resized target)
            _mark_blocks(axes[0, 0], X.shape[0], S)
    else:
        fig, axes = new_figure(figsize)
        coefficients = mats["S"].detach().cpu().double()
        norms = coefficients.flatten(2).norm(dim=2).numpy()  # (S*L, k)
        ax = axes[0, 0]
        image = ax.imshow(norms, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_title(f"Kronecker scalers ||S[n, i]||_F {norms.shape}", fontsize=10)
        ax.set_xlabel("template index i")
        ax.set_ylabel("slice (block-major, S·L)")
        fig.colorbar(image, ax=ax, shrink=0.9)
        if norms.shape[0] % S == 0:
            _mark_blocks(ax, norms.shape[0], S)
    fig.suptitle(f"Scalers of group {index} ({layout_group.name}, d={layout_group.width}, S={S})")
    return save_figure(fig, path, provenance)


def plot_template_slices(
    fm_or_template: FactorizedModel | WeightTemplate,
    path: str | Path,
    key: str | None = None,
    n: int = 8,
    provenance: str | None = None,
    *,
    figsize: tuple[float, float] = (12.0, 6.0),
) -> Path:
    """The first ``n`` slices ``G[i] (r2, r3)`` of a Tucker core (or ``T[i] (a, b)`` of Kronecker
    templates) as small heat maps on one shared, zero-centered color scale.

    Args:
        fm_or_template: a :class:`~tucker_init.FactorizedModel` or :class:`~tucker_init.WeightTemplate`.
        path: the PNG to write.
        key: template key (``"shared"``, ``"g{i}"``, ``"all"``, ...); ``None`` takes the first.
        n: how many slices (fewer if the template has fewer), > 0.
        provenance: the command; defaults to the running command line.

    Returns:
        The path written (``figsize * DPI`` pixels).
    """
    config, _, template, _ = template_parts(fm_or_template)
    if key is None:
        key = next(iter(template))
    if key not in template:
        raise ValueError(f"key must be one of the template keys {list(template)}, found {key!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive int (number of slices), found {n!r}")
    core = _numpy(template[key])
    count = min(int(n), core.shape[0])
    cols = min(4, count)
    rows = math.ceil(count / cols)
    fig, axes = new_figure(figsize, nrows=rows, ncols=cols)
    limit = _symmetric_limit(core[:count])
    name = get_kind(config.method).symbol
    xlabel, ylabel = ("r3 (input width)", "r2 (output width)") if name == "G" else ("b", "a")
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= count:
            ax.set_visible(False)
            continue
        image = _heatmap(fig, ax, core[i], f"{name}[{i}]  ‖·‖={np.linalg.norm(core[i]):.3g}", xlabel, ylabel, limit)
    fig.colorbar(image, ax=axes, shrink=0.8, label="value")
    fig.suptitle(f"Template {key!r} {tuple(core.shape)}: first {count} of {core.shape[0]} slices ({config.method})")
    return save_figure(fig, path, provenance)
