"""Smoke tests of the ablation scripts in experiments/: each ``main(["--smoke", ...])`` runs end to end
on tiny data (scikit-learn digits, a couple of steps) and writes its CSV, Markdown report and PNGs.

The numbers of a smoke run mean nothing; these tests check the plumbing, the files and that the
report says how it was produced and where the template does not help.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # experiments/ is a package at the repository root, not an installed one
    sys.path.insert(0, str(ROOT))

from experiments import mae_vs_supervised, rank_sweep, stochastic_scaling  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow  # ~10 s per script on 2 CPU cores


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def check_outputs(out: Path, name: str, argv: list[str], pngs: list[str]) -> str:
    """The report, its CSV and the PNGs exist and look like what they claim to be; returns the report."""
    report = (out / f"{name}.md").read_text()
    assert report.startswith("# ")
    assert f"Produced by: `python -m experiments.{name} {' '.join(argv)}`" in report  # the exact command
    assert "## Conclusion" in report
    assert "does not help" in report  # the report says plainly where the template does not help
    assert read_csv(out / f"{name}.csv")
    assert read_csv(out / "runs.csv")
    for png in pngs:
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC), png
        assert len(data) > 5000, png
    return report


def test_stochastic_scaling_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "stochastic_scaling"
    argv = ["--smoke", "--out", str(out), "--cache", str(tmp_path / "cache")]
    assert stochastic_scaling.main(argv) == 0
    widths = stochastic_scaling.SETTINGS["smoke"].widths
    report = check_outputs(
        out,
        "stochastic_scaling",
        argv,
        ["accuracy_by_width.png", "probe_by_width.png", *(f"curves_w{w}.png" for w in widths)],
    )
    assert "seen" in report and "unseen (narrower)" in report and "unseen (wider)" in report
    rows = read_csv(out / "stochastic_scaling.csv")
    assert {(r["scaling"], int(r["width"])) for r in rows} == {
        (m, w) for m in ("off", "prefix", "rank", "random") for w in widths
    }
    for row in rows:
        assert 0.0 <= float(row["top1_mean"]) <= 100.0
        assert 0.0 <= float(row["probe_top1_mean"]) <= 100.0
    assert "estimated" in capsys.readouterr().out  # the run announces its time estimate

    # A second run reads every finished stage from the cache and writes the same table.
    before = (out / "stochastic_scaling.csv").read_text()
    assert stochastic_scaling.main(argv) == 0
    assert (out / "stochastic_scaling.csv").read_text() == before


def test_rank_sweep_smoke(tmp_path: Path) -> None:
    out = tmp_path / "rank_sweep"
    argv = ["--smoke", "--out", str(out), "--cache", str(tmp_path / "cache")]
    assert rank_sweep.main(argv) == 0
    report = check_outputs(out, "rank_sweep", argv, ["rank_sensitivity_vit-L1w64.png", "spectra.png"])
    assert "Automatic rank from the spectra" in report
    grid = read_csv(out / "rank_grid.csv")
    setting = rank_sweep.SETTINGS["smoke"]
    assert {r["ranks"] for r in grid} >= {rank_sweep.rank_name(r) for r in setting.ranks}
    for row in grid:
        assert 0.0 <= float(row["rel_error"]) <= 1.0 + 1e-6
        assert 0.0 <= float(row["rel_error_init"]) <= 1.0 + 1e-6
    inits = {r["init"] for r in read_csv(out / "rank_sweep.csv")}
    assert inits == {"random", "dense MAE", *(f"tucker {rank_sweep.rank_name(r)}" for r in setting.ranks)}


def test_mae_vs_supervised_smoke(tmp_path: Path) -> None:
    out = tmp_path / "mae_vs_supervised"
    argv = ["--smoke", "--out", str(out), "--cache", str(tmp_path / "cache")]
    assert mae_vs_supervised.main(argv) == 0
    check_outputs(
        out, "mae_vs_supervised", argv, ["classification.png", "segmentation.png", "segmentation_examples.png"]
    )
    rows = {r["init"]: r for r in read_csv(out / "mae_vs_supervised.csv")}
    assert set(rows) == {"random", "mae", "supervised"}
    for row in rows.values():
        for key in ("top1_mean", "probe_top1_mean", "seg_miou_mean", "seg_frozen_miou_mean", "seg_pixel_acc_mean"):
            assert 0.0 <= float(row[key]) <= 100.0, key


def test_segmentation_masks_come_from_the_item_pixels() -> None:
    """The composite's mask covers exactly the pixels that were replaced by the item."""
    from tucker_init import load_dataset

    items = load_dataset("digits", "train")
    seg = mae_vs_supervised.make_segmentation_set(items, "train", 16, 16, seed=0)
    photos = load_dataset("photos", "train", n=16, size=16, seed=0)
    assert seg.images.shape == (16, 3, 16, 16) and seg.masks.shape == (16, 16, 16)
    assert 0.05 < float(seg.masks.float().mean()) < 0.9
    changed = (seg.images.int() - photos.images.int()).abs().sum(1) > 0
    assert not (changed & ~seg.masks).any()  # nothing outside the mask was touched


def test_ablations_share_their_templates() -> None:
    """The same template asked for by two scripts is one entry of the shared source cache (the
    quick 24x64x64 template of all three; the smoke 4x16x16 of rank_sweep and mae_vs_supervised)."""
    for mode in ("smoke", "quick"):
        mae = mae_vs_supervised.template_source(mae_vs_supervised.SETTINGS[mode], "mae", 0).key()
        ranks = mae_vs_supervised.SETTINGS[mode].ranks
        assert rank_sweep.sources(rank_sweep.SETTINGS[mode], 0)[rank_sweep.rank_name(ranks)].key() == mae
    quick = stochastic_scaling.template_source(stochastic_scaling.SETTINGS["quick"], "off", 0).key()
    assert quick == mae_vs_supervised.template_source(mae_vs_supervised.SETTINGS["quick"], "mae", 0).key()
    assert quick != stochastic_scaling.template_source(stochastic_scaling.SETTINGS["quick"], "prefix", 0).key()
