"""factorize(): lossless at full rank, faithful to tensorly / torch.kron, gradients reach
every parameter, and the input model is never touched."""

from __future__ import annotations

import itertools

import pytest
import tensorly as tl
import torch
from _models import BUILDERS, OUTPUT_RTOL, assert_close_rel, build, tiny_vit
from tensorly.decomposition import tucker as tl_tucker

from tucker_init import factorize
from tucker_init.templates.kronecker import kronecker_reconstruct, kronecker_svd
from tucker_init.templates.tucker import hosvd, tucker_reconstruct

tl.set_backend("pytorch")

FAMILIES = list(BUILDERS)


def full_ranks(method: str, name: str):
    return "full" if method == "tucker" else (16, 4, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["tucker", "kronecker"])
@pytest.mark.parametrize("name", FAMILIES)
def test_full_rank_is_lossless(name, method, dtype):
    model = build(name, dtype)
    share = name in ("vit", "deit")  # one group: a shared core is still lossless
    fm = factorize(model, ranks=full_ranks(method, name), method=method, share=share).eval()
    x = torch.randn(3, 3, 32, 32, dtype=dtype, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, found = model(x), fm(x)
    assert_close_rel(found, expected, OUTPUT_RTOL[dtype])  # relative to the logits' scale

    dense = fm.materialize()
    assert type(dense) is type(model)
    original, rebuilt = model.state_dict(), dense.state_dict()
    assert list(rebuilt) == list(original)
    for key, value in original.items():
        assert_close_rel(rebuilt[key], value, msg=key)
    assert all(not hasattr(p, "_tucker") for p in dense.parameters())


def test_lossless_check_fails_one_rank_short_of_full():
    # The relative bound of the test above is meaningful: dropping a single rank of any mode
    # of the ViT's (24, 64, 64) tensor moves the logits by 2e-2 of their scale or more.
    model = build("vit")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for ranks in [(23, 64, 64), (24, 63, 64), (24, 64, 63)]:
        fm = factorize(model, ranks=ranks).eval()
        with torch.no_grad(), pytest.raises(AssertionError, match=r"max \|diff\|"):
            assert_close_rel(fm(x), model(x), OUTPUT_RTOL[torch.float32])


@pytest.mark.parametrize("name", FAMILIES)
def test_input_model_is_not_modified(name):
    model = build(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names_before = [n for n, _ in model.named_parameters()]
    fm = factorize(model, ranks=(2, 4, 4), method="tucker")
    fm(torch.randn(2, 3, 32, 32)).sum().backward()
    assert [n for n, _ in model.named_parameters()] == names_before
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_templated_weights_leave_the_parameter_list():
    model = build("vit")
    fm = factorize(model, ranks=(4, 8, 8))
    names = {n for n, _ in fm.named_parameters()}
    assert "backbone.blocks.0.attn.qkv.weight" not in names
    assert "backbone.blocks.0.attn.qkv.bias" in names  # biases stay dense
    assert {"template.shared", "scalers.g0.X", "scalers.g0.U", "scalers.g0.V"} <= names
    # 12 slices per ViT block (qkv 3, proj 1, fc1 4, fc2 4) and 2 blocks
    assert fm.layout.groups[0].shape == (24, 64, 64)


def test_resnet_groups_split_at_the_width_change():
    fm = factorize(build("resnet"), ranks=(2, 4, 4), share=False)
    # The stem gives 64 channels and layer1 has 16, so layer1.0 holds a shortcut too.
    assert [g.name for g in fm.layout.groups] == [
        "layer1[0:1]",
        "layer1[1:2]",
        "layer2[0:1]",
        "layer2[1:2]",
        "layer3[0:1]",
        "layer4[0:1]",
    ]
    # layer1.0 at d=16: conv1 (16,64,3,3) -> 4*9, conv2 (16,16,3,3) -> 9, shortcut (16,64,1,1) -> 4
    assert fm.layout.groups[0].shape == (49, 16, 16)
    # layer2.0 at d=16: conv1 (32,16,3,3) -> 2*9, conv2 (32,32,3,3) -> 4*9, shortcut (32,16,1,1) -> 2
    assert fm.layout.groups[2].shape == (56, 16, 16)


@pytest.mark.parametrize("method", ["tucker", "kronecker"])
def test_reconstruction_error_never_increases_with_rank(method):
    model = build("vit", torch.float64)
    weights = dict(model.named_parameters())
    group_names = None

    def error(ranks):
        nonlocal group_names
        fm = factorize(model, ranks=ranks, method=method)
        with torch.no_grad():
            rebuilt = fm.reconstruct()
        group_names = list(rebuilt)
        num = sum((rebuilt[n] - weights[n]).pow(2).sum() for n in rebuilt)
        den = sum(weights[n].pow(2).sum() for n in rebuilt)
        return (num / den).sqrt().item()

    if method == "tucker":
        grids = [
            [(r, 32, 32) for r in (2, 6, 12, 24)],
            [(24, r, 64) for r in (4, 16, 32, 64)],
            [(8, 16, r) for r in (4, 16, 32, 64)],
        ]
    else:
        grids = [[(k, 4, 4) for k in (1, 2, 4, 8, 16)], [(k, 8, 8) for k in (1, 8, 32, 64)]]
    for grid in grids:
        errors = [error(r) for r in grid]
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(errors)), (grid, errors)
    assert error("full" if method == "tucker" else (64, 8, 8)) < 1e-12


def test_tucker_matches_tensorly():
    g = torch.Generator().manual_seed(0)
    tensor = torch.randn(20, 12, 12, dtype=torch.float64, generator=g)
    core, factors = hosvd(tensor, (5, 6, 7))
    ours = tucker_reconstruct(core, *factors)
    assert_close_rel(ours, tl.tucker_to_tensor((core, factors)))
    # Truncated HOSVD is tensorly's 'svd' initialisation; with no HOOI sweep it is the same
    # projection (signs may differ, the reconstruction may not).
    tl_core, tl_factors = tl_tucker(tensor, rank=[5, 6, 7], init="svd", n_iter_max=0)
    assert_close_rel(ours, tl.tucker_to_tensor((tl_core, tl_factors)))


def test_kronecker_matches_torch_kron():
    g = torch.Generator().manual_seed(0)
    coeffs = torch.randn(5, 3, 4, 2, generator=g, dtype=torch.float64)  # (n, k, p, q)
    templates = torch.randn(3, 2, 6, generator=g, dtype=torch.float64)  # (k, a, b)
    ours = kronecker_reconstruct(coeffs, templates)
    for n in range(5):
        expected = sum(torch.kron(coeffs[n, i], templates[i]) for i in range(3))
        assert_close_rel(ours[n], expected)
    # and the SVD inverts it at full rank
    t, [c] = kronecker_svd([ours], rank=12, a=2, b=6)
    assert_close_rel(kronecker_reconstruct(c, t), ours)


@pytest.mark.parametrize("method", ["tucker", "kronecker"])
@pytest.mark.parametrize("name", ["vit", "resnet", "convnext"])
def test_gradients_reach_every_parameter(name, method):
    model = build(name)
    ranks = (2, 4, 4) if method == "tucker" else (4, 2, 2)
    fm = factorize(model, ranks=ranks, method=method).train()
    fm(torch.randn(4, 3, 32, 32)).logsumexp(-1).sum().backward()
    missing = [n for n, p in fm.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_shared_template_gradient_is_the_sum_over_groups():
    model = build("resnet", torch.float64)
    fm = factorize(model, ranks=(3, 8, 8), share=True)
    n_groups = len(fm.layout.groups)
    assert n_groups > 1 and list(fm.template) == ["shared"]
    core = fm.template["shared"]
    g = torch.Generator().manual_seed(0)
    probes = [torch.randn(grp.shape, generator=g, dtype=torch.float64) for grp in fm.layout.groups]
    parts = [torch.autograd.grad((fm.group_tensor(i) * probes[i]).sum(), core)[0] for i in range(n_groups)]
    total = sum((fm.group_tensor(i) * probes[i]).sum() for i in range(n_groups))
    (grad_total,) = torch.autograd.grad(total, core)
    assert_close_rel(grad_total, sum(parts))
    assert all(p.abs().sum() > 0 for p in parts)


def test_random_init_matches_weight_scale():
    model = tiny_vit(depth=4, embed_dim=128)
    fm = factorize(model, ranks=(16, 32, 32), init="random", seed=3)
    rebuilt = fm.reconstruct()
    weights = dict(model.named_parameters())
    ratio = (
        torch.stack([rebuilt[n].pow(2).mean() for n in rebuilt]).mean()
        / torch.stack([weights[n].pow(2).mean() for n in rebuilt]).mean()
    )
    assert 0.8 < ratio.sqrt().item() < 1.25
    again = factorize(model, ranks=(16, 32, 32), init="random", seed=3)
    assert torch.equal(again.template["shared"], fm.template["shared"])


def test_generic_adapter_on_a_custom_module():
    from torch import nn

    from backbones import GenericAdapter

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down, self.norm = nn.Linear(16, 32), nn.Linear(32, 16), nn.LayerNorm(16)

        def forward(self, x):
            return x + self.down(torch.relu(self.up(self.norm(x))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.layers, self.out = (
                nn.Linear(5, 16),
                nn.ModuleList(Block() for _ in range(3)),
                nn.Linear(16, 2),
            )

        def forward(self, x):
            x = self.inp(x)
            for layer in self.layers:
                x = layer(x)
            return self.out(x)

    torch.manual_seed(0)
    net = Net().double()
    fm = factorize(net, ranks="full", adapter=GenericAdapter(["layers"]))
    assert fm.layout.groups[0].shape == (12, 16, 16)
    x = torch.randn(4, 5, dtype=torch.float64)
    assert_close_rel(fm(x), net(x), OUTPUT_RTOL[torch.float64])


def test_random_template_with_a_shared_core_gives_every_group_the_backbones_scale():
    # ResNet stages double in width; a shared core scaled for the first alone left stage i at 2**-i.
    from tucker_init.pipeline import ModelSpec

    torch.manual_seed(0)
    model = ModelSpec("resnetd", depth=2, width=16, patch_size=None).build()
    fm = factorize(model, ranks=(4, 8, 8), init="random", seed=0)
    dense = dict(model.named_parameters())
    templated = fm.layout.templated_names()
    ratios = {n: float(v.pow(2).mean().sqrt() / dense[n].pow(2).mean().sqrt()) for n, v in fm.reconstruct().items()}
    ratios = {n: r for n, r in ratios.items() if n in templated}
    assert len(ratios) > 8
    assert all(0.5 < r < 2.0 for r in ratios.values()), ratios
