"""GPU-ready options of the engine, exercised on the CPU: channels_last and torch.compile give
the training trajectory of the plain eager run (to float32 round-off)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from timm.models.resnet import BasicBlock, ResNet

sys.path.insert(0, str(Path(__file__).parent))
from _train_worker import tiny_loader, tiny_model

from tucker_init.training import TrainConfig, classification_loss, train


def _run(model: torch.nn.Module, steps: int = 3, **options) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    config = TrainConfig(steps=steps, lr=1e-3, warmup_steps=1, seed=2, device="cpu", log_every=1, **options)
    train(model, tiny_loader(8), classification_loss(), config)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_trajectory(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    # Over all parameters together: Adam turns round-off in a near-zero gradient into a full lr
    # step of one element, so element-wise bounds would flake; a real difference (a wrong
    # memory format, a skipped update) moves the whole vector by far more than 1e-4.
    keys = [k for k, v in expected.items() if v.is_floating_point()]
    a = torch.cat([found[k].flatten().double() for k in keys])
    b = torch.cat([expected[k].flatten().double() for k in keys])
    assert float((a - b).norm() / b.norm()) < 1e-4


def _resnet() -> ResNet:
    torch.manual_seed(0)
    return ResNet(BasicBlock, layers=(1, 1, 1, 1), channels=(8, 16, 16, 16), num_classes=10)


def test_channels_last_follows_the_eager_trajectory():
    expected = _run(_resnet())
    model = _resnet()
    found = _run(model, channels_last=True)
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert_same_trajectory(found, expected)


@pytest.mark.parametrize("factorized", [False, True], ids=["dense", "factorized"])
def test_compiled_training_follows_the_eager_trajectory(factorized):
    torch.manual_seed(0)
    expected = _run(tiny_model(factorized))
    torch.manual_seed(0)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    found = _run(tiny_model(factorized), compile="aot_eager")
    assert counters["stats"]["unique_graphs"] > 0  # the steps really ran through torch.compile
    assert_same_trajectory(found, expected)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match=r"channels_last must be a bool, found 'yes'"):
        TrainConfig(steps=1, channels_last="yes")
    with pytest.raises(ValueError, match=r"compile must be a torch.compile backend name"):
        TrainConfig(steps=1, compile=True)
