"""The demo's table files and figures, drawn from the results that ``python -m tucker_init demo``
writes (``demo.json`` in its output folder; the core itself draws nothing)::

    python -m analysis.demo_plots [--out results/demo]

``scripts/demo.sh`` runs the demo and then this with the same arguments, so options of the demo
other than ``--out`` are accepted here and ignored. Writes ``table.csv`` / ``table.md``,
``accuracy_vs_size.png``, ``accuracy_vs_steps.png``, ``template_spectra.png`` and ``scalers.png``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from tucker_init import load_template
from tucker_init.demo import DEMO_METHODS, DEMO_RESULTS

from .heatmaps import plot_scalers
from .report import plot_accuracy_vs_size, plot_accuracy_vs_steps, write_table
from .spectra import plot_spectra, template_spectra

__all__ = ["main", "plot_demo"]


def plot_demo(out_dir: str | Path = "results/demo") -> list[Path]:
    """Write the demo's table and figures into ``out_dir`` from its ``demo.json``; returns the paths.

    Raises:
        FileNotFoundError: ``out_dir`` holds no ``demo.json`` (run ``python -m tucker_init demo`` first).
    """
    out = Path(out_dir)
    results_path = out / DEMO_RESULTS
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path} not found: run `python -m tucker_init demo --out {out}` first")
    results = json.loads(results_path.read_text())
    rows, provenance = results["rows"], results["provenance"]
    written = list(write_table(rows, out / "table", provenance))
    size_rows = [
        {"method": m, "size": r["size"], "top1": r[f"{m}_top1"]} for r in rows for m in DEMO_METHODS if f"{m}_top1" in r
    ]
    curves = {name: [tuple(point) for point in curve] for name, curve in results["curves"].items()}
    template = load_template(out / results["template"])
    figures = {
        "accuracy_vs_size.png": lambda p: plot_accuracy_vs_size(size_rows, p, provenance=provenance),
        # a colour per start, a line style per size ("<size> <method>")
        "accuracy_vs_steps.png": lambda p: plot_accuracy_vs_steps(
            curves, p, provenance=provenance, color_of=lambda name: name.split()[-1]
        ),
        "template_spectra.png": lambda p: plot_spectra(template_spectra(template), p, provenance=provenance),
        "scalers.png": lambda p: plot_scalers(template, p),
    }
    for name, draw in figures.items():
        draw(out / name)
        written.append(out / name)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.demo_plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/demo", help="the demo's output folder (default results/demo)")
    args, _ = parser.parse_known_args(argv)  # the demo's other options, passed by scripts/demo.sh
    for path in plot_demo(args.out):
        print(path)


if __name__ == "__main__":
    main()
