"""Provenance: the exact command that produced a result (first lines of every Markdown file, footer
of every PNG) and the commit, torch version and threads it ran with."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["command_line", "fmt", "git_revision", "md_table", "mean_std", "report_header", "write_report"]

_ROOT = Path(__file__).resolve().parents[2]


def command_line(name: str, argv: Sequence[str]) -> str:
    """The command that reproduces this run: ``python -m experiments.<name> <argv>``."""
    return shlex.join(["python", "-m", f"experiments.{name}", *argv])


def git_revision() -> str:
    """Short commit of the repository, ``-dirty`` when the working tree has changes; "unknown" without git."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=_ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def report_header(title: str, command: str, mode: str, elapsed_min: float) -> list[str]:
    """The first lines of every report: title, command, and what it ran on."""
    return [
        f"# {title}",
        "",
        f"Produced by: `{command}`",
        "",
        f"Commit `{git_revision()}`, torch {torch.__version__} ({torch.get_num_threads()} CPU thread(s)), "
        f"setting `{mode}`, {elapsed_min:.1f} min.",
        "",
    ]


def write_report(
    path: Path,
    header: Sequence[str],
    sections: Sequence[tuple[str, Sequence[str]]],
    footer: str,
) -> Path:
    """A Markdown report: the ``header`` lines (:func:`report_header`, the question, how the numbers
    were made), a ``## title`` section for each of ``sections``, then ``footer`` (the files)."""
    lines = list(header)
    for title, body in sections:
        lines += ["", f"## {title}", "", *body]
    path.write_text("\n".join([*lines, "", footer]) + "\n")
    return path


def fmt(value: Any, spec: str) -> str:
    """``format(value, spec)``, or ``""`` for ``None`` (an empty table cell)."""
    return "" if value is None else format(value, spec)


def mean_std(row: dict[str, Any], key: str, digits: int = 2) -> str:
    """``"52.10 ± 3.24"`` from ``row[key + "_mean"]`` and ``row[key + "_std"]``."""
    return f"{row[key + '_mean']:.{digits}f} ± {row[key + '_std']:.{digits}f}"


def md_table(header: str | Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> list[str]:
    """The lines of a Markdown table. ``header``: the column names, or one string of them as the
    Markdown reads (``"target | seed | top-1"``); ``align``: one letter per column, ``r`` for a
    right-aligned (numeric) column, anything else (and missing letters) left."""
    if isinstance(header, str):
        header = [h.strip() for h in header.strip(" |").split("|")]
    seps = ["---:" if a == "r" else "---" for a in align.ljust(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(seps) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
