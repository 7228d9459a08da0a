"""Rank sensitivity: reconstruction error and parameter count over a grid of ranks, a suggested
rank for a parameter budget, and a plot of both (with downstream accuracy when rows have it).

A row of :func:`rank_grid_errors` (and what :func:`suggest_rank` / :func:`plot_rank_sensitivity`
read) looks like::

    {"method": "tucker", "share": True, "r1": 8, "r2": 16, "r3": 16, "ranks": "8x16x16",
     "rel_error": 0.41, "template_params": 2048, "scaler_params": 2240, "params": 4288,
     "dense_params": 98304, "compression": 22.9}

Rows from experiments may add ``"top1"`` (or ``"top1_mean"`` / ``"top1_std"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from backbones import BackboneAdapter
from tucker_init.templates.factorized import FactorizedModel, factorize

from .report import _check_rows, _number, new_figure, save_figure

__all__ = ["plot_rank_sensitivity", "rank_grid_errors", "suggest_rank"]


def _check_grid(ranks_grid: Any) -> list[tuple[int, int, int]]:
    if isinstance(ranks_grid, (str, bytes)) or not isinstance(ranks_grid, Sequence):
        raise TypeError(f"ranks_grid must be a list of (r1, r2, r3) tuples, found {type(ranks_grid).__name__}")
    if not ranks_grid:
        raise ValueError("ranks_grid is empty; expected at least one (r1, r2, r3)")
    grid = []
    for i, ranks in enumerate(ranks_grid):
        if isinstance(ranks, str) or not isinstance(ranks, Sequence) or len(ranks) != 3:
            raise ValueError(f"ranks_grid[{i}] must be a tuple (r1, r2, r3), found {ranks!r}")
        grid.append(tuple(ranks))
    return grid


@torch.no_grad()
def rank_grid_errors(
    model: nn.Module,
    ranks_grid: Sequence[tuple[int, int, int]],
    method: str = "tucker",
    share: bool = True,
    *,
    kron_sharing: str = "all",
    adapter: BackboneAdapter | str | None = None,
) -> list[dict[str, Any]]:
    """Relative reconstruction error of a HOSVD-initialized template at each rank.

    For each ranks in ``ranks_grid`` the model is factorized with ``init="hosvd"`` and

        rel_error = sqrt(sum_g ||T_g - T_hat_g||_F^2 / sum_g ||T_g||_F^2)

    over all templated weights (``T_g (S*L, d, d)`` the unified tensor of group g).

    Args:
        model: a dense model (it is not modified).
        ranks_grid: Tucker ``(r1, r2, r3)`` per entry; for ``method="kronecker"``, ``(k, a, b)``
            (stored in the ``r1, r2, r3`` columns).
        method, share, kron_sharing, adapter: as in :func:`tucker_init.factorize`.

    Returns:
        One row per entry (see the module docstring): ranks, ``rel_error``,
        ``template_params`` (shared tensors), ``scaler_params`` (all groups), ``params``
        (their sum), ``dense_params`` (the templated weights they replace) and
        ``compression`` = dense_params / params.
    """
    if isinstance(model, FactorizedModel):
        raise TypeError(
            "model must be a dense nn.Module, found a FactorizedModel; pass fm.materialize() to "
            "measure the error of re-factorizing its reconstructed weights"
        )
    grid = _check_grid(ranks_grid)
    rows = []
    dense: list[torch.Tensor] | None = None
    for ranks in grid:
        fm = factorize(
            model, ranks, method=method, init="hosvd", share=share, kron_sharing=kron_sharing, adapter=adapter
        )
        if dense is None:  # the same layout for every rank: stack the original weights once
            params = dict(model.named_parameters())
            dense = [g.stack(params).double() for g in fm.layout.groups]
        residual = sum(float((t - fm.group_tensor(i).double()).pow(2).sum()) for i, t in enumerate(dense))
        total = sum(float(t.pow(2).sum()) for t in dense)
        template_params = sum(p.numel() for p in fm.template.parameters())
        scaler_params = sum(p.numel() for p in fm.scalers.parameters())
        dense_params = sum(t.numel() for t in dense)
        r1, r2, r3 = (int(r) for r in ranks)
        rows.append(
            {
                "method": method,
                "share": share,
                "r1": r1,
                "r2": r2,
                "r3": r3,
                "ranks": f"{r1}x{r2}x{r3}",
                "rel_error": math.sqrt(residual / total) if total > 0 else 0.0,
                "template_params": template_params,
                "scaler_params": scaler_params,
                "params": template_params + scaler_params,
                "dense_params": dense_params,
                "compression": dense_params / (template_params + scaler_params),
            }
        )
    return rows


def _label(row: Mapping[str, Any]) -> str:
    if "ranks" in row and row["ranks"] not in (None, ""):
        return str(row["ranks"])
    if all(k in row for k in ("r1", "r2", "r3")):
        return f"{row['r1']}x{row['r2']}x{row['r3']}"
    return "?"


def _accuracy(row: Mapping[str, Any]) -> tuple[float, float] | None:
    # (mean, std) of the accuracy column if the row has one: "top1" or "top1_mean"/"top1_std".
    for key in ("top1_mean", "top1"):
        value = row.get(key)
        if value not in (None, ""):
            std = row.get("top1_std") if key == "top1_mean" else None
            return float(value), float(std) if std not in (None, "") else 0.0
    return None


def suggest_rank(rows: Sequence[Mapping[str, Any]], budget: int, by: str = "rel_error") -> dict[str, Any]:
    """The best rank whose parameter count (template + scalers, column ``params``) fits ``budget``.

    Args:
        rows: from :func:`rank_grid_errors`, possibly with an accuracy column added by
            experiments (``top1`` or ``top1_mean``); values may be strings (read from a CSV).
        budget: the largest number of parameters allowed, > 0.
        by: ``"rel_error"`` picks the lowest reconstruction error; ``"top1"`` the highest
            accuracy among the rows that have one. Ties go to fewer parameters.

    Returns:
        A copy of the chosen row.

    Raises:
        ValueError: empty rows, a missing column, ``budget <= 0``, or no rank fits (the
            message gives the smallest budget that works).
    """
    rows = _check_rows(rows)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an int (number of parameters), found {type(budget).__name__} {budget!r}")
    if budget <= 0:
        raise ValueError(f"budget must be a positive number of parameters, found {budget}")
    if by not in ("rel_error", "top1"):
        raise ValueError(f"by must be one of ['rel_error', 'top1'], found {by!r}")

    sizes = [_number(row, "params", i) for i, row in enumerate(rows)]
    fitting = [i for i, size in enumerate(sizes) if size <= budget]
    if not fitting:
        smallest = min(range(len(rows)), key=lambda i: sizes[i])
        raise ValueError(
            f"budget={budget} parameters is below every rank in rows; the smallest budget that works "
            f"is {int(sizes[smallest])} (ranks {_label(rows[smallest])})"
        )
    if by == "rel_error":
        scores = {i: _number(rows[i], "rel_error", i) for i in fitting}
    else:
        scores = {i: -acc[0] for i in fitting if (acc := _accuracy(rows[i])) is not None}
        if not scores:
            raise ValueError(
                f"by='top1' needs a 'top1' or 'top1_mean' column in the rows that fit budget={budget}; "
                f"found keys {sorted(map(str, rows[fitting[0]]))}"
            )
    best = min(scores, key=lambda i: (scores[i], sizes[i]))
    return dict(rows[best])


def _pareto(points: list[tuple[float, float, int]]) -> list[int]:
    # Indices of the rows that no other row beats in both parameters and error.
    front, best = [], math.inf
    for _size, error, i in sorted(points):
        if error < best:
            front.append(i)
            best = error
    return front


def plot_rank_sensitivity(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    provenance: str | None = None,
    *,
    budget: int | None = None,
    title: str = "Rank sensitivity",
    figsize: tuple[float, float] = (12.0, 4.5),
    references: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """Reconstruction error against parameter count, each point annotated with its ranks; the
    Pareto front as a line. If rows have accuracy (``top1`` or ``top1_mean``/``top1_std``) a
    second panel shows accuracy per rank (ordered by parameter count).

    Args:
        rows: from :func:`rank_grid_errors` (values may be strings from a CSV).
        path: the PNG to write.
        provenance: the command; defaults to the running command line.
        budget: optional; drawn as a vertical line, and the :func:`suggest_rank` choice is circled.
        references: accuracy panel: name -> (mean, std) drawn as horizontal lines with a band,
            e.g. ``{"random init": (48.8, 1.6)}``.

    Returns:
        The path written (``figsize * DPI`` pixels).
    """
    rows = _check_rows(rows)
    sizes = [_number(row, "params", i) for i, row in enumerate(rows)]
    errors = [_number(row, "rel_error", i) for i, row in enumerate(rows)]
    accuracies = [_accuracy(row) for row in rows]
    has_accuracy = any(a is not None for a in accuracies)
    fig, axes = new_figure(figsize, ncols=2 if has_accuracy else 1)

    ax = axes[0, 0]
    ax.scatter(sizes, errors, s=18, color="C0", zorder=3, label="ranks")
    front = _pareto([(s, e, i) for i, (s, e) in enumerate(zip(sizes, errors, strict=True))])
    ax.plot([sizes[i] for i in front], [errors[i] for i in front], color="C0", alpha=0.6, label="Pareto front")
    # Ranks that tie (e.g. 4x16x64 and 4x64x16 on one group) share a point: one label for them.
    # A large grid labels the fine-tuned ranks and the Pareto points at least 0.05 apart in error
    # from the previous label, so the labels stay legible.
    labelled = {i for i, a in enumerate(accuracies) if a is not None}
    last = math.inf
    for i in front if len(rows) > 12 else range(len(rows)):
        if len(rows) <= 12 or abs(errors[i] - last) >= 0.05:
            labelled.add(i)
            last = errors[i]
    labels: dict[tuple[float, float], list[str]] = {}
    for i, row in enumerate(rows):
        if i not in labelled:
            continue
        labels.setdefault((sizes[i], round(errors[i], 3)), []).append(_label(row))
    for (size, error), names in labels.items():
        text = " / ".join(dict.fromkeys(names))
        ax.annotate(text, (size, error), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if budget is not None:
        ax.axvline(budget, color="C3", linestyle="--", linewidth=1, label=f"budget {budget:,}")
        try:
            chosen = suggest_rank(rows, budget)
            ax.scatter(
                [float(chosen["params"])],
                [float(chosen["rel_error"])],
                s=120,
                facecolors="none",
                edgecolors="C3",
                linewidths=1.5,
                zorder=4,
                label=f"suggested {_label(chosen)}",
            )
        except ValueError:
            pass  # nothing fits: the line alone shows it
    ax.set_xscale("log")
    ax.set_xlabel("template + scaler parameters (log)")
    ax.set_ylabel("relative reconstruction error ||W - Ŵ|| / ||W||")
    ax.set_title("reconstruction error vs parameters (HOSVD)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")

    if has_accuracy:
        ax = axes[0, 1]
        order = sorted((i for i, a in enumerate(accuracies) if a is not None), key=lambda i: (sizes[i], i))
        x = np.arange(len(order))
        means = [accuracies[i][0] for i in order]
        stds = [accuracies[i][1] for i in order]
        ax.errorbar(x, means, yerr=stds, marker="o", capsize=3, color="C1", label="template init")
        for k, (name, (mean, std)) in enumerate((references or {}).items()):
            color = f"C{k + 2}"
            ax.axhline(mean, color=color, linestyle="--", linewidth=1, label=f"{name} {mean:.1f}")
            ax.axhspan(mean - std, mean + std, color=color, alpha=0.12)
        if references:
            ax.legend(fontsize=7, loc="best")
        ax.set_xticks(x, [_label(rows[i]) for i in order], rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("ranks (r1 x r2 x r3), by parameter count")
        ax.set_ylabel("top1")
        ax.set_title("downstream accuracy vs rank", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path, provenance)
