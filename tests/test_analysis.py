"""Tests for analysis/: spectra, rank sensitivity, heat maps, tables and plots (tiny, CPU)."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import tensorly as tl
import timm
import torch
from _models import RTOL, assert_close_rel
from timm.models.vision_transformer import VisionTransformer

from analysis import (
    aggregate,
    dense_spectra,
    energy_curve,
    mode_spectra,
    plot_accuracy_vs_size,
    plot_accuracy_vs_steps,
    plot_rank_sensitivity,
    plot_scalers,
    plot_spectra,
    plot_template_slices,
    rank_grid_errors,
    ranks_for_energy,
    steps_to_reach,
    suggest_rank,
    template_spectra,
    write_table,
)
from analysis.report import DPI
from tucker_init import WeightTemplate, factorize

PROVENANCE = "python -m pytest tests/test_analysis.py"


@pytest.fixture(scope="module")
def vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10)


@pytest.fixture(scope="module")
def vit_fm(vit):
    return factorize(vit, ranks=(8, 16, 16))


@pytest.fixture(scope="module")
def grid_rows(vit):
    # ViT: one group, unified tensor (24, 64, 64).
    grid = list(itertools.product((4, 12, 24), (16, 64), (16, 64)))
    return rank_grid_errors(vit, grid)


def _known_rank_tensor(ranks=(2, 3, 4), shape=(10, 12, 12), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    core = rng.standard_normal(ranks)
    factors = [rng.standard_normal((n, r)) for n, r in zip(shape, ranks, strict=True)]
    return tl.tucker_to_tensor((tl.tensor(core), [tl.tensor(f) for f in factors]))


def _assert_png(path, figsize):
    assert path.is_file() and path.stat().st_size > 0
    image = plt.imread(path)
    assert image.shape[:2] == (round(figsize[1] * DPI), round(figsize[0] * DPI))


# -- spectra ------------------------------------------------------------------------------------
def test_spectra_of_known_mode_ranks():
    spectra = mode_spectra(_known_rank_tensor())
    nonzero = tuple(int((s > 1e-10 * s[0]).sum()) for s in spectra)
    assert nonzero == (2, 3, 4)
    assert ranks_for_energy(spectra, 0.999) == (2, 3, 4)
    # Several tensors: the largest rank per mode.
    other = mode_spectra(_known_rank_tensor((3, 2, 6)))
    assert ranks_for_energy({"a": spectra, "b": other}, 0.999) == (3, 3, 6)


def test_mode_spectra_match_tensorly_unfold():
    tensor = np.random.default_rng(1).standard_normal((5, 6, 7))
    ours = mode_spectra(torch.from_numpy(tensor))
    for mode in range(3):
        expected = np.linalg.svd(tl.unfold(tl.tensor(tensor), mode), compute_uv=False)
        np.testing.assert_allclose(ours[mode], expected, rtol=1e-10)


def test_energy_curve_monotone_ends_at_one():
    curve = energy_curve(np.random.default_rng(2).random(20))
    assert np.all(np.diff(curve) >= 0) and curve[-1] == 1.0
    np.testing.assert_allclose(energy_curve([3.0, 4.0]), [16 / 25, 1.0])
    with pytest.raises(ValueError, match="all zero"):
        energy_curve([0.0, 0.0])
    with pytest.raises(ValueError, match="energy must be"):
        ranks_for_energy(mode_spectra(_known_rank_tensor()), 1.5)


def test_full_rank_core_spectra_equal_dense_spectra(vit):
    # The core of a full HOSVD is all-orthogonal: its unfoldings have the dense tensor's spectra.
    fm = factorize(vit, ranks="full")
    dense, core = dense_spectra(vit), template_spectra(WeightTemplate.from_model(fm))
    assert list(core) == ["G shared"] and list(dense) == ["W blocks[0:2]"]
    for s_core, s_dense in zip(core["G shared"], dense["W blocks[0:2]"], strict=True):
        # float64 spectra of float32 weights: float32's bound, relative to s_dense[0]
        assert_close_rel(torch.as_tensor(s_core), torch.as_tensor(s_dense), RTOL[torch.float32])
    with pytest.raises(TypeError, match="fm_or_template must be"):
        template_spectra(vit)


def test_dense_spectra_resnet_groups():
    model = timm.create_model("resnet18", num_classes=10)
    spectra = dense_spectra(model)
    assert "W layer1[0:2]" in spectra and len(spectra) == 7
    assert [len(s) for s in spectra["W layer1[0:2]"]] == [36, 64, 64]


# -- rank sensitivity ---------------------------------------------------------------------------
def test_rank_grid_errors_monotone_and_exact_at_full_rank(grid_rows):
    errors = {(r["r1"], r["r2"], r["r3"]): r["rel_error"] for r in grid_rows}
    assert errors[(24, 64, 64)] < 1e-5
    for ranks, error in errors.items():
        for mode in range(3):
            for other, other_error in errors.items():
                same_elsewhere = all(other[m] == ranks[m] for m in range(3) if m != mode)
                if same_elsewhere and other[mode] > ranks[mode]:
                    assert other_error <= error + 1e-6, (ranks, other)
    row = next(r for r in grid_rows if r["ranks"] == "4x16x16")
    assert row["template_params"] == 4 * 16 * 16
    assert row["scaler_params"] == 24 * 4 + 64 * 16 * 2
    assert row["params"] == row["template_params"] + row["scaler_params"]
    assert row["dense_params"] == 24 * 64 * 64


def test_suggest_rank_respects_budget(grid_rows):
    budget = 5000
    best = suggest_rank(grid_rows, budget)
    fitting = [r for r in grid_rows if r["params"] <= budget]
    assert best["params"] <= budget
    assert best["rel_error"] == min(r["rel_error"] for r in fitting)
    smallest = min(r["params"] for r in grid_rows)
    with pytest.raises(ValueError, match=f"smallest budget that works is {smallest}"):
        suggest_rank(grid_rows, smallest - 1)
    with pytest.raises(ValueError, match="budget must be a positive"):
        suggest_rank(grid_rows, 0)
    with pytest.raises(ValueError, match="rows is empty"):
        suggest_rank([], 10)
    with pytest.raises(ValueError, match="no key 'params'"):
        suggest_rank([{"rel_error": 0.1}], 10)
    # An accuracy column from experiments; values as read back from a CSV (strings).
    rows = [{"ranks": "a", "params": "100", "rel_error": "0.5", "top1": "80"},
            {"ranks": "b", "params": "200", "rel_error": "0.2", "top1": "70"}]  # fmt: skip
    assert suggest_rank(rows, 250)["ranks"] == "b"
    assert suggest_rank(rows, 250, by="top1")["ranks"] == "a"


# -- plots --------------------------------------------------------------------------------------
def test_plot_spectra_and_rank_sensitivity(tmp_path, vit, vit_fm, grid_rows):
    spectra = template_spectra(vit_fm) | dense_spectra(vit)
    _assert_png(plot_spectra(spectra, tmp_path / "spectra.png", PROVENANCE), (12.0, 7.0))
    rows = [dict(r, top1=50 + 10 * r["rel_error"]) for r in grid_rows]
    path = plot_rank_sensitivity(rows, tmp_path / "rank.png", PROVENANCE, budget=5000)
    _assert_png(path, (12.0, 4.5))
    _assert_png(plot_rank_sensitivity(grid_rows, tmp_path / "rank_no_acc.png", PROVENANCE), (12.0, 4.5))


def test_plot_heatmaps(tmp_path, vit, vit_fm):
    _assert_png(plot_scalers(vit_fm, tmp_path / "scalers.png", provenance=PROVENANCE), (13.0, 5.0))
    path = plot_template_slices(WeightTemplate.from_model(vit_fm), tmp_path / "slices.png", n=6, provenance="x")
    _assert_png(path, (12.0, 6.0))
    with pytest.raises(ValueError, match=r"group must be a group index in \[0, 1\), found 3"):
        plot_scalers(vit_fm, tmp_path / "bad.png", group=3)
    with pytest.raises(ValueError, match="key must be one of the template keys"):
        plot_template_slices(vit_fm, tmp_path / "bad.png", key="nope")
    kron = factorize(vit, ranks=(4, 8, 8), method="kronecker")
    _assert_png(plot_scalers(kron, tmp_path / "kron_scalers.png", provenance="x"), (13.0, 5.0))
    _assert_png(plot_template_slices(kron, tmp_path / "kron_slices.png", n=3, provenance="x"), (12.0, 6.0))


def test_plot_accuracy_is_deterministic(tmp_path):
    per_seed = [
        {"method": m, "size": s, "seed": seed, "top1": 60 + i + seed}
        for i, (m, s) in enumerate(itertools.product(["random", "tucker"], ["tiny", "small"]))
        for seed in range(3)
    ]
    a = plot_accuracy_vs_size(per_seed, tmp_path / "a.png", PROVENANCE)
    b = plot_accuracy_vs_size(aggregate(per_seed, ["method", "size"], "top1"), tmp_path / "b.png", PROVENANCE)
    _assert_png(a, (8.0, 4.5))
    assert a.read_bytes() == b.read_bytes()  # aggregated here or before: the same figure, no timestamps
    curves = {"random": [(0, 10.0), (100, 40.0), (200, 55.0)], "tucker": [(0, 30.0), (100, 60.0)]}
    _assert_png(plot_accuracy_vs_steps(curves, tmp_path / "steps.png", PROVENANCE, target=50.0), (8.0, 4.5))
    with pytest.raises(ValueError, match=r"path must end in \.png"):
        plot_accuracy_vs_steps(curves, tmp_path / "steps.jpg", PROVENANCE)


def test_curves_of_one_colour_group_share_a_colour_and_differ_by_line_style(tmp_path, monkeypatch):
    import analysis.report as report

    drawn = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path, provenance=None: drawn.append(fig) or Path(path))
    curve = [(0, 10.0), (100, 40.0)]
    by_size = {f"{size} {method}": curve for size in ("tiny", "small") for method in ("random", "tucker")}
    plot_accuracy_vs_steps(by_size, tmp_path / "g.png", PROVENANCE, color_of=lambda name: name.split()[-1])
    style = {line.get_label(): (line.get_color(), line.get_linestyle()) for line in drawn[0].axes[0].lines}
    assert style["tiny random"][0] == style["small random"][0] != style["tiny tucker"][0]
    assert style["tiny random"][1] != style["small random"][1]
    assert style["tiny random"][1] == style["tiny tucker"][1]
    plt.close(drawn[0])


# -- tables -------------------------------------------------------------------------------------
def test_write_table_round_trip(tmp_path, grid_rows):
    csv_path, md_path = write_table(grid_rows, tmp_path / "results" / "rank_grid", PROVENANCE)
    with csv_path.open(newline="") as f:
        read = list(csv.DictReader(f))
    assert len(read) == len(grid_rows)
    assert read[0].keys() == grid_rows[0].keys()
    assert float(read[3]["rel_error"]) == grid_rows[3]["rel_error"]
    lines = md_path.read_text().splitlines()
    assert lines[0] == f"Produced by: `{PROVENANCE}`"
    assert lines[2].startswith("| method | share | r1 |") and set(lines[3]) <= {"|", "-"}
    with pytest.raises(ValueError, match="provenance must be"):
        write_table(grid_rows, tmp_path / "x", "")


def test_aggregate_and_steps_to_reach():
    rows = [{"m": "a", "top1": 1.0}, {"m": "a", "top1": 3.0}, {"m": "b", "top1": 5.0}]
    assert aggregate(rows, ["m"], "top1") == [
        {"m": "a", "top1_mean": 2.0, "top1_std": pytest.approx(np.sqrt(2)), "n": 2},
        {"m": "b", "top1_mean": 5.0, "top1_std": 0.0, "n": 1},
    ]
    with pytest.raises(ValueError, match=r"rows\[0\] has no key\(s\) \['size'\]"):
        aggregate(rows, ["size"], "top1")
    curve = [(300, 72.0), (0, 10.0), (100, 50.0), (200, 70.0)]  # unsorted on purpose
    assert steps_to_reach(curve, 70.0) == 200
    assert steps_to_reach(curve, 10.0) == 0
    assert steps_to_reach(curve, 90.0) is None
    with pytest.raises(ValueError, match="curve is empty"):
        steps_to_reach([], 1.0)
