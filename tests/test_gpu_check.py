"""The prepared GPU check runs end to end; CI has no GPU, so its --smoke setting runs tiny
models on the CPU and must write one CSV row per case."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments import gpu_check  # noqa: E402


def test_gpu_check_smoke_writes_its_csv(tmp_path):
    assert gpu_check.main(["--smoke", "--out", str(tmp_path), "--pairs", "2"]) == 0
    with (tmp_path / "gpu_check.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["step"]) for r in rows] == [
        ("vit_tiny_smoke", "classification"),
        ("vit_tiny_smoke", "mae"),
        ("resnet18_smoke", "classification"),
    ]
    assert all(float(r["ratio_q1"]) <= float(r["ratio_median"]) <= float(r["ratio_q3"]) for r in rows)
