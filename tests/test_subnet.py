"""Real sub-network scaling during pre-training (issue 12.2)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tucker_init import factorize, initialize
from tucker_init.objectives.distill import Distillation
from tucker_init.objectives.mae import masked_model_for
from tucker_init.objectives.subnet import SubnetTraining, choose_subnet_sizes
from tucker_init.pipeline import ModelSpec, pretrain

VIT = ModelSpec("vit", depth=4, width=128)
RESNET = ModelSpec("resnetd", depth=2, width=16, patch_size=None)


def _training(spec: ModelSpec, sizes, ranks, objective=masked_model_for, **kwargs) -> SubnetTraining:
    torch.manual_seed(0)
    fm = factorize(spec.build(), ranks=ranks, init="random", seed=0)
    models = {f"L{d}w{w}": ModelSpec(spec.family, d, w, patch_size=spec.patch_size).build() for d, w in sizes}
    return SubnetTraining(objective(fm), fm, models, objective, **kwargs)


def test_default_sizes_halve_depth_and_width_in_whole_multiples():
    assert choose_subnet_sizes(4, 128, 64, None) == [(2, 64), (2, 128), (4, 64)]
    assert choose_subnet_sizes(1, 64, 64, None) == []  # nothing smaller with whole heads
    for bad in ([(5, 64)], [(2, 96)], [(4, 128)], [(0, 64)]):
        with pytest.raises(ValueError, match="subnet sizes must be smaller"):
            choose_subnet_sizes(4, 128, 64, bad)


def test_draws_are_reproducible_and_the_sandwich_keeps_the_smallest():
    training = _training(VIT, [(2, 64), (2, 128), (4, 64)], (4, 32, 32), sandwich=True, seed=3)
    draws = []
    for step in range(20):
        training.set_step(step)
        draws.append(training.sampled())
    again = []
    for step in range(20):
        training.set_step(step)
        again.append(training.sampled())
    assert draws == again
    assert all(d[0] == "L2w64" and d[1] != "L2w64" for d in draws)
    assert len({d[1] for d in draws}) == 2  # both other sizes get drawn


@pytest.mark.parametrize("depth", ["select", "first"])
def test_subnet_weights_are_the_initialized_model_and_gradients_reach_the_template(depth):
    training = _training(VIT, [(2, 64)], (4, 32, 32), depth=depth)
    fm = training._factorized[0]
    narrow = ModelSpec("vit", 2, 64).build()
    initialize(narrow, fm, depth=depth, width="slice")
    weights = training._weights("L2w64", torch.device("cpu"))
    state = narrow.state_dict()
    assert all(torch.equal(weights[k].detach(), state[k]) for k in weights)
    loss = training.subnet_loss("L2w64", torch.randn(4, 3, 32, 32))
    loss.backward()
    core = [p for name, p in fm.named_parameters() if name.startswith("template")]
    assert core and all(p.grad is not None and p.grad.abs().sum() > 0 for p in core)
    assert fm.backbone.patch_embed.proj.weight.grad is not None  # the remainder (a sliced stem)
    decoder = training.objectives["L2w64"].decoder
    assert any(p.grad is not None for p in decoder.parameters())  # each size has its own decoder


def test_a_subnet_step_leaves_the_full_models_batch_norm_statistics_alone():
    training = _training(RESNET, [(1, 16)], (2, 8, 8), objective=lambda m: masked_model_for(m, patch_size=8))
    fm = training._factorized[0]
    before = {k: v.clone() for k, v in fm.backbone.named_buffers()}
    training.train()
    training.subnet_loss("L1w16", torch.randn(4, 3, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in fm.backbone.named_buffers())


def test_distillation_subnets_get_their_own_projection():
    teacher = ModelSpec("vit", 2, 64).build()
    training = _training(
        VIT, [(2, 64), (4, 128)][:1], (4, 32, 32), objective=lambda m: Distillation(m, teacher, image_size=32)
    )
    assert isinstance(training.full.projection, torch.nn.Linear)  # 128 -> 64
    assert isinstance(training.objectives["L2w64"].projection, torch.nn.Identity)  # 64 = 64
    out = training(torch.randn(2, 3, 32, 32))
    assert out.sizes == ("L2w64",) and out.loss > out.full_loss


def test_pretrain_with_subnets_resumes_exactly(tmp_path):
    common = dict(scaling="subnet", sandwich=True, ranks=(4, 32, 32), batch_size=16, seed=1, steps=6)
    pretrain(VIT, "digits", tmp_path / "straight", **common)
    pretrain(VIT, "digits", tmp_path / "parts", engine={"max_steps": 3}, **common)
    pretrain(VIT, "digits", tmp_path / "parts", resume=True, **common)
    a = load_file(tmp_path / "straight" / "template.safetensors")
    b = load_file(tmp_path / "parts" / "template.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="subnet_sizes"):
        pretrain(VIT, "digits", tmp_path / "x", subnet_sizes=[(2, 64)], steps=1)
    with pytest.raises(ValueError, match="dense=False"):
        pretrain(VIT, "digits", tmp_path / "y", scaling="subnet", dense=True, steps=1)
    with pytest.raises(ValueError, match="subnet_depth"):  # only with scaling='subnet'
        pretrain(VIT, "digits", tmp_path / "z", subnet_depth="first", steps=1)
    with pytest.raises(ValueError, match="subnet_depth must be one of"):
        pretrain(VIT, "digits", tmp_path / "w", scaling="subnet", subnet_depth="learn", steps=1)


def test_cli_subnet_sizes_are_checked_in_one_line(tmp_path, capsys):
    from tucker_init.cli import main

    with pytest.raises(SystemExit):
        main(["pretrain", "--scaling", "subnet", "--subnet-sizes", "3y64", "--out", str(tmp_path / "x")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--subnet-sizes: expected DEPTHxWIDTH, e.g. 3x64, found '3y64'" in lines[0], lines


def test_cli_subnet_depth_is_checked_in_one_line(tmp_path, capsys):
    from tucker_init.cli import main

    with pytest.raises(SystemExit):
        main(["pretrain", "--scaling", "subnet", "--subnet-depth", "learn", "--out", str(tmp_path / "x")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--subnet-depth: invalid choice: 'learn'" in lines[0], lines
