"""target_weights(): the template -> target map as one differentiable function. Gradients of a
narrower, shallower target's loss reach the FactorizedModel's core, scalers and remainder; without
grad its values are initialize()'s, bit for bit; one plan serves every call; misuse is an error."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _models import perturb, tiny_vit
from torch import nn

from tucker_init import ResizePlan, factorize, initialize, plan_resize, target_weights

IMAGES = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
LABELS = torch.arange(4) % 10


def vit(depth: int, width: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return tiny_vit(depth=depth, embed_dim=width, num_heads=width // 64).eval()


@pytest.fixture(scope="module")
def fm():
    return factorize(perturb(vit(4, 128, seed=1), seed=1), ranks=(8, 48, 48)).eval()


def _loss(model: nn.Module, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(torch.func.functional_call(model, weights, (IMAGES,)), LABELS)


def test_gradients_reach_core_scalers_and_remainder(fm):
    narrow = vit(3, 64)  # depth 4 -> 3 interpolates (block 1 sits at 1.5), width 128 -> 64 slices
    plan = plan_resize(fm, narrow)
    fm.zero_grad(set_to_none=True)
    for _ in range(2):  # the per-step use: one plan, a fresh graph each call
        _loss(narrow, target_weights(fm, narrow, plan=plan)).backward()
    for name, p in fm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert {n.split(".")[0] for n, _ in fm.named_parameters()} == {"backbone", "template", "scalers"}
    assert all(p.grad is None for p in narrow.parameters())  # the target is only read


def test_values_equal_initialize(fm):
    narrow = vit(3, 64)
    with torch.no_grad():
        weights = target_weights(fm, narrow, depth="interpolate", width="slice")
    expected, report = initialize(copy.deepcopy(narrow), fm, return_report=True)
    state = expected.state_dict()
    assert set(weights) == {k for k, v in report.items() if v != "target-init"}
    for name, value in weights.items():
        assert torch.equal(value, state[name]), name
        assert value.dtype == state[name].dtype and value.shape == state[name].shape


def test_fresh_channels_keep_the_targets_values(fm):
    wide = vit(2, 192)  # wider than the template: channels 128.. have no source
    own = wide.norm.weight.detach().clone()
    plan = plan_resize(fm, wide, depth="select").to("cpu")
    weights = target_weights(fm, wide, plan=plan, seed=3)
    assert torch.equal(weights["norm.weight"][128:], own[128:])
    assert torch.equal(weights["norm.weight"][:128], fm.backbone.norm.weight[:128])
    _loss(wide, weights).backward()
    assert wide.norm.weight.grad is None  # fresh entries are the target's init, a constant
    again = target_weights(fm, wide, plan=plan, seed=3)
    assert torch.equal(again["blocks.0.mlp.fc1.weight"], weights["blocks.0.mlp.fc1.weight"])


def test_plan_misuse(fm):
    narrow = vit(2, 64)
    plan = plan_resize(fm, narrow, depth="select")
    assert isinstance(plan, ResizePlan) and plan.depth == "select" and plan.width == "slice"
    with pytest.raises(ValueError, match=r"depth='interpolate' differs from the plan's depth='select'"):
        target_weights(fm, narrow, depth="interpolate", plan=plan)
    other = factorize(vit(2, 128), ranks=(4, 32, 32))
    with pytest.raises(ValueError, match=r"plan was made for another template"):
        target_weights(other, narrow, plan=plan)
    with pytest.raises(TypeError, match=r"plan must be a ResizePlan"):
        target_weights(fm, narrow, plan={"depth": "select"})
    with pytest.raises(ValueError, match=r"width='learn' trains the scalers, which only initialize"):
        plan_resize(fm, narrow, width="learn")
    with pytest.raises(TypeError, match=r"source must be a WeightTemplate or a FactorizedModel, found str"):
        target_weights("template.safetensors", narrow)
    with pytest.raises(TypeError, match=r"target must be a torch.nn.Module, found dict"):
        plan_resize(fm, {})
