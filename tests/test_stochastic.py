"""Width-wise stochastic scaling: prefix masks zero exactly the rows beyond d', rank dropout
rescales the kept columns, masks are reproducible from (seed, step, group), and the hook is
the identity in eval mode or when switched off."""

from __future__ import annotations

import pytest
import torch
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer

from tucker_init import factorize
from tucker_init.objectives.stochastic import WidthScaling


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)


@pytest.fixture(scope="module")
def fm_vit():
    return factorize(tiny_vit(), ranks=(8, 32, 24))


def scalers(d: int = 64, r2: int = 32, r3: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "X": torch.randn(24, 8, generator=g),
        "U": torch.randn(d, r2, generator=g),
        "V": torch.randn(d, r3, generator=g),
    }


def narrow_step(hook: WidthScaling, d: int, group: int = 0) -> int:
    """The first step whose prefix mask keeps fewer than d rows of group ``group``."""
    for step in range(100):
        hook.set_step(step)
        if hook.sample_width(group, d) < d:
            return step
    raise AssertionError("no narrowing step in 100")


def kept_rows(t: torch.Tensor) -> int:
    nonzero = (t != 0).any(dim=1)
    return int(nonzero.sum())


@pytest.mark.parametrize("multiple", [1, 8, 16])
def test_prefix_masks_zero_exactly_the_rows_beyond_d_prime(multiple):
    hook = WidthScaling("prefix", multiple=multiple, min_fraction=0.25, seed=3)
    s = scalers()
    widths = set()
    for step in range(30):
        hook.set_step(step)
        out = hook(0, s)
        d_prime = hook.sample_width(0, 64)
        widths.add(d_prime)
        assert d_prime % multiple == 0 and 16 <= d_prime <= 64
        for key in ("U", "V"):
            assert torch.equal(out[key][:d_prime], s[key][:d_prime])
            assert torch.all(out[key][d_prime:] == 0)
        assert kept_rows(out["U"]) == kept_rows(out["V"]) == d_prime  # one width for U and V
        assert out["X"] is s["X"]  # depth scalers untouched
    assert len(widths) > 1


def test_rank_mode_drops_columns_and_rescales():
    p = 0.5
    hook = WidthScaling("rank", p=p, seed=1)
    s = scalers()
    dropped = 0
    for step in range(10):
        hook.set_step(step)
        out = hook(0, s)
        for key in ("U", "V"):
            kept = (out[key] != 0).any(dim=0)
            assert kept.any()
            torch.testing.assert_close(out[key][:, kept], s[key][:, kept] / (1 - p), atol=0, rtol=0)
            assert torch.all(out[key][:, ~kept] == 0)
            dropped += int((~kept).sum())
        torch.testing.assert_close(out["X"], s["X"], atol=0, rtol=0)
    # 10 steps x 56 columns at p = 0.5: the drop rate is near p.
    assert 0.35 < dropped / (10 * 56) < 0.65


def test_rank_mode_keeps_at_least_one_column():
    hook = WidthScaling("rank", p=0.99, seed=0)
    s = scalers(r2=2, r3=2)
    for step in range(20):
        hook.set_step(step)
        out = hook(0, s)
        assert (out["U"] != 0).any(dim=0).sum() >= 1 and (out["V"] != 0).any(dim=0).sum() >= 1


@pytest.mark.parametrize("mode", ["prefix", "rank"])
def test_masks_are_reproducible_from_seed_step_and_group(mode):
    a, b = WidthScaling(mode, multiple=1, seed=7), WidthScaling(mode, multiple=1, seed=7)
    s = scalers()
    a.set_step(4)
    b.set_step(4)
    torch.testing.assert_close(a(0, s)["U"], b(0, s)["U"], atol=0, rtol=0)
    torch.testing.assert_close(a(1, s)["V"], b(1, s)["V"], atol=0, rtol=0)
    # The global RNG plays no part.
    torch.manual_seed(123)
    torch.testing.assert_close(a(0, s)["U"], b(0, s)["U"], atol=0, rtol=0)

    def masks_over(hook, steps, group=0):
        out = []
        for step in steps:
            hook.set_step(step)
            out.append(hook(group, s)["U"])
        return out

    reference = masks_over(a, range(5))
    assert any(not torch.equal(reference[0], m) for m in reference[1:])  # other step, other mask
    assert any(not torch.equal(x, y) for x, y in zip(reference, masks_over(a, range(5), group=1), strict=True))
    other_seed = WidthScaling(mode, multiple=1, seed=8)
    assert any(not torch.equal(x, y) for x, y in zip(reference, masks_over(other_seed, range(5)), strict=True))


def test_eval_mode_and_off_are_the_identity(fm_vit):
    s = scalers()
    hook = WidthScaling("prefix").attach(fm_vit)
    fm_vit.eval()
    try:
        assert not hook.active
        out = hook(0, s)
        assert all(out[k] is s[k] for k in s)
        fm_vit.train()
        hook.set_step(narrow_step(hook, 64))
        assert hook.active and not torch.equal(hook(0, s)["U"], s["U"])
    finally:
        fm_vit.scaler_hook = None
    off = WidthScaling("off")
    out = off(0, s)
    assert all(out[k] is s[k] for k in s)


def test_attach_takes_the_head_dim_as_multiple(fm_vit):
    try:
        hook = WidthScaling("prefix").attach(fm_vit)
        assert fm_vit.scaler_hook is hook and hook.multiple == 16  # 64 / 4 heads
        assert WidthScaling("prefix", multiple=8).attach(fm_vit).multiple == 8
        with pytest.raises(
            ValueError, match="multiple must divide the width d=64 of group 'blocks\\[0:2\\]', found 24"
        ):
            WidthScaling("prefix", multiple=24).attach(fm_vit)
    finally:
        fm_vit.scaler_hook = None


def test_factorized_vit_forward_with_prefix_hook(fm_vit):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    hook = WidthScaling("prefix", multiple=16, min_fraction=0.25, seed=0).attach(fm_vit)
    try:
        fm_vit.train()
        hook.set_step(narrow_step(hook, 64))
        d_prime = hook.sample_width(0, 64)
        logits = fm_vit(x)
        assert logits.shape == (2, 10) and torch.isfinite(logits).all()
        T = fm_vit.group_tensor(0)  # (S*L, d, d)
        assert torch.all(T[:, d_prime:, :] == 0) and torch.all(T[:, :, d_prime:] == 0)
        assert T[:, :d_prime, :d_prime].abs().sum() > 0
        weights = fm_vit.reconstruct()
        qkv = weights["blocks.0.attn.qkv.weight"].reshape(3, 64, 64)  # q, k, v chunks of width d
        assert torch.all(qkv[:, d_prime:] == 0) and torch.all(qkv[:, :, d_prime:] == 0)

        # Masked rows of U get no gradient; kept rows do.
        fm_vit.zero_grad()
        logits.square().mean().backward()
        U = fm_vit.scalers["g0"]["U"]
        assert torch.all(U.grad[d_prime:] == 0) and U.grad[:d_prime].abs().sum() > 0

        fm_vit.eval()  # eval: the full-width weights again
        assert T.shape == fm_vit.group_tensor(0).shape
        assert fm_vit.group_tensor(0)[:, d_prime:].abs().sum() > 0
    finally:
        fm_vit.scaler_hook = None
        fm_vit.zero_grad()


def test_resnet_groups_get_their_own_widths():
    torch.manual_seed(0)
    resnet = ResNet(BasicBlock, layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16, num_classes=10)
    fm = factorize(resnet, ranks=(4, 8, 8))
    hook = WidthScaling("prefix", min_fraction=0.5, seed=2).attach(fm)
    assert hook.multiple == 1
    fm.train()
    out = fm(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(out).all()
    for i, group in enumerate(fm.layout.groups):
        d_prime = hook.sample_width(i, group.width)
        assert group.width // 2 <= d_prime <= group.width
        assert torch.all(fm.group_tensor(i)[:, d_prime:] == 0)


def test_state_dict_roundtrip():
    hook = WidthScaling("rank", p=0.3, seed=5, multiple=4)
    hook.set_step(11)
    state = hook.state_dict()
    assert state == {"mode": "rank", "p": 0.3, "min_fraction": 0.25, "multiple": 4, "seed": 5, "step": 11}
    other = WidthScaling()
    other.load_state_dict(state)
    s = scalers()
    torch.testing.assert_close(other(0, s)["U"], hook(0, s)["U"], atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"missing \['step'\]"):
        other.load_state_dict({k: v for k, v in state.items() if k != "step"})
    with pytest.raises(ValueError, match="mode must be one of"):
        other.load_state_dict(state | {"mode": "random"})


def test_errors():
    with pytest.raises(ValueError, match=r"mode must be one of \['prefix', 'rank', 'off'\], found 'width'"):
        WidthScaling("width")
    with pytest.raises(ValueError, match=r"p must be a float in \[0, 1\), found 1.0"):
        WidthScaling("rank", p=1.0)
    with pytest.raises(ValueError, match=r"min_fraction must be a float in \(0, 1\], found 0"):
        WidthScaling(min_fraction=0)
    with pytest.raises(ValueError, match="multiple must be a positive int or None, found 0"):
        WidthScaling(multiple=0)
    with pytest.raises(ValueError, match="step must be a non-negative int, found -1"):
        WidthScaling().set_step(-1)
    kron = factorize(tiny_vit(), ranks=(4, 4, 4), method="kronecker")
    with pytest.raises(ValueError, match="stochastic scaling applies to Tucker templates"):
        WidthScaling().attach(kron)
    with pytest.raises(ValueError, match="expected scalers 'U' and 'V', found \\['S'\\]"):
        WidthScaling()(0, {"S": torch.zeros(2, 2)})
    with pytest.raises(TypeError, match="attach expects a FactorizedModel"):
        WidthScaling().attach(tiny_vit())


def test_materialize_ignores_the_training_mask():
    from _models import build

    from tucker_init import factorize
    from tucker_init.objectives.stochastic import WidthScaling

    fm = factorize(build("vit"), ranks="full")
    expected = fm.eval().materialize().state_dict()
    WidthScaling("prefix", min_fraction=0.25, seed=0).attach(fm)
    fm.train()
    found = fm.materialize().state_dict()
    for key, value in expected.items():
        assert torch.equal(found[key], value), key
