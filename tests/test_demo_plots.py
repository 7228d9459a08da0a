"""The demo's figures come from its results file, drawn outside the core: tucker_init never
imports analysis/, and ``python -m analysis.demo_plots`` turns a ``demo.json`` into the table
files and the four figures (ignoring the demo's other options, as scripts/demo.sh passes them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _models import tiny_vit

from analysis.demo_plots import main
from tucker_init import factorize, save_template
from tucker_init.demo import DEMO_RESULTS

CORE = Path(__file__).resolve().parents[1] / "tucker_init"


def test_core_never_imports_analysis():
    pattern = re.compile(r"^\s*(from|import)\s+analysis\b", re.MULTILINE)
    offenders = [str(p.relative_to(CORE)) for p in CORE.rglob("*.py") if pattern.search(p.read_text())]
    assert not offenders


def test_demo_plots_from_results(tmp_path, capsys):
    save_template(tmp_path / "pretrain" / "template.safetensors", factorize(tiny_vit(), ranks=(4, 16, 16)))
    rows = [{"size": s, "params": 1000, "random_top1": 10.0, "template_top1": 12.5, "delta": 2.5} for s in ("a", "b")]
    curves = {f"{s} {m}": [[0, 10.0], [5, 20.0]] for s in ("a", "b") for m in ("random", "template")}
    results = {"rows": rows, "curves": curves, "provenance": "test", "template": "pretrain/template.safetensors"}
    (tmp_path / DEMO_RESULTS).write_text(json.dumps(results))
    main(["--quick", "--out", str(tmp_path), "--seed", "3"])
    names = ["table.csv", "table.md", "accuracy_vs_size.png", "accuracy_vs_steps.png", "template_spectra.png"]
    for name in [*names, "scalers.png"]:
        assert (tmp_path / name).stat().st_size > 0, name
    assert str(tmp_path / "scalers.png") in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match=r"demo.json not found: run `python -m tucker_init demo"):
        main(["--out", str(tmp_path / "nothing")])
