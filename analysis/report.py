"""Result tables and plots: CSV + Markdown tables, accuracy vs model size, accuracy vs steps.

Every output says how it was produced: a Markdown table starts with a provenance line, and
every PNG carries a footer with it. PNGs are written with a fixed size (``figsize * dpi``,
no tight bounding box) and without timestamps, so the same inputs give the same file.
"""

from __future__ import annotations

import csv
import math
import shlex
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (also on machines without a display)

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "aggregate",
    "command_line",
    "new_figure",
    "plot_accuracy_vs_size",
    "plot_accuracy_vs_steps",
    "save_figure",
    "steps_to_reach",
    "write_table",
]

DPI = 100
FOOTER_HEIGHT = 0.07  # fraction of the figure kept free at the bottom for the provenance footer


# -- figures ------------------------------------------------------------------------------------
def command_line() -> str:
    """The command that is running, e.g. ``python experiments/rank.py --seed 0``: the
    default provenance of a plot."""
    argv = sys.argv or ["python"]
    return "python " + shlex.join(argv)


def new_figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **kwargs: Any):
    """A constrained-layout figure with room for a footer; returns ``(fig, axes)``.

    ``axes`` is always a 2-D object array of shape ``(nrows, ncols)``.
    """
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, dpi=DPI, layout="constrained", squeeze=False, **kwargs)
    # The footer is plain figure text, which constrained layout ignores; keep a band free.
    fig.get_layout_engine().set(rect=(0, FOOTER_HEIGHT, 1, 1 - FOOTER_HEIGHT))
    return fig, axes


def save_figure(fig: Figure, path: str | Path, provenance: str | None = None) -> Path:
    """Add the provenance footer, write ``fig`` as a PNG of exactly ``figsize * DPI`` pixels
    and close it.

    Args:
        fig: a figure from :func:`new_figure`.
        path: where to write; parent folders are created; the suffix must be ``.png``.
        provenance: how the figure was produced (the command); defaults to :func:`command_line`.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        plt.close(fig)
        raise ValueError(f"path must end in .png, found {str(path)!r}")
    text = _provenance_text(provenance)
    width_chars = max(40, int(fig.get_figwidth() * DPI / 5.5))  # ~5.5 px per 7-pt character
    footer = "\n".join(textwrap.wrap(text, width_chars)[:2])
    fig.text(0.01, 0.01, footer, fontsize=7, color="0.35", ha="left", va="bottom")
    path.parent.mkdir(parents=True, exist_ok=True)
    # metadata={"Software": None}: no version string, so the bytes do not depend on matplotlib's
    # version; matplotlib writes no creation time into PNGs.
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


def _provenance_text(provenance: str | None) -> str:
    if provenance is None:
        provenance = command_line()
    if not isinstance(provenance, str) or not provenance.strip():
        raise ValueError(f"provenance must be a non-empty string (the command), found {provenance!r}")
    return f"Produced by: {provenance.strip()}"


# -- tables -------------------------------------------------------------------------------------
def _check_rows(rows: Any, name: str = "rows") -> list[Mapping[str, Any]]:
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Iterable):
        raise TypeError(f"{name} must be a list of dicts, found {type(rows).__name__}")
    rows = list(rows)
    if not rows:
        raise ValueError(f"{name} is empty; expected at least one dict")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"{name}[{i}] must be a dict, found {type(row).__name__}")
    return rows


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    # Union of keys in order of first appearance: rows from different runs may differ.
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(str(k) for k in row))
    return list(columns)


def _markdown_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def write_table(
    rows: Sequence[Mapping[str, Any]],
    stem: str | Path,
    provenance: str,
    columns: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """Write ``rows`` as ``{stem}.csv`` and ``{stem}.md``.

    The CSV holds the full-precision values only (so ``csv.DictReader`` reads it back); the
    Markdown starts with ``Produced by: `<provenance>` `` and rounds floats to 4 significant
    digits. Missing values are left empty.

    Args:
        rows: one dict per row.
        stem: path without suffix, e.g. ``results/rank_grid``; parent folders are created.
        provenance: the command that produced the rows.
        columns: column order; defaults to all keys in order of first appearance.

    Returns:
        ``(csv_path, md_path)``.
    """
    rows = _check_rows(rows)
    if not isinstance(provenance, str) or not provenance.strip():
        raise ValueError(f"provenance must be a non-empty string (the command), found {provenance!r}")
    if not isinstance(stem, (str, Path)):
        raise TypeError(f"stem must be a str or Path, found {type(stem).__name__}")
    stem = Path(stem)
    if stem.suffix in (".csv", ".md"):
        stem = stem.with_suffix("")
    columns = list(columns) if columns is not None else _columns(rows)
    if not columns:
        raise ValueError("rows have no keys; expected at least one column")

    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".md")
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})

    lines = [
        f"Produced by: `{provenance.strip()}`",
        "",
        "| " + " | ".join(_markdown_cell(c) for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(_markdown_cell(row.get(c)) for c in columns) + " |" for row in rows]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, md_path


def _number(row: Mapping[str, Any], key: str, index: int, name: str = "rows") -> float:
    if key not in row:
        raise ValueError(f"{name}[{index}] has no key {key!r}; found keys {sorted(map(str, row))}")
    try:
        return float(row[key])
    except (TypeError, ValueError):
        raise ValueError(f"{name}[{index}][{key!r}] must be a number, found {row[key]!r}") from None


def aggregate(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], value: str) -> list[dict[str, Any]]:
    """Mean and standard deviation of ``value`` over rows that agree on ``keys`` (e.g. seeds).

    Args:
        rows: e.g. ``[{"method": "tucker", "size": "S", "seed": 0, "top1": 71.2}, ...]``.
        keys: the columns that identify a group, e.g. ``["method", "size"]``.
        value: the numeric column to summarize, e.g. ``"top1"``.

    Returns:
        One row per group in order of first appearance: the key columns, ``{value}_mean``,
        ``{value}_std`` (sample standard deviation, ddof=1; 0.0 for a single row) and ``n``.
    """
    rows = _check_rows(rows)
    if isinstance(keys, str):
        keys = [keys]
    keys = list(keys)
    if not isinstance(value, str):
        raise TypeError(f"value must be a column name (str), found {type(value).__name__}")
    groups: dict[tuple, list[float]] = {}
    for i, row in enumerate(rows):
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"rows[{i}] has no key(s) {missing}; found keys {sorted(map(str, row))}")
        groups.setdefault(tuple(row[k] for k in keys), []).append(_number(row, value, i))
    out = []
    for group, values in groups.items():
        array = np.asarray(values, dtype=float)
        std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
        row = dict(zip(keys, group, strict=True))
        row.update({f"{value}_mean": float(array.mean()), f"{value}_std": std, "n": len(array)})
        out.append(row)
    return out


def steps_to_reach(curve: Sequence[tuple[float, float]], target: float) -> int | None:
    """First step at which ``top1 >= target``, or ``None`` if the curve never gets there.

    Args:
        curve: ``[(step, top1), ...]``, in any order (sorted by step here).
        target: the accuracy to reach, in the curve's units.
    """
    points = _curve(curve, "curve")
    for step, top1 in points:
        if top1 >= target:
            return int(step)
    return None


def _curve(curve: Any, name: str) -> list[tuple[float, float]]:
    if isinstance(curve, (str, bytes, Mapping)) or not isinstance(curve, Iterable):
        raise TypeError(f"{name} must be a list of (step, top1) pairs, found {type(curve).__name__}")
    points = []
    for i, point in enumerate(curve):
        try:
            step, top1 = point
            points.append((float(step), float(top1)))
        except (TypeError, ValueError):
            raise ValueError(f"{name}[{i}] must be a (step, top1) pair of numbers, found {point!r}") from None
    if not points:
        raise ValueError(f"{name} is empty; expected at least one (step, top1) pair")
    return sorted(points)


# -- plots --------------------------------------------------------------------------------------
def _ordered(values: Iterable[Any]) -> list[Any]:
    unique = list(dict.fromkeys(values))
    try:  # numeric sizes (e.g. parameter counts) read best in increasing order
        return sorted(unique, key=float)
    except (TypeError, ValueError):
        return unique


def plot_accuracy_vs_size(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    provenance: str | None = None,
    *,
    value: str = "top1",
    title: str = "Top-1 accuracy by target size and initialization",
    figsize: tuple[float, float] = (8.0, 4.5),
) -> Path:
    """Grouped bar chart: one group per target size, one bar per method, error bars = std over seeds.

    Args:
        rows: either aggregated rows with ``method``, ``size``, ``{value}_mean`` and
            ``{value}_std`` (``n`` optional), or per-seed rows with ``method``, ``size`` and
            ``{value}``, which are aggregated here with :func:`aggregate`.
        path: the PNG to write.
        provenance: the command; defaults to the running command line.

    Returns:
        The path written (``figsize * DPI`` pixels).
    """
    rows = _check_rows(rows)
    mean_key, std_key = f"{value}_mean", f"{value}_std"
    if all(mean_key in r for r in rows):
        table = [dict(r) for r in rows]
        for r in table:
            r.setdefault(std_key, 0.0)
    elif all(value in r for r in rows):
        table = aggregate(rows, ["method", "size"], value)
    else:
        raise ValueError(
            f"rows must all have {mean_key!r} (aggregated) or all have {value!r} (per seed); "
            f"found keys {sorted(map(str, rows[0]))}"
        )
    for i, r in enumerate(table):
        for key in ("method", "size"):
            if key not in r:
                raise ValueError(f"rows[{i}] has no key {key!r}; found keys {sorted(map(str, r))}")

    sizes = _ordered(r["size"] for r in table)
    methods = list(dict.fromkeys(r["method"] for r in table))
    lookup = {(r["method"], r["size"]): r for r in table}
    fig, axes = new_figure(figsize)
    ax = axes[0, 0]
    width = 0.8 / len(methods)
    x = np.arange(len(sizes))
    colors = plt.get_cmap("tab10")
    for j, method in enumerate(methods):
        means = [float(lookup[(method, s)][mean_key]) if (method, s) in lookup else np.nan for s in sizes]
        stds = [float(lookup[(method, s)][std_key] or 0.0) if (method, s) in lookup else 0.0 for s in sizes]
        ax.bar(
            x + (j - (len(methods) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            capsize=3,
            label=str(method),
            color=colors(j % 10),
        )
    ax.set_xticks(x, [str(s) for s in sizes])
    ax.set_xlabel("target model size")
    ax.set_ylabel(f"{value} (mean ± std over seeds)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="method", fontsize=8, loc="best")
    return save_figure(fig, path, provenance)


def plot_accuracy_vs_steps(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    provenance: str | None = None,
    *,
    target: float | None = None,
    color_of: Callable[[str], str] | None = None,
    title: str = "Top-1 accuracy during fine-tuning",
    ylabel: str = "top1",
    figsize: tuple[float, float] = (8.0, 4.5),
) -> Path:
    """One line per method: accuracy against fine-tuning steps.

    Args:
        curves: method -> ``[(step, top1), ...]``.
        path: the PNG to write.
        provenance: the command; defaults to the running command line.
        target: optional accuracy drawn as a dashed line; each method's first step reaching
            it (:func:`steps_to_reach`) is marked and given in the legend.
        color_of: curve name -> its colour group: curves of one group share a colour and differ
            by line style (e.g. colour by method, style by size); default: a colour per curve.

    Returns:
        The path written (``figsize * DPI`` pixels).
    """
    if not isinstance(curves, Mapping):
        raise TypeError(f"curves must be a dict method -> [(step, top1), ...], found {type(curves).__name__}")
    if not curves:
        raise ValueError("curves is empty; expected at least one method")
    fig, axes = new_figure(figsize)
    ax = axes[0, 0]
    colors = plt.get_cmap("tab10")
    groups = [name if color_of is None else color_of(name) for name in curves]
    group_index = {group: k for k, group in enumerate(dict.fromkeys(groups))}
    for i, (method, curve) in enumerate(curves.items()):
        j = group_index[groups[i]]
        style = ("-", "--", ":", "-.")[groups[:i].count(groups[i]) % 4]
        points = np.asarray(_curve(curve, f"curves[{method!r}]"))
        label = str(method)
        if target is not None:
            hits = np.flatnonzero(points[:, 1] >= target)  # same rule as steps_to_reach
            if hits.size:
                step, top1 = points[hits[0]]
                label += f" (reaches {target:.2f} at step {step:g})"
                ax.plot([step], [top1], "o", color=colors(j % 10), markersize=7, markerfacecolor="none")
            else:
                label += " (never reaches)"
        ax.plot(points[:, 0], points[:, 1], style, marker=".", color=colors(j % 10), label=label)
    if target is not None:
        ax.axhline(target, color="0.4", linestyle="--", linewidth=1, label=f"target {target:.2f}")
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path, provenance)
