"""Smoke test of the experiment scripts ``init_methods`` and ``convergence`` (each ``main()`` runs
its ``--smoke`` setting: a few steps on scikit-learn digits, seconds in all, and must write its
CSV, Markdown and PNG files, each saying how it was produced), and of the harness they share."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # experiments/ is a package at the repository root, not an installed one
    sys.path.insert(0, str(ROOT))

from experiments import convergence, init_methods  # noqa: E402
from experiments.harness import (  # noqa: E402
    SOURCE_PRESETS,
    SourceSpec,
    cached_run,
    command_line,
    make_parser,
    parse_seeds,
    resolve_mode,
)
from tucker_init.pipeline import ModelSpec  # noqa: E402


def _check_outputs(folder: Path, stems: list[str], report: str, pngs: int, name: str) -> None:
    for stem in stems:
        assert (folder / f"{stem}.csv").is_file(), f"{stem}.csv missing in {sorted(folder.iterdir())}"
        md = (folder / f"{stem}.md").read_text()
        assert md.startswith("Produced by: `"), md[:80]
        with (folder / f"{stem}.csv").open() as f:
            assert list(csv.DictReader(f)), f"{stem}.csv has no rows"
    text = (folder / report).read_text()
    assert text.startswith("# ") and f"Produced by: `python -m experiments.{name} --smoke" in text
    found = sorted(folder.glob("*.png"))
    assert len(found) == pngs and all(p.stat().st_size > 1000 for p in found), found


def test_scripts_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "init_methods"
    assert init_methods.main(["--smoke", "--out", str(out), "--cache", str(cache), "--threads", "1"]) == 0
    _check_outputs(out, ["runs", "summary", "sources"], "init_methods.md", pngs=1, name="init_methods")
    with (out / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    # Every method on every target (a ViT and a ResNet), each either scored or marked n/a.
    assert {r["method"] for r in summary} == set(init_methods.METHODS)
    assert {r["target"] for r in summary} == {"vit-L1w64", "resnet-L1w8"}
    assert all(r["status"] in ("ok", "n/a") for r in summary)
    report = (out / "init_methods.md").read_text()
    assert "## Where the template does not help" in report and "**vit-L1w64**" in report

    # convergence reuses the template init_methods pre-trained (same settings -> same cache entry).
    capsys.readouterr()
    out = tmp_path / "convergence"
    assert convergence.main(["--smoke", "--out", str(out), "--cache", str(cache), "--threads", "1"]) == 0
    assert "cached  Tucker template" in capsys.readouterr().out
    _check_outputs(out, ["curves", "speedup"], "convergence.md", pngs=1, name="convergence")
    with (out / "curves.csv").open() as f:
        steps = {int(r["step"]) for r in csv.DictReader(f)}
    assert steps == {0, 2, 4}  # step 0 (the init itself) and every eval_every steps

    # A second run reuses every finished run instead of training again.
    capsys.readouterr()
    assert convergence.main(["--smoke", "--out", str(out), "--cache", str(cache)]) == 0
    assert "(reused)" in capsys.readouterr().out

    # The lossless path starts from init_methods' dense source (cached too) and reuses random init's run.
    capsys.readouterr()
    flags = ["--smoke", "--out", str(out), "--cache", str(cache), "--template-init", "lossless"]
    assert convergence.main(flags) == 0
    printed = capsys.readouterr().out
    assert "cached  dense MAE model" in printed
    assert re.search(r"random seed 0: .*\(reused\)", printed) and not re.search(
        r"lossless seed 0: .*\(reused\)", printed
    )
    assert "lossless" in (out / "convergence.md").read_text()

    # Layer decay fine-tunes both inits again, in runs of their own: the runs without it stay.
    capsys.readouterr()
    assert convergence.main([*flags, "--layer-decay", "0.75"]) == 0
    assert "(reused)" not in capsys.readouterr().out
    target_runs = next((out / "runs").iterdir())
    inits = {"random", "lossless", "tucker_learned", "random_ld0.75", "lossless_ld0.75"}
    assert {p.name for p in target_runs.iterdir()} == inits
    assert "layer-wise lr decay 0.75" in (out / "convergence.md").read_text()
    with pytest.raises(SystemExit, match=r"--layer-decay must be in \(0, 1\], got 0.0"):
        convergence.main([*flags, "--layer-decay", "0"])


def test_scripts_run_as_modules() -> None:
    """``python -m experiments.NAME`` from the repository root, with no path set up by the script."""
    done = subprocess.run(
        [sys.executable, "-m", "experiments.init_methods", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "--smoke" in done.stdout and "--seeds" in done.stdout and "--cache" in done.stdout


def test_command_line() -> None:
    assert parse_seeds(None) is None  # the mode's own seeds
    assert parse_seeds(["0", "1", "2"]) == (0, 1, 2)
    assert parse_seeds(["0,4"]) == (0, 4)
    assert parse_seeds(["1,"]) == (1,)
    for bad in (["x"], ["-1"], [","]):
        with pytest.raises(SystemExit):
            parse_seeds(bad)
    assert init_methods._sizes("L3w64, L12w192", "--vit-targets") == ((3, 64), (12, 192))
    assert init_methods._sizes("", "--resnet-targets") == ()
    with pytest.raises(SystemExit, match=r"--vit-targets: size must look like 'L6w128'"):
        init_methods._sizes("L12", "--vit-targets")
    for script in (convergence, init_methods):  # every mode has a plan and a source preset
        for flags, mode in (([], "full"), (["--quick"], "quick"), (["--medium"], "medium"), (["--smoke"], "smoke")):
            assert resolve_mode(make_parser(None, script.PLANS).parse_args(flags)) == mode
            assert mode in script.PLANS and mode in SOURCE_PRESETS
    assert (
        command_line("init_methods", ["--quick", "--out", "a b"])
        == "python -m experiments.init_methods --quick --out 'a b'"
    )


def test_source_keys() -> None:
    spec = ModelSpec("vit", 2, 64)
    a = SourceSpec("tucker", spec, steps=2, batch_size=16, lr=1e-3, data="digits", ranks=(4, 8, 8))
    b = SourceSpec("tucker", spec, steps=3, batch_size=16, lr=1e-3, data="digits", ranks=(4, 8, 8))
    assert a.key() != b.key() and a.key() == SourceSpec(**a.__dict__).key()
    assert a.key() != SourceSpec(**{**a.__dict__, "decoder": (32, 1, 2)}).key()
    assert SourceSpec(**{**a.__dict__, "objective": "supervised"}).key().startswith("tucker-vit-L2w64-r4x8x8-off-sup2")
    with pytest.raises(ValueError, match="needs ranks"):
        SourceSpec("kronecker", spec, steps=2, batch_size=16, lr=1e-3, data="digits")
    # The fields added for the ablations leave the keys of existing cache entries as they were.
    smoke = SOURCE_PRESETS["smoke"]
    tucker = smoke.source("tucker", ModelSpec("vit", *smoke.vit_source), smoke.vit_tucker_ranks)
    assert tucker.key() == "tucker-vit-L2w64-r12x32x32-off-mae2x16-digits-55e692df"


def test_cached_run_compares_settings_as_json(tmp_path: Path) -> None:
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"top1": 1.0}

    settings = {"ranks": (4, 8, 8), "seed": 0}  # a tuple reads back from JSON as a list
    assert cached_run(tmp_path / "r.json", settings, compute) == {"top1": 1.0}
    assert cached_run(tmp_path / "r.json", settings, compute) == {"top1": 1.0, "reused": True}
    assert cached_run(tmp_path / "r.json", {**settings, "seed": 1}, compute) == {"top1": 1.0}
    assert len(calls) == 2
