"""experiments/init_benchmark.py end to end at its smoke size: every source, method and output."""

from __future__ import annotations

import csv
import json

import pytest

from experiments import init_benchmark
from tucker_init.pipeline import finetune_model, lossless_rules


@pytest.mark.slow
def test_smoke_benchmark_writes_rows_costs_and_figure(tmp_path, monkeypatch):
    summary = init_benchmark.main(["--preset", "smoke", "--out", str(tmp_path)])
    rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert set(init_benchmark.CSV_COLUMNS) <= set(rows[0])
    methods = {r["method"] for r in rows}
    assert methods == set(init_benchmark.METHODS)
    # A ResNet's lossless template (a core per stage) reaches its targets (it was n/a with one shared core).
    assert {"tucker_compress", "tucker_compress_select"} <= {r["method"] for r in rows if r["family"] == "resnetd"}
    costs = {r["method"]: float(r["pretrain_cost"]) for r in rows if r["target"] == "vit-L1w64"}
    assert costs["random"] == 0
    # Equal cost: every template source within one step's FLOPs of the dense MAE source's.
    sources = {s["name"]: s for s in csv.DictReader((tmp_path / "sources.csv").open()) if s["family"] == "vit"}
    dense = float(sources["dense_mae"]["cost"])
    templates = ("kronecker", "tucker_mae", "tucker_subnet", "tucker_prefix", "tucker_distill", "tucker_refine")
    for name in (*templates, "tucker_compress_subnet"):
        assert abs(float(sources[name]["cost"]) - dense) <= float(sources[name]["flops_per_step"]), name
    # Direct pre-training pays for every target; the source-sized one is the dense MAE job itself.
    assert costs["direct"] == pytest.approx(float(sources["direct_vit-L1w64"]["cost"]) + dense)
    assert (tmp_path / "init_benchmark.png").stat().st_size > 0
    assert summary.plateau()  # the fine-tuning check is reported per target
    assert summary.speedups()  # and the steps each method saves over random init
    serving = summary.serving("vit")  # the figure's numbers: cost of serving every ViT size, mean top-1
    assert serving["random"][0] == 0 and serving["direct"][0] == costs["direct"]
    assert serving["tucker_mae"][1] == pytest.approx(
        sum(float(r["top1"]) for r in rows if r["method"] == "tucker_mae" and r["family"] == "vit") / 2
    )
    assert "mean top-1 over the sizes it reaches" in (tmp_path / "init_benchmark.md").read_text()
    # A second run reuses every finished source and run.
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}
    init_benchmark.main(["--preset", "smoke", "--out", str(tmp_path)])
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    # A longer fine-tuning of a subset reuses the sources and keeps its runs apart.
    init_benchmark.main(
        [
            "--preset",
            "smoke",
            "--out",
            str(tmp_path),
            "--finetune-steps",
            "8",
            "--targets",
            "vit-L1w64",
            "--methods",
            "random",
        ]
    )
    long_rows = list(csv.DictReader((tmp_path / "runs_ft8.csv").open()))
    assert [(r["target"], r["method"], r["steps"]) for r in long_rows] == [("vit-L1w64", "random", "8")]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    # So does a fine-tuning with layer decay, which reaches the engine and is named in the recipe column.
    engines = []

    def recording_finetune(*args, **kwargs):
        engines.append(kwargs.get("engine"))
        return finetune_model(*args, **kwargs)

    monkeypatch.setattr(init_benchmark, "finetune_model", recording_finetune)
    flags = ["--targets", "vit-L1w64", "--methods", "random", "--layer-decay", "0.75"]
    init_benchmark.main(["--preset", "smoke", "--out", str(tmp_path), *flags])
    assert engines == [{"layer_decay": 0.75}]
    monkeypatch.undo()
    decayed = list(csv.DictReader((tmp_path / "runs_ld0.75.csv").open()))
    assert [(r["method"], r["recipe"]) for r in decayed] == [("random", "small_finetune+layer_decay0.75")]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    # A report over a method whose source is missing still reports every other method.
    prefix = tmp_path / "sources" / "vit" / "tucker_prefix" / "source.json"
    prefix.rename(prefix.with_suffix(".moved"))
    init_benchmark.main(["--preset", "smoke", "--out", str(tmp_path), "--report-only"])
    reported = {r["method"] for r in csv.DictReader((tmp_path / "runs.csv").open()) if r["family"] == "vit"}
    assert reported == set(init_benchmark.METHODS) - {"tucker_prefix", "tucker_prefix_first"}  # same source
    with pytest.raises(SystemExit, match="no finished runs to report"):
        init_benchmark.main(["--preset", "smoke", "--out", str(tmp_path / "empty"), "--report-only"])
    with pytest.raises(SystemExit, match="vit-L9w9 not in the smoke preset"):
        init_benchmark.main(["--preset", "smoke", "--out", str(tmp_path), "--targets", "vit-L9w9"])


def test_only_the_sources_the_methods_need_are_planned():
    family = init_benchmark.PRESETS["quick"].families[0]
    names = [job.name for job in init_benchmark.needed_jobs(family, ["random", "tucker_mae_select"])]
    assert names == ["dense_mae", "tucker_mae"]
    names = [job.name for job in init_benchmark.needed_jobs(family, ["tucker_refine"])]
    assert names == ["dense_mae", "teacher_half", "tucker_refine"]
    names = [job.name for job in init_benchmark.needed_jobs(family, ["tucker_compress_subnet"])]
    assert names == ["dense_mae", "dense_3q", "tucker_compress_subnet"]
    resnet = init_benchmark.PRESETS["quick"].families[1]  # no lossless shared core: no such job
    assert [job.name for job in init_benchmark.needed_jobs(resnet, ["tucker_compress_subnet"])] == ["dense_mae"]
    direct = [job.name for job in init_benchmark.needed_jobs(family, ["direct"])]
    assert len(direct) == len(family.targets)  # dense_mae is the source-sized target's direct run


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--finetune-steps", "2"], "--finetune-steps must be at least 4 .four evaluations., got 2"),
        (["--source-steps", "0"], "--source-steps must be a positive number of steps, got 0"),
        (["--publish-as", "../x"], "--publish-as must be a plain file name .*, got '../x'"),
        (["--layer-decay", "1.5"], r"--layer-decay must be in \(0, 1\], got 1.5"),
    ],
)
def test_bad_budgets_are_refused_in_one_line(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        init_benchmark.main(["--preset", "smoke", "--out", str(tmp_path), *flags])


def test_depth_first_becomes_interpolate_only_for_targets_deeper_than_the_template():
    family = init_benchmark.PRESETS["quick"].families[0]  # template L6 w128
    by_size = {init_benchmark._size(t): t for t in family.targets}
    assert init_benchmark.init_options("tucker_compress", by_size["vit-L3w64"], family) == {"depth": "first"}
    assert init_benchmark.init_options("tucker_compress", by_size["vit-L12w192"], family) == {"depth": "interpolate"}
    assert init_benchmark.init_options("tucker_subnet", by_size["vit-L12w192"], family) == {"depth": "select"}
    assert init_benchmark.init_options("tucker_mae", by_size["vit-L12w192"], family) == {}
    wide = {"depth": "interpolate", "width": "interpolate"}  # only a wider target gets the other width rule
    assert init_benchmark.init_options("tucker_compress_wide", by_size["vit-L12w192"], family) == wide
    assert init_benchmark.init_options("tucker_compress_wide", by_size["vit-L3w64"], family) == {"depth": "first"}
    narrower = init_benchmark.init_options("tucker_compress_select", by_size["vit-L3w64"], family)
    assert narrower == {"depth": "first", "width": "select"}
    assert init_benchmark.init_options("tucker_compress_select", by_size["vit-L12w192"], family) == wide


def test_the_lossless_method_uses_the_rules_the_library_recommends():
    # tucker_compress_zero is what the README tells users to run: pipeline.lossless_rules, at every target.
    for family in init_benchmark.PRESETS["quick"].families:
        for target in family.targets:
            expected = lossless_rules(family.source, target)
            assert init_benchmark.init_options("tucker_compress_zero", target, family) == expected, target


def test_table_marks_a_cell_with_another_number_of_seeds():
    rows = [{"target": "vit-L3w64", "method": "random", "top1": v, "family": "vit"} for v in (60.0, 62.0)]
    rows += [{"target": "vit-L3w192", "method": "random", "top1": v, "family": "vit"} for v in (60.0, 62.0, 64.0, 66.0)]
    rows += [{"target": "vit-L3w64", "method": "kronecker", "top1": v, "family": "vit"} for v in (61.0, 63.0)]
    table = init_benchmark.Summary(rows, unreachable={("vit-L3w192", "kronecker")}).table(["vit-L3w64", "vit-L3w192"])
    assert "| vit-L3w64 | 61.0 ± 1.4 | 62.0 ± 1.4 |" in table
    assert "| vit-L3w192 | 63.0 ± 2.6 (n=4) | n/a |" in table


def test_runs_of_one_target_plot_every_seed(tmp_path):
    import matplotlib.image

    rows = [
        {"target": "vit-L3w192", "method": method, "seed": seed, "top1": 60.0 + seed + i, "family": "vit"}
        for i, method in enumerate(("random", "tucker_compress_zero"))
        for seed in range(3)
    ]
    path = tmp_path / "seeds.png"
    init_benchmark.plot(init_benchmark.Summary(rows), path)
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 300 and height > 300


def test_published_runs_are_imported_only_when_they_match_the_run(tmp_path):
    flags = ["--preset", "smoke", "--out", str(tmp_path), "--families", "vit", "--targets", "vit-L1w64"]
    init_benchmark.main([*flags, "--methods", "random"])
    published = tmp_path / "published.csv"
    published.write_text((tmp_path / "runs.csv").read_text())
    run = tmp_path / "runs" / "vit-L1w64-random-0.json"
    measured = json.loads(run.read_text())
    run.unlink()  # the run file of another session is gone; its published row is not
    init_benchmark.main([*flags, "--methods", "random", "--report-only", "--import-runs", str(published)])
    (row,) = csv.DictReader((tmp_path / "runs.csv").open())
    assert (float(row["top1"]), row["imported_from"]) == (measured["top1"], "published.csv")
    assert json.loads(run.read_text())["top1_at_3_4"] == measured["top1_at_3_4"]
    rows = list(csv.DictReader(published.open()))
    for column, value, message in [
        ("recipe", "small_finetune+layer_decay0.5", "seed 0 was fine-tuned with small_finetune.layer_decay0.5"),
        ("pretrain_cost", "5.0", "seed 0 cost 5 FLOPs of pre-training, here 0"),
    ]:
        run.unlink(missing_ok=True)
        bad = tmp_path / "bad.csv"
        with bad.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerow({**rows[0], column: value})
        with pytest.raises(SystemExit, match=message):
            init_benchmark.main([*flags, "--methods", "random", "--report-only", "--import-runs", str(bad)])
    with pytest.raises(SystemExit, match="--import-runs: no such file"):
        init_benchmark.main([*flags, "--methods", "random", "--import-runs", str(tmp_path / "missing.csv")])


def test_a_default_publication_never_overwrites_the_headline():
    quick = init_benchmark.PRESETS["quick"]  # 300-step sources
    assert init_benchmark.published_names(None, quick, "") == ("init_benchmark_src300", "init_benchmark_src300_sources")
    longer = init_benchmark.replace(quick, source_steps=1200)
    named = init_benchmark.published_names(None, longer, "_ft2400_ld0.75")
    assert named == ("init_benchmark_src1200_ft2400_ld0.75", "init_benchmark_src1200_sources")
    assert init_benchmark.published_names("init_benchmark", longer, "_ft2400") == (
        "init_benchmark",
        "init_benchmark_sources",
    )


def test_the_serving_error_bar_is_the_seed_spread_of_the_mean_over_sizes():
    rows = [
        {"target": t, "method": "random", "seed": seed, "top1": top1, "family": "vit"}
        for t, values in (("vit-L3w64", (60.0, 64.0)), ("vit-L3w128", (70.0, 66.0)))
        for seed, top1 in enumerate(values)
    ]
    summary = init_benchmark.Summary(rows)
    assert summary.seed_spread("random", ["vit-L3w64", "vit-L3w128"]) == 0.0  # both seeds average 65
    assert summary.seed_spread("random", ["vit-L3w64"]) == pytest.approx(2**0.5 * 2)
    rows.append({"target": "vit-L3w64", "method": "random", "seed": 2, "top1": 90.0, "family": "vit"})
    assert init_benchmark.Summary(rows).seed_spread("random", ["vit-L3w64", "vit-L3w128"]) == 0.0  # seed 2 lacks a size
