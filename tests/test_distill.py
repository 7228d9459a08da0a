"""Distillation as a template objective: the loss, the frozen teacher, the job (issue 12.1, 12.3)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tucker_init import factorize
from tucker_init.objectives.distill import Distillation, token_features
from tucker_init.pipeline import ModelSpec, pretrain, save_model

SMALL = ModelSpec("vit", depth=2, width=64)


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return SMALL.build().eval()


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory, teacher) -> str:
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_model(path, teacher, SMALL)
    return str(path)


@pytest.mark.parametrize("target", ["features", "logits", "both"])
def test_full_rank_student_of_its_teacher_has_zero_loss(teacher, target):
    student = factorize(teacher, ranks="full")
    out = Distillation(student, teacher, target=target, image_size=32)(torch.randn(4, 3, 32, 32))
    assert float(out.loss.detach()) < 1e-5
    other = Distillation(SMALL.build(), teacher, target=target, image_size=32)(torch.randn(4, 3, 32, 32))
    assert float(other.loss.detach()) > 100 * max(float(out.loss.detach()), 1e-7)  # a different model is far from it


def test_teacher_is_frozen_hidden_and_moves_with_the_module(teacher):
    torch.manual_seed(1)
    student = ModelSpec("vit", depth=1, width=128).build()
    distill = Distillation(student, teacher, image_size=32)
    assert isinstance(distill.projection, torch.nn.Linear)  # 128 -> 64 channels
    assert distill.projection.weight.shape == (64, 128)
    assert not any(k.startswith("_teacher") or "teacher" in k for k in distill.state_dict())
    assert all(not p.requires_grad for p in teacher.parameters())
    distill.train()
    assert not teacher.training
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distill(torch.randn(2, 3, 32, 32)).loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    distill.to(torch.float64)
    assert next(teacher.parameters()).dtype == torch.float64
    distill.to(torch.float32)


def test_cnn_maps_are_read_as_tokens():
    maps = torch.arange(2 * 3 * 4 * 5.0).view(2, 3, 4, 5)
    tokens = token_features(maps)
    assert tokens.shape == (2, 20, 3)
    assert torch.equal(tokens[1, 7], maps[1, :, 1, 2])


def test_other_patch_grids_and_bad_options_are_refused(teacher):
    other_grid = ModelSpec("vit", depth=1, width=64, patch_size=8).build()
    with pytest.raises(ValueError, match="token counts"):
        Distillation(other_grid, teacher, image_size=32)
    with pytest.raises(ValueError, match="target"):
        Distillation(other_grid, teacher, target="tokens", image_size=32)
    with pytest.raises(ValueError, match="temperature"):
        Distillation(other_grid, teacher, target="logits", temperature=0, image_size=32)
    with pytest.raises(TypeError, match="teacher"):
        Distillation(other_grid, "teacher.safetensors", image_size=32)


def test_pretrain_by_distillation_lowers_the_loss_and_records_the_teacher(tmp_path, teacher_file):
    spec = ModelSpec("vit", depth=2, width=128)
    common = dict(objective="distill", teacher=teacher_file, ranks=(2, 16, 16), batch_size=16, seed=0)
    result = pretrain(spec, "digits", tmp_path / "run", steps=30, **common)
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0]
    card = (tmp_path / "run" / "README.md").read_text()
    assert "distillation of" in card and "teacher.safetensors" in card
    # Resuming with another teacher is refused, naming the setting.
    other = tmp_path / "other.safetensors"
    torch.manual_seed(5)
    save_model(other, SMALL.build(), SMALL)
    with pytest.raises(ValueError, match="teacher"):
        pretrain(spec, "digits", tmp_path / "run", steps=30, resume=True, **{**common, "teacher": str(other)})


def test_compress_then_refine_starts_at_the_teacher(tmp_path, teacher_file):
    run = pretrain(
        SMALL,
        "digits",
        tmp_path / "run",
        objective="distill",
        teacher=teacher_file,
        init_from=teacher_file,
        ranks="full",
        steps=2,
        batch_size=16,
        lr=1e-6,
    )
    first = next(h["loss"] for h in run.history if "loss" in h)
    assert first < 1e-4  # the full-rank HOSVD of the teacher is the teacher
    with pytest.raises(ValueError, match="init_from"):
        pretrain(ModelSpec("vit", depth=3, width=64), "digits", tmp_path / "r2", init_from=teacher_file, steps=1)


def test_objective_and_teacher_must_agree(tmp_path, teacher_file):
    with pytest.raises(ValueError, match="needs a teacher"):
        pretrain(SMALL, "digits", tmp_path / "a", objective="distill", steps=1)
    with pytest.raises(ValueError, match="takes no teacher"):
        pretrain(SMALL, "digits", tmp_path / "b", teacher=teacher_file, steps=1)
    with pytest.raises(ValueError, match="objective"):
        pretrain(SMALL, "digits", tmp_path / "c", objective="clip", steps=1)


def test_cli_distill_and_its_one_line_errors(tmp_path, teacher_file):
    base = [sys.executable, "-m", "tucker_init", "pretrain", "--model", "vit", "--depth", "2", "--width", "64"]
    base += ["--data", "digits", "--steps", "3", "--batch-size", "16", "--ranks", "2", "16", "16"]
    ok = subprocess.run(
        [*base, "--objective", "distill", "--teacher", teacher_file, "--out", str(tmp_path / "ok")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ok" / "template.safetensors").is_file()
    for extra, expected in (
        (["--objective", "distill"], "needs --teacher"),
        (["--teacher", teacher_file], "--teacher: apply to --objective distill"),
        (["--objective", "distill", "--teacher", "no_such_model_xyz"], "neither a model file nor a timm"),
    ):
        bad = subprocess.run([*base, *extra, "--out", str(tmp_path / "bad")], capture_output=True, text=True)
        assert bad.returncode != 0
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], bad.stderr


def test_a_teacher_of_the_wrong_type_is_named(tmp_path):
    with pytest.raises(TypeError, match=r"teacher must be a model file, a timm model name or an nn\.Module, found int"):
        pretrain(SMALL, "digits", tmp_path / "a", objective="distill", teacher=5, ranks=(2, 16, 16), steps=1)
