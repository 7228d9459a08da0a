"""The CLI reports every user error in one line ``tucker-init: error: ...`` with exit status 2 (no
traceback), refuses options a command would ignore, and never overwrites another job's files;
internal errors keep their traceback (tiny ViT on digits, CPU)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tucker_init import pipeline
from tucker_init.cli import main

TINY = ["--img-size", "16", "--patch-size", "4"]
RUN = ["--data", "digits", "--device", "cpu", "--batch-size", "8", "--steps", "2"]
REPO = Path(__file__).resolve().parents[1]


def one_line_error(capsys, argv: list[str]) -> str:
    """Run ``main(argv)``; it must exit with 2 and print exactly one error line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tucker-init: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A pre-training folder (template, last.pt, metrics) and an initialized model file in it."""
    out = tmp_path_factory.mktemp("cli") / "pre"
    assert (
        main(["pretrain", *TINY, "--depth", "1", "--width", "64", "--ranks", "4", "8", "8", *RUN, "--out", str(out)])
        == 0
    )
    model = ["--template", str(out / "template.safetensors"), *TINY, "--depth", "1", "--width", "64"]
    assert main(["init", *model, "--out", str(out.parent / "model.safetensors")]) == 0
    return out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["pretrain", "--depth", "0", "--out", "x"], "argument --depth: expected a positive int, found '0'"),
        (["pretrain", "--width", "-3", "--out", "x"], "argument --width: expected a positive int, found '-3'"),
        (["init", "--template", "t", "--depth", "0", "--out", "x"], "argument --depth: expected a positive int"),
        (["finetune", "--steps", "0", "--out", "x"], "argument --steps: expected a positive int, found '0'"),
        (["pretrain", "--lr", "nan", "--out", "x"], "argument --lr: expected a positive number, found 'nan'"),
        (["pretrain", "--mask-ratio", "1", "--out", "x"], r"argument --mask-ratio: expected a number in \(0, 1\)"),
        (["pretrain", "--method", "cp", "--out", "x"], "argument --method: invalid choice: 'cp'"),
        (["init", "--out", "x"], "one of the arguments --template --from-dense is required"),
    ],
)
def test_bad_option_values_are_one_line(capsys, tmp_path, monkeypatch, argv, match):
    monkeypatch.chdir(tmp_path)
    assert re.search(match, one_line_error(capsys, argv))
    assert not (tmp_path / "x").exists()  # before: --depth 0 wrote a 6-block model and exited 0


def test_missing_and_wrong_kind_files(capsys, run, tmp_path):
    model_file = str(run.parent / "model.safetensors")
    template = str(run / "template.safetensors")
    out = str(tmp_path / "m.safetensors")
    cases = [
        (["init", "--template", str(tmp_path / "none"), "--out", out], "--template '.*none': no such file"),
        (["init", "--template", str(tmp_path), "--out", out], "--template .*: is a folder"),
        (["init", "--template", str(run / "last.pt"), *TINY, "--out", out], "is not a readable template file"),
        (
            ["init", "--template", model_file, *TINY, "--out", out],
            "is a safetensors file but not a tucker_init template",
        ),
        (["evaluate", "--weights", str(tmp_path / "none")], "model file .* does not exist"),
        (["evaluate", "--weights", template], "is not a tucker_init model file"),
        (["finetune", "--weights", template, *RUN, "--out", str(tmp_path / "ft")], "is not a tucker_init model file"),
        (["evaluate", "--weights", model_file, "--data", ""], r"name must be one of \[.*found ''"),
    ]
    for argv, match in cases:
        line = one_line_error(capsys, argv)
        assert re.search(match, line), (argv, line)


def test_library_refusals_are_one_line(capsys, run, tmp_path):
    template = str(run / "template.safetensors")
    line = one_line_error(
        capsys,
        ["pretrain", *TINY, "--depth", "1", "--width", "64", "--ranks", "99", "8", "8", *RUN, "--out", str(tmp_path)],
    )
    assert "ranks[0]=99 exceeds the maximum" in line
    line = one_line_error(
        capsys, ["init", "--template", template, "--model", "resnet", "--out", str(tmp_path / "r.safetensors")]
    )
    assert "the template is for backbone family 'vit'" in line
    (tmp_path / "file").write_text("x")
    line = one_line_error(
        capsys, ["pretrain", *TINY, "--depth", "1", "--width", "64", *RUN, "--out", str(tmp_path / "file")]
    )
    assert "is a file; expected a folder" in line


def test_a_multi_line_library_error_is_folded(capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise ValueError("first line\n  second line")

    monkeypatch.setattr(pipeline, "pretrain", refuse)
    assert one_line_error(capsys, ["pretrain", "--out", "x"]) == "tucker-init: error: first line second line"


@pytest.mark.parametrize("error", [RuntimeError("torch broke"), KeyError("missing"), AssertionError("bug")])
def test_internal_errors_keep_their_traceback(monkeypatch, error):
    def crash(*args, **kwargs):
        raise error

    monkeypatch.setattr(pipeline, "pretrain", crash)
    with pytest.raises(type(error)):
        main(["pretrain", "--out", "x"])


def test_the_entry_point_prints_one_line_without_traceback(tmp_path):
    for argv in (["pretrain", "--depth", "0", "--out", "x"], ["init", "--template", "none", "--out", "x.safetensors"]):
        proc = subprocess.run(
            [sys.executable, "-m", "tucker_init", *argv],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("tucker-init: error: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


def test_options_that_would_be_ignored_are_refused(capsys, run, tmp_path):
    model_file = str(run.parent / "model.safetensors")
    template = str(run / "template.safetensors")
    out = str(tmp_path / "o")
    for option, value in [
        ("--model", "vit"),
        ("--depth", "12"),
        ("--width", "64"),
        ("--num-classes", "5"),
        ("--img-size", "32"),
        ("--patch-size", "2"),
    ]:
        line = one_line_error(capsys, ["finetune", "--weights", model_file, option, value, *RUN, "--out", out])
        assert f"{option}: the model comes from --weights" in line
    cases = [
        (["pretrain", "--dense", "--method", "kronecker", "--out", out], "--method: a --dense run has no template"),
        (["pretrain", "--dense", "--scaling", "prefix", "--out", out], "--scaling: a --dense run has no template"),
        (["pretrain", "--dense", "--ranks", "1", "2", "3", "--out", out], "--ranks: a --dense run has no template"),
        (["pretrain", "--method", "kronecker", "--scaling", "rank", "--out", out], "not to --method kronecker"),
        (["init", "--template", template, "--data", "digits", "--out", "m.safetensors"], "--data: used only with"),
        (
            ["init", "--template", template, "--learn-steps", "0", "--data-root", "d", "--out", "m.safetensors"],
            "--data-root: used only with --learn-steps > 0",
        ),
        (
            ["init", "--template", template, "--width-rule", "learn", "--out", "m.safetensors"],
            "--width-rule learn: needs --learn-steps > 0",
        ),
        (
            ["pretrain", "--model", "resnet", "--patch-size", "4", "--out", out],
            "--patch-size: applies to vit and swin models",
        ),
        (
            ["pretrain", "--model", "resnet18", "--depth", "2", "--out", out],
            "--depth: depth/width apply to the families",
        ),
    ]
    for argv, match in cases:
        assert match in one_line_error(capsys, argv), argv
    assert not (tmp_path / "o").exists()


def test_a_job_never_overwrites_another_jobs_files(capsys, run, tmp_path):
    template = str(run / "template.safetensors")
    model = ["--template", template, *TINY, "--depth", "1", "--width", "64"]
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for name in ("metrics.jsonl", "last.pt"):  # before: `init --out run/metrics.jsonl` overwrote it
        line = one_line_error(capsys, ["init", *model, "--out", str(run / name)])
        assert "--out must be a .safetensors file path" in line
    line = one_line_error(capsys, ["init", *model, "--out", template])
    assert "exists and is not a tucker_init model file (format 'tucker_init.template')" in line
    (tmp_path / "d.safetensors").mkdir()
    assert "is a folder" in one_line_error(capsys, ["init", *model, "--out", str(tmp_path / "d.safetensors")])
    weights = ["--weights", str(run.parent / "model.safetensors"), *RUN]
    line = one_line_error(capsys, ["finetune", *weights, "--out", str(run)])
    assert "holds the checkpoint of a pretrain job" in line
    line = one_line_error(capsys, ["finetune", *weights, "--out", str(run), "--resume"])
    assert "config differs in kind: checkpoint 'pretrain', now 'finetune'" in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    ft = tmp_path / "ft"
    assert main(["finetune", *weights, "--out", str(ft)]) == 0
    pre = ["pretrain", *TINY, "--depth", "1", "--width", "64", "--ranks", "4", "8", "8", *RUN]
    assert "holds the checkpoint of a finetune job" in one_line_error(capsys, [*pre, "--out", str(ft)])


def test_resume_with_a_changed_setting_is_one_line(capsys, run):
    pre = ["pretrain", *TINY, "--depth", "1", "--width", "64", *RUN, "--out", str(run), "--resume"]
    line = one_line_error(capsys, [*pre, "--ranks", "4", "16", "8"])
    assert "the config differs in ranks: checkpoint [4, 8, 8], now [4, 16, 8]" in line
    line = one_line_error(capsys, [*pre, "--ranks", "4", "8", "8", "--mask-ratio", "0.5"])
    assert "the config differs in mask_ratio: checkpoint 0.75, now 0.5" in line
    assert main([*pre, "--ranks", "4", "8", "8"]) == 0  # the same settings resume
