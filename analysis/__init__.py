"""analysis: spectra of templates, rank sensitivity, heat maps, result tables and plots.

Every output is a CSV + Markdown table (:func:`write_table`) or a PNG; each says how it was
produced (a provenance line in the Markdown, a footer in the PNG). Plots use matplotlib's Agg
backend and are deterministic (fixed pixel size, no timestamps).
"""

from .heatmaps import plot_scalers, plot_template_slices
from .rank import plot_rank_sensitivity, rank_grid_errors, suggest_rank
from .report import (
    aggregate,
    command_line,
    plot_accuracy_vs_size,
    plot_accuracy_vs_steps,
    save_figure,
    steps_to_reach,
    write_table,
)
from .spectra import (
    dense_spectra,
    energy_curve,
    mode_spectra,
    plot_spectra,
    ranks_for_energy,
    template_spectra,
)

__all__ = [
    "aggregate",
    "command_line",
    "dense_spectra",
    "energy_curve",
    "mode_spectra",
    "plot_accuracy_vs_size",
    "plot_accuracy_vs_steps",
    "plot_rank_sensitivity",
    "plot_scalers",
    "plot_spectra",
    "plot_template_slices",
    "rank_grid_errors",
    "ranks_for_energy",
    "save_figure",
    "steps_to_reach",
    "suggest_rank",
    "template_spectra",
    "write_table",
]
