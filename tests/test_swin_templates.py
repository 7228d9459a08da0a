"""Smoke test of experiments/swin_templates.py: ``main(["--smoke", ...])`` pre-trains a Swin template
and a dense Swin for 2 steps on digits, initializes a Swin of the source's size and a deeper one,
fine-tunes them and writes the table, runs, figure and report; ``--publish`` copies the table and the
figure into docs/ (a temporary one here); ``--dry-run`` only announces the plan.

The numbers of a smoke run mean nothing: this checks the plumbing and the files.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # experiments/ is a package at the repository root, not an installed one
    sys.path.insert(0, str(ROOT))

from experiments import swin_templates  # noqa: E402

pytestmark = pytest.mark.slow  # ~10 s on 2 CPU cores


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_swin_templates_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swin_templates, "DOCS", tmp_path / "docs")
    out = tmp_path / "swin_templates"
    argv = ["--smoke", "--out", str(out), "--cache", str(tmp_path / "cache"), "--publish"]
    assert swin_templates.main(argv) == 0

    report = (out / "swin_templates.md").read_text()
    assert f"Produced by: `python -m experiments.swin_templates {' '.join(argv)}`" in report
    assert "## Conclusion" in report and "Where the template does not help" in report
    rows = read_csv(out / "swin_templates.csv")
    # Weight selection cannot make the deeper target (L2 from an L1 source): no row for it.
    assert {(r["target"], r["method"]) for r in rows} == {
        ("swin-L1w32", "random"),
        ("swin-L1w32", "weight selection"),
        ("swin-L1w32", "tucker template"),
        ("swin-L2w32", "random"),
        ("swin-L2w32", "tucker template"),
    }
    assert all(0.0 <= float(r["top1_mean"]) <= 100.0 for r in rows)
    assert len(read_csv(out / "runs.csv")) == len(rows)  # one seed
    assert (out / "swin_templates.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "docs" / "results" / "swin_templates.csv").read_text() == (
        out / "swin_templates.csv"
    ).read_text()
    assert (tmp_path / "docs" / "figures" / "swin_templates_smoke.png").is_file()


def test_swin_templates_dry_run_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dry"
    assert swin_templates.main(["--smoke", "--dry-run", "--out", str(out), "--cache", str(tmp_path / "c")]) == 0
    assert "estimated" in capsys.readouterr().out
    assert not out.exists() and not (tmp_path / "c").exists()


def test_quick_preset_asks_the_question_of_the_issue() -> None:
    setting = swin_templates.SETTINGS["quick"]
    assert setting.seeds == (0, 1, 2) and setting.data == "fashion_mnist" and setting.img_size == 32
    depth, width = setting.source
    sizes = set(setting.targets)
    assert (depth, width) in sizes  # the source size
    assert any(d < depth for d, _ in sizes) and any(w < width for _, w in sizes)  # shallower, narrower
