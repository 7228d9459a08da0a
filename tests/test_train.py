"""Training loop, schedule, checkpoints, resume and non-finite-loss handling (CPU, tiny)."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from tucker_init.training import (
    NonFiniteLossError,
    TrainConfig,
    WarmupCosine,
    build_optimizer,
    build_scheduler,
    classification_loss,
    evaluate,
    finetune,
    masked_image_loss,
    train,
)
from tucker_init.training.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

sys.path.insert(0, str(Path(__file__).parent))
from _train_worker import tiny_dataset, tiny_loader, tiny_model, tiny_vit

from tucker_init.training.data import BatchLoader

WORKER = Path(__file__).parent / "_train_worker.py"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """Same thread count as the worker subprocesses, so float results match bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_config(tmp_path: Path | None = None, **kw) -> TrainConfig:
    # Mirrors the worker script's config (tests/_train_worker.py).
    base = dict(
        steps=8,
        batch_size=16,
        lr=3e-3,
        min_lr=1e-5,
        warmup_steps=2,
        weight_decay=0.05,
        grad_clip=1.0,
        label_smoothing=0.1,
        seed=1,
        device="cpu",
        log_every=2,
        out_dir=str(tmp_path) if tmp_path is not None else None,
    )
    return TrainConfig(**(base | kw))


def run_worker(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(
        [sys.executable, str(WORKER), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": -3}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"steps": None}, "steps / epochs"),
        ({"epochs": 1.0}, "steps / epochs"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"min_lr": 1.0}, "min_lr"),
        ({"device": "tpu"}, "device"),
        ({"device": "cpu:0"}, "device"),
        ({"warmup_steps": 11}, "warmup_steps"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"log_every": 0}, "log_every"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"max_time_s": 0}, "max_time_s"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"betas": (0.9, 1.5)}, "betas"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    base = {"steps": 10, "lr": 1e-3}
    with pytest.raises(ValueError, match=f"^{field}"):
        TrainConfig(**(base | kwargs))


def test_config_epochs_and_roundtrip():
    config = TrainConfig(epochs=1.5, lr=1e-3)
    assert config.total_steps(steps_per_epoch=4) == 6
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"steps": 3, "learning_rate": 1.0})


def test_loader_must_match_config_batch_size():
    with pytest.raises(ValueError, match="batch_size=32"):
        train(tiny_vit(), tiny_loader(16), classification_loss(), small_config(batch_size=32))


# -- optimizer and schedule ---------------------------------------------------------------------------
def test_schedule_warmup_then_cosine():
    lr, min_lr, warmup, total = 1.0, 0.1, 10, 110
    config = TrainConfig(steps=total, lr=lr, min_lr=min_lr, warmup_steps=warmup, weight_decay=0.0)
    opt = build_optimizer(nn.Linear(2, 2), config)
    sched = build_scheduler(opt, config, total)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])  # the lr the step at this index uses
        opt.step()
        sched.step()
    expected = [lr * WarmupCosine(total, warmup, min_lr / lr)(s) for s in range(total)]
    assert seen == pytest.approx(expected)
    assert seen[0] == pytest.approx(lr / warmup)  # first step: lr / warmup
    assert seen[4] == pytest.approx(lr * 5 / warmup)  # linear
    assert seen[warmup - 1] == pytest.approx(lr)  # peak at the end of the warm-up
    assert seen[warmup] == pytest.approx(lr)  # cosine starts at the peak
    mid = warmup + (total - warmup - 1) / 2
    assert WarmupCosine(total, warmup, min_lr / lr)(mid) == pytest.approx((lr + min_lr) / 2)  # half way
    assert seen[-1] == pytest.approx(min_lr)  # last step reaches min_lr
    assert all(a >= b for a, b in itertools.pairwise(seen[warmup:]))  # monotone decay
    assert all(a < b for a, b in itertools.pairwise(seen[:warmup]))  # monotone warm-up


def test_no_weight_decay_on_biases_norms_and_tokens():
    model = tiny_vit()
    opt = build_optimizer(model, TrainConfig(steps=1, weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decayed | plain == set(names.values()) and not decayed & plain
    assert "blocks.0.attn.qkv.weight" in decayed and "head.weight" in decayed
    for name in ("blocks.0.attn.qkv.bias", "blocks.0.norm1.weight", "pos_embed", "cls_token"):
        assert name in plain


def test_factorized_template_and_scalers_are_trained():
    model = tiny_model(factorized=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, tiny_loader(16), classification_loss(), small_config(steps=2))
    for name in ("template.shared", "scalers.g0.X", "scalers.g0.U", "scalers.g0.V"):
        assert not torch.equal(before[name], dict(model.named_parameters())[name]), name


# -- runs -------------------------------------------------------------------------------------------
def test_same_seed_same_parameters():
    states = []
    for _ in range(2):
        model = tiny_model(factorized=False, dropout=0.1)
        train(model, tiny_loader(16), classification_loss(0.1), small_config(steps=4))
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_finetune_curve_metrics_and_checkpoint(tmp_path):
    model = tiny_vit()
    test_loader = BatchLoader(tiny_dataset(40, seed=5), 16, image_size=16, shuffle=False, drop_last=False)
    metrics = tmp_path / "m.jsonl"
    config = small_config(tmp_path, steps=12, eval_every=5, log_every=3, lr=1e-2)
    result = finetune(model, tiny_loader(16), test_loader, config, metrics_path=metrics)
    assert result.completed and result.step == 12
    assert [s for s, _ in result.curve("top1")] == [5, 10, 12]
    assert result.final_eval is not None and result.final_eval["count"] == 40
    assert 0.0 <= result.final_eval["top1"] <= 100.0
    assert result.final_eval == {"step": 12, **evaluate(model, test_loader)}
    assert result.history[0]["loss"] > result.history[-1]["loss"]  # it learns something
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == [3, 5, 6, 9, 10, 12]
    assert set(train_records[0]) == {"kind", "step", "loss", "lr", "images_per_s", "elapsed"}
    assert [r["step"] for r in records if r["kind"] == "eval"] == [5, 10, 12]
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 12 and ckpt["format"] == FORMAT and ckpt["loader"] == {"epoch": 3, "batch": 0}
    assert TrainConfig.from_dict(ckpt["config"]) == config


def test_resume_in_a_new_process_matches_uninterrupted(tmp_path):
    # Uninterrupted 8 steps (with dropout, augmentation, clipping, warm-up) here ...
    full = tiny_model(factorized=False, dropout=0.1)
    result = train(full, tiny_loader(16), classification_loss(0.1), small_config(tmp_path / "full"))
    assert result.step == 8
    # ... against 3 steps here, then the remaining 5 in a fresh process.
    part = tiny_model(factorized=False, dropout=0.1)
    config = small_config(tmp_path / "part", max_steps=3)
    stopped = train(part, tiny_loader(16), classification_loss(0.1), config)
    assert stopped.stopped == "max_steps" and stopped.step == 3
    assert load_checkpoint(tmp_path / "part" / "last.pt")["step"] == 3
    out = tmp_path / "resumed.pt"
    run_worker(
        *("--out-dir", str(tmp_path / "part"), "--steps", "8", "--dropout", "0.1", "--resume"),
        *("--params", str(out)),
    )
    resumed = torch.load(out, weights_only=True)
    expected = full.state_dict()
    assert resumed.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(resumed[key], value), key
    # The interrupted run's metrics file holds each step once, as if never interrupted.
    steps = [json.loads(x)["step"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 3, 4, 6, 8]


def test_resume_refuses_a_changed_config(tmp_path):
    train(tiny_vit(), tiny_loader(16), classification_loss(), small_config(tmp_path, steps=4, max_steps=2))
    with pytest.raises(ValueError, match=re.escape("lr: checkpoint 0.003, now 0.001")):
        train(tiny_vit(), tiny_loader(16), classification_loss(), small_config(tmp_path, steps=4, lr=1e-3), resume=True)


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    with pytest.warns(UserWarning, match="starting from step 0"):
        result = train(tiny_vit(), tiny_loader(16), classification_loss(), small_config(tmp_path, steps=2), resume=True)
    assert result.step == 2
    with pytest.raises(ValueError, match="out_dir"):
        train(tiny_vit(), tiny_loader(16), classification_loss(), small_config(steps=2), resume=True)


def test_max_time_stops_with_a_checkpoint(tmp_path):
    config = small_config(tmp_path, max_time_s=1e-9)
    result = train(tiny_vit(), tiny_loader(16), classification_loss(), config)
    assert result.stopped == "max_time" and result.step == 1 and not result.completed
    assert load_checkpoint(result.checkpoint)["step"] == 1
    resumed = train(tiny_vit(), tiny_loader(16), classification_loss(), small_config(tmp_path), resume=True)
    assert resumed.completed and resumed.step == 8


# -- failures -------------------------------------------------------------------------------------------
def nan_at(step: int):
    calls = {"n": 0}
    base = classification_loss()

    def loss_fn(model, batch):
        calls["n"] += 1
        loss = base(model, batch)
        return loss * float("nan") if calls["n"] == step else loss

    return loss_fn


@pytest.mark.parametrize("log_every", [1, 5])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, log_every):
    model = tiny_vit()
    config = small_config(tmp_path, checkpoint_every=2, log_every=log_every)
    with pytest.raises(NonFiniteLossError, match="non-finite loss \\(nan\\) at step 3") as info:
        train(model, tiny_loader(16), nan_at(3), config)
    assert info.value.step == 3 and math.isnan(info.value.loss)
    assert info.value.checkpoint == tmp_path / "last.pt"
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    # It is the state of a clean 2-step run.
    clean = tiny_vit()
    train(clean, tiny_loader(16), classification_loss(), small_config(max_steps=2))
    for key, value in clean.state_dict().items():
        assert torch.equal(ckpt["model"][key], value), key


def test_exploding_lr_raises_non_finite(tmp_path):
    config = small_config(tmp_path, lr=1e6, min_lr=0.0, grad_clip=None, warmup_steps=0, steps=30, log_every=1)
    with pytest.raises(NonFiniteLossError):
        train(tiny_vit(), tiny_loader(16), classification_loss(), config)


def test_loss_fn_must_return_a_scalar():
    with pytest.raises(TypeError, match="scalar floating-point tensor"):
        train(tiny_vit(), tiny_loader(16), lambda m, b: m(b[0]), small_config(steps=2))


def test_masked_image_loss_uses_the_model_loss():
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, images):
            return SimpleNamespace(loss=(images * self.w).pow(2).mean())

    model = Masked()
    result = train(model, tiny_loader(16), masked_image_loss, small_config(steps=3, weight_decay=0.0))
    assert result.step == 3 and model.w.item() < 1.0


# -- checkpoint files ---------------------------------------------------------------------------------
def test_checkpoint_roundtrip_and_rng(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", step=5, weights={"a": torch.arange(3.0)}, rng=capture_rng_state())
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left
    data = load_checkpoint(path)
    assert data["format"] == FORMAT and data["format_version"] == FORMAT_VERSION and data["step"] == 5
    first = (torch.rand(3), np.random.rand(3), __import__("random").random())
    restore_rng_state(data["rng"])
    again = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_checkpoint_refuses_random_foreign_truncated_and_newer(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a readable tucker_init checkpoint"):
        load_checkpoint(junk)

    good = save_checkpoint(tmp_path / "good.pt", model={"w": torch.randn(64, 64)}, step=1)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable tucker_init checkpoint"):
        load_checkpoint(truncated)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(ValueError, match="not a tucker_init checkpoint"):
        load_checkpoint(foreign)

    pickled = tmp_path / "pickled.pt"
    torch.save({"format": FORMAT, "format_version": 1, "obj": SimpleNamespace(a=1)}, pickled)
    with pytest.raises(ValueError, match="not a readable tucker_init checkpoint"):
        load_checkpoint(pickled)  # weights_only refuses arbitrary objects

    newer = tmp_path / "newer.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION + 1}, newer)
    with pytest.raises(ValueError, match="newer than the version"):
        load_checkpoint(newer)

    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x.pt", format="mine")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", step=1)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, step=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_mae_pretraining_of_a_factorized_vit_with_width_scaling_resumes_exactly(tmp_path):
    from tucker_init.objectives.mae import masked_model_for
    from tucker_init.objectives.stochastic import WidthScaling

    def setup(mode: str = "prefix"):
        fm = tiny_model(factorized=True)
        scaling = WidthScaling(mode, seed=1).attach(fm)  # seed 1: step 0 draws a narrower width
        return masked_model_for(fm, decoder_dim=16, decoder_depth=1, decoder_heads=2), scaling

    def config(out=None, **kw):
        return small_config(out, steps=4, label_smoothing=0.0, **kw)

    # Uninterrupted, with width scaling driven by before_step.
    mae, scaling = setup()
    seen = []

    def set_step(step: int) -> None:
        seen.append(step)
        scaling.set_step(step)

    result = train(mae, tiny_loader(16), masked_image_loss, config(), before_step=set_step)
    assert seen == [0, 1, 2, 3] and result.completed and math.isfinite(result.loss)
    expected = mae.state_dict()

    # Two steps, then a fresh model resumed from the checkpoint: same parameters.
    mae, scaling = setup()
    train(mae, tiny_loader(16), masked_image_loss, config(tmp_path, max_steps=2), before_step=scaling.set_step)
    mae, scaling = setup()
    train(mae, tiny_loader(16), masked_image_loss, config(tmp_path), resume=True, before_step=scaling.set_step)
    for key, value in expected.items():
        assert torch.equal(mae.state_dict()[key], value), key

    # The masks mattered: without scaling the run ends elsewhere.
    plain, _ = setup("off")
    train(plain, tiny_loader(16), masked_image_loss, config())
    assert any(not torch.equal(plain.state_dict()[k], v) for k, v in expected.items())
