"""Smoke test of the experiment scripts: each ``main()`` runs its ``--smoke`` setting (a few
steps on scikit-learn digits, seconds in all) and must write its CSV, Markdown and PNG files,
each saying how it was produced."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # experiments/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from experiments import convergence, init_methods  # noqa: E402
from experiments._common import SOURCE_PRESETS, SourceSpec, parse_seeds, provenance, resolve_mode  # noqa: E402
from tucker_init.pipeline import ModelSpec  # noqa: E402


def _check_outputs(folder: Path, stems: list[str], report: str, pngs: int) -> None:
    for stem in stems:
        assert (folder / f"{stem}.csv").is_file(), f"{stem}.csv missing in {sorted(folder.iterdir())}"
        md = (folder / f"{stem}.md").read_text()
        assert md.startswith("Produced by: `"), md[:80]
        with (folder / f"{stem}.csv").open() as f:
            assert list(csv.DictReader(f)), f"{stem}.csv has no rows"
    text = (folder / report).read_text()
    assert text.startswith("Produced by: `") and "--smoke" in text.splitlines()[0]
    found = sorted(folder.glob("*.png"))
    assert len(found) == pngs and all(p.stat().st_size > 1000 for p in found), found


def test_scripts_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "init_methods"
    assert init_methods.main(["--smoke", "--out", str(out), "--cache", str(cache), "--threads", "1"]) == 0
    _check_outputs(out, ["runs", "summary", "sources"], "init_methods.md", pngs=1)
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
    _check_outputs(out, ["curves", "speedup"], "convergence.md", pngs=1)
    with (out / "curves.csv").open() as f:
        steps = {int(r["step"]) for r in csv.DictReader(f)}
    assert steps == {0, 2, 4}  # step 0 (the init itself) and every eval_every steps

    # A second run reuses every finished run instead of training again.
    capsys.readouterr()
    assert convergence.main(["--smoke", "--out", str(out), "--cache", str(cache)]) == 0
    assert "(reused)" in capsys.readouterr().out


def test_helpers() -> None:
    assert parse_seeds(None, "full") == [0, 1, 2]
    assert parse_seeds(None, "quick") == [0]
    assert parse_seeds(None, "medium") == [0, 1, 2]
    assert parse_seeds("2", "quick") == [0, 1]
    assert parse_seeds("0,4", "full") == [0, 4]
    with pytest.raises(SystemExit):
        parse_seeds("x", "full")
    assert init_methods._sizes("L3w64, L12w192", "--vit-targets") == ((3, 64), (12, 192))
    assert init_methods._sizes("", "--resnet-targets") == ()
    with pytest.raises(SystemExit, match=r"--vit-targets: size must look like 'L6w128'"):
        init_methods._sizes("L12", "--vit-targets")
    for script in (convergence, init_methods):  # every mode has a plan and a source preset
        for flags, mode in (([], "full"), (["--quick"], "quick"), (["--medium"], "medium"), (["--smoke"], "smoke")):
            assert resolve_mode(script._parse(flags)) == mode
            assert mode in script.PLANS and mode in SOURCE_PRESETS
    assert provenance(ROOT / "experiments" / "init_methods.py", ["--quick"]).endswith(
        "experiments/init_methods.py --quick"
    )
    spec = ModelSpec("vit", 2, 64)
    a = SourceSpec("tucker", spec, steps=2, batch_size=16, lr=1e-3, data="digits", ranks=(4, 8, 8))
    b = SourceSpec("tucker", spec, steps=3, batch_size=16, lr=1e-3, data="digits", ranks=(4, 8, 8))
    assert a.key() != b.key() and a.key() == SourceSpec(**a.__dict__).key()
    with pytest.raises(ValueError, match="needs ranks"):
        SourceSpec("kronecker", spec, steps=2, batch_size=16, lr=1e-3, data="digits")
