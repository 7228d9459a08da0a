"""The CLI runs the named recipes end to end: MAE pre-training and DeiT / MAE fine-tuning with
their mixup, layer decay, EMA and drop path, metrics beside TensorBoard logs."""

from __future__ import annotations

import json

import pytest
import torch

from tucker_init.cli import main
from tucker_init.pipeline import load_model
from tucker_init.training.checkpoint import load_checkpoint

TINY = ["--model", "vit", "--depth", "2", "--width", "64", "--img-size", "16", "--patch-size", "4"]
COMMON = ["--data", "digits", "--device", "cpu", "--seed", "0"]


def _config(out) -> dict:
    return load_checkpoint(out / "last.pt")["config"]


def test_pretrain_with_the_mae_recipe(tmp_path):
    out = tmp_path / "pre"
    args = ["pretrain", *TINY, *COMMON, "--ranks", "8", "32", "32", "--steps", "3", "--batch-size", "16"]
    assert main([*args, "--recipe", "mae", "--tensorboard", "--out", str(out)]) == 0
    config = _config(out)
    assert config["lr"] == pytest.approx(1.5e-4 * 16 / 256) and config["betas"] == [0.9, 0.95]
    job = load_checkpoint(out / "last.pt")["job"]
    assert job["recipe"] == "mae" and job["norm_pix_loss"] is True and job["mask_ratio"] == 0.75
    assert any((out / "tensorboard").iterdir())
    assert all(json.loads(line)["kind"] == "train" for line in (out / "metrics.jsonl").read_text().splitlines())


def test_finetune_with_the_deit_recipe_and_overrides(tmp_path):
    out = tmp_path / "ft"
    args = ["finetune", *TINY, *COMMON, "--steps", "2", "--batch-size", "8", "--recipe", "deit"]
    assert main([*args, "--layer-decay", "0.7", "--ema-decay", "0.9", "--lr", "1e-3", "--out", str(out)]) == 0
    config = _config(out)
    assert (config["mixup"], config["cutmix"], config["label_smoothing"]) == (0.8, 1.0, 0.1)
    assert (config["layer_decay"], config["ema_decay"], config["lr"]) == (0.7, 0.9, 1e-3)
    assert load_checkpoint(out / "last.pt")["job"]["drop_path"] == 0.1
    model, _ = load_model(out / "model.safetensors")
    assert torch.isfinite(torch.cat([p.flatten() for p in model.parameters()])).all()


def test_a_recipe_of_the_other_kind_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["finetune", *TINY, *COMMON, "--recipe", "mae", "--out", str(tmp_path / "x")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tucker-init: error:") and "--recipe" in err[0]


def test_a_pretrained_template_has_a_model_card(tmp_path):
    out = tmp_path / "pre"
    args = ["pretrain", *TINY, *COMMON, "--ranks", "8", "32", "32", "--steps", "2", "--batch-size", "16"]
    assert main([*args, "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: tucker_init")
    for fact in ("| method | tucker |", "| ranks | (8, 32, 32) |", "| recipe | small_pretrain |", "| data | digits |"):
        assert fact in card, fact
    assert "| steps | 2 of 2 |" in card and "| library | tucker_init " in card
