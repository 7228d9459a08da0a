"""initialize() and the initializer registry: exact at the template's own size, any depth and
width gives a working model, learning lowers its loss, each baseline follows its rule on a
hand-computable case, and every misuse is a clear ValueError."""

from __future__ import annotations

import warnings

import pytest
import torch
from _models import OUTPUT_RTOL, assert_close_rel, perturb, rel_error, tiny_resnet, tiny_vit
from timm.models.resnet import BasicBlock, ResNet
from torch import Tensor, nn

from backbones import GenericAdapter
from tucker_init import InitReport, LearnConfig, WeightTemplate, factorize, initialize, save_template
from tucker_init.resize.axis_maps import depth_map, width_map
from tucker_init.resize.initializers import (
    expand_linear,
    fit_linear_expansion,
    get_initializer,
    list_initializers,
    uniform_indices,
)

IMAGES = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def vit(depth: int, width: int, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return tiny_vit(depth=depth, embed_dim=width, num_heads=width // 64, **kw).eval()


@pytest.fixture(scope="module")
def source_vit() -> nn.Module:
    return perturb(vit(6, 192, seed=3), seed=3)


@pytest.fixture(scope="module")
def tucker_fm(source_vit):
    return factorize(source_vit, ranks=(24, 96, 96)).eval()


@pytest.fixture(scope="module")
def template(tucker_fm) -> WeightTemplate:
    return WeightTemplate.from_model(tucker_fm)


# ------------------------------------------------------------------------------------ rules
def test_depth_and_width_maps():
    sel = depth_map(6, 3, "select")
    assert sel.lo.tolist() == [0, 2, 5] and sel.is_selection  # round(linspace(0, 5, 3)) = 0, 2.5->2, 5
    interp = depth_map(5, 3, "interpolate")  # positions 0, 2, 4
    assert interp.lo.tolist() == [0, 2, 4] and interp.is_selection
    interp = depth_map(3, 5, "interpolate")  # positions 0, .5, 1, 1.5, 2
    assert interp.lo.tolist() == [0, 0, 1, 1, 2] and interp.t.tolist() == [0, 0.5, 0, 0.5, 0]
    assert depth_map(7, 7, "interpolate").is_identity
    grow = width_map(4, 6, "slice")
    assert grow.lo[:4].tolist() == [0, 1, 2, 3] and grow.fresh.tolist() == [False] * 4 + [True] * 2
    x = torch.arange(12.0).reshape(2, 6)
    assert torch.equal(width_map(6, 4, "slice").tile(1).apply(x, 1), x[:, :4])
    # A qkv-like axis of 3 chunks of 6 channels keeps the first 4 of each chunk.
    assert width_map(6, 4, "slice").tile(3).lo.tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15]


# ------------------------------------------------------------------------------- initialize
@pytest.mark.parametrize("as_path", [False, True])
def test_own_size_reproduces_reconstruction(tucker_fm, template, tmp_path, as_path):
    source = save_template(tmp_path / "t.safetensors", template) if as_path else tucker_fm
    target = vit(6, 192, seed=7)
    target, report = initialize(target, source, depth="select", width="slice", return_report=True)
    expected = tucker_fm.materialize()
    assert type(target) is type(expected)
    state = target.state_dict()
    assert state.keys() == expected.state_dict().keys()
    for name, value in expected.state_dict().items():
        assert torch.equal(state[name], value), name
    assert all(type(p) is nn.Parameter for p in target.parameters())
    with torch.no_grad():
        torch.testing.assert_close(target(IMAGES), expected(IMAGES), rtol=0, atol=0)
    assert set(report.counts()) == {"template", "copied"}
    assert report["blocks.0.attn.qkv.weight"] == "template" and report["head.weight"] == "copied"


@pytest.mark.parametrize("depth", [3, 6, 12])
@pytest.mark.parametrize("width", [64, 128, 192, 256])
def test_any_depth_and_width(template, depth, width):
    target = vit(depth, width)
    target, report = initialize(target, template, return_report=True)
    assert all(torch.isfinite(p).all() for p in target.parameters())
    with torch.no_grad():
        out = target(IMAGES)
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    assert report["blocks.0.mlp.fc1.weight"] == "template"
    assert report["head.bias"] == "copied"
    assert report["head.weight"] == ("copied" if width == 192 else "selected")


def test_width_rules_keep_channels_aligned(template):
    src = template.remainder
    sliced = initialize(vit(6, 128), template, depth="select", width="slice")
    # The MLP hidden axis has 4 chunks of d: the first 128 channels of each chunk of 192.
    hidden = torch.cat([torch.arange(k * 192, k * 192 + 128) for k in range(4)])
    assert torch.equal(sliced.blocks[2].mlp.fc1.bias.data, src["blocks.2.mlp.fc1.bias"][hidden])
    assert torch.equal(sliced.norm.weight.data, src["norm.weight"][:128])
    assert torch.equal(sliced.pos_embed.data, src["pos_embed"][..., :128])
    # Wider than the template: the template's channels first, the new ones at the target's init.
    target = vit(6, 256)
    own = target.norm.weight.detach().clone()
    wide = initialize(target, template, depth="select", width="slice")
    assert torch.equal(wide.norm.weight.data[:192], src["norm.weight"])
    assert torch.equal(wide.norm.weight.data[192:], own[192:])
    # Interpolating depth mixes the two neighbouring blocks of block-level vectors.
    deep = initialize(vit(11, 192), template, depth="interpolate")  # block 1 sits at position 0.5
    mixed = 0.5 * (src["blocks.0.norm1.weight"] + src["blocks.1.norm1.weight"])
    assert_close_rel(deep.blocks[1].norm1.weight.data, mixed)
    interp = initialize(vit(6, 128), template, width="interpolate")
    assert all(torch.isfinite(p).all() for p in interp.parameters())


def _ce(model: nn.Module, batch) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(batch[0]), batch[1]))


def test_learn_lowers_the_loss(template):
    batch = (IMAGES, torch.arange(8) % 10)
    before = initialize(vit(3, 64), template)
    config = {"data": [batch], "steps": 15, "lr": 1e-2, "progress": False}
    after, report = initialize(vit(3, 64), template, learn=config, return_report=True)
    assert _ce(after, batch) < _ce(before, batch)
    assert report.losses[-1] < report.losses[0]
    assert type(after).__name__ == "VisionTransformer" and all(type(p) is nn.Parameter for p in after.parameters())
    # Only the scalers moved: the remainder is the same as without learning.
    assert torch.equal(after.head.weight, before.head.weight)
    # A user loss on the model, budget in epochs; depth="learn" trains X only.
    calls = []

    def loss(model, b):
        calls.append(1)
        return model(b[0]).pow(2).mean()

    learn = LearnConfig(data=[batch, batch], epochs=1.5, loss=loss, loss_on="model", progress=False)
    initialize(vit(2, 64), template, depth="learn", learn=learn)
    assert len(calls) == 3


def test_resnet_across_depth():
    torch.manual_seed(0)
    source = perturb(tiny_resnet(layers=(2, 2, 2, 2))).eval()
    fm = factorize(source, ranks="full", share=False)
    for layers in [(3, 4, 6, 3), (1, 1, 1, 1), (2, 2, 2, 2)]:
        torch.manual_seed(1)
        target = tiny_resnet(layers=layers).eval()
        target, report = initialize(target, fm, depth="select", return_report=True)
        with torch.no_grad():
            out = target(IMAGES)
        assert out.shape == (8, 10) and torch.isfinite(out).all()
        assert report["layer3.0.conv1.weight"] == "template"
        if layers == (2, 2, 2, 2):  # lossless template at its own size: the source itself
            with torch.no_grad():
                assert_close_rel(out, source(IMAGES), OUTPUT_RTOL[torch.float32])


# ------------------------------------------------------------------------------- baselines
def test_registry_lists_every_method():
    expected = {
        "random",
        "weight_selection",
        "linear_expansion",
        "kronecker",
        "tucker",
        "tucker_learned",
        "pretrained",
    }
    assert expected <= set(list_initializers())
    with pytest.raises(ValueError, match=r"unknown initializer 'nope'.*weight_selection"):
        get_initializer("nope")


def test_weight_selection_picks_uniform_indices():
    assert uniform_indices(8, 4).tolist() == [0, 2, 4, 6]
    assert uniform_indices(5, 3).tolist() == [0, 2, 4]
    source = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 5), nn.Linear(5, 2))
    with torch.no_grad():
        source[0].weight.copy_(torch.arange(24.0).reshape(4, 6))
        source[0].bias.copy_(torch.arange(4.0))
    target = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 5))  # first N layers = same names
    target, report = get_initializer("weight_selection")(target, source, return_report=True)
    assert target[0].weight.tolist() == [[0, 2, 4], [12, 14, 16]]
    assert target[0].bias.tolist() == [0, 2]
    assert torch.equal(target[1].weight.data, source[1].weight.data[:, [0, 2]])
    assert report["0.weight"] == "selected" and report["1.bias"] == "copied"
    with pytest.raises(ValueError, match=r"at least as large"):
        get_initializer("weight_selection")(nn.Sequential(nn.Linear(8, 2)), source)


def test_linear_expansion_recovers_a_and_b():
    A, B = torch.randn(3, 4), torch.randn(3, 4)
    layers = expand_linear(A, B, 5)
    assert_close_rel(layers[1], A + (2 / 5) * B)
    fitted_a, fitted_b = fit_linear_expansion(layers)
    assert_close_rel(fitted_a, A)
    assert_close_rel(fitted_b, B)
    # On a ViT whose block parameters are exactly A + (l/L) B: the target gets A + (l/L') B.
    source = vit(4, 64)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for rel, p in source.blocks[0].named_parameters():
            a, b = torch.randn(p.shape, generator=g), torch.randn(p.shape, generator=g)
            for layer, block in enumerate(source.blocks, start=1):
                block.get_parameter(rel).copy_(a + (layer / 4) * b)
    target = get_initializer("linear_expansion")(vit(6, 64), source)
    a, b = fit_linear_expansion(torch.stack([blk.attn.proj.weight.detach() for blk in source.blocks]))
    for layer, block in enumerate(target.blocks, start=1):
        assert_close_rel(block.attn.proj.weight.data, a + (layer / 6) * b)


def test_template_baselines_and_pretrained(template, tucker_fm):
    batch = (IMAGES, torch.arange(8) % 10)
    kron = factorize(vit(2, 128), ranks=(16, 8, 8), method="kronecker")
    learn = {"data": [batch], "steps": 2, "progress": False}
    out = get_initializer("kronecker")(vit(3, 64), kron, learn=learn)
    assert torch.isfinite(out(IMAGES)).all()
    assert torch.isfinite(get_initializer("tucker")(vit(3, 64), template, depth="select")(IMAGES)).all()
    assert torch.isfinite(get_initializer("tucker_learned")(vit(2, 64), template, learn=learn)(IMAGES)).all()
    dense = tucker_fm.materialize()
    copied = get_initializer("pretrained")(vit(6, 192, seed=5), dense)
    assert all(torch.equal(copied.state_dict()[k], v) for k, v in dense.state_dict().items())
    a = get_initializer("random")(vit(2, 64), None, seed=4)
    b = get_initializer("random")(vit(2, 64, seed=9), None, seed=4)
    assert torch.equal(a.blocks[0].attn.qkv.weight, b.blocks[0].attn.qkv.weight)
    report = get_initializer("random")(vit(2, 64), None, return_report=True)[1]
    assert isinstance(report, InitReport) and set(report.counts()) == {"target-init"}
    assert "target-init" in str(report)


# ----------------------------------------------------------------------------------- errors
def test_errors(template, tucker_fm):
    with pytest.raises(ValueError, match=r"family 'vit'.*'resnet'"):
        initialize(tiny_resnet(), template)
    with pytest.raises(ValueError, match=r"would split.*head_dim 64"):
        initialize(tiny_vit(depth=2, embed_dim=64, num_heads=2), template)
    with pytest.raises(ValueError, match=r"mlp ratio.*mlp_ratio=4"):
        initialize(vit(2, 64, mlp_ratio=2.0), template)
    kron = factorize(tiny_vit(depth=2, embed_dim=96, num_heads=6), ranks=(4, 32, 32), method="kronecker")
    with pytest.raises(ValueError, match=r"multiple of 32, e.g. \[32, 64"):
        initialize(tiny_vit(depth=2, embed_dim=48, num_heads=3), kron)
    with pytest.raises(ValueError, match=r"interpolate.*not defined for Kronecker"):
        initialize(tiny_vit(depth=2, embed_dim=64, num_heads=4), kron, width="interpolate")
    with pytest.raises(ValueError, match=r"'select' is not defined for Kronecker"):
        initialize(tiny_vit(depth=2, embed_dim=64, num_heads=4), kron, width="select")
    with pytest.raises(
        ValueError,
        match=r"depth must be one of \['select', 'first', 'interpolate', 'identity', 'learn'\], found 'deep'",
    ):
        initialize(vit(2, 64), template, depth="deep")
    with pytest.raises(ValueError, match=r"width must be one of"):
        initialize(vit(2, 64), template, width=3)
    with pytest.raises(ValueError, match=r"'learn' rule needs learn="):
        initialize(vit(2, 64), template, depth="learn")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['step'\]"):
        initialize(vit(2, 64), template, learn={"data": [], "step": 3})
    with pytest.raises(ValueError, match=r"learn takes one budget: steps .* or epochs .*found steps=2, epochs=0.5"):
        LearnConfig(data=[], steps=2, epochs=0.5)
    assert LearnConfig(data=[[0]] * 50).num_steps == 8  # SWEET's default budget: 0.16 epoch
    with pytest.raises(ValueError, match=r"learn.steps must be a positive int, found 0"):
        LearnConfig(data=[], steps=0)
    with pytest.raises(ValueError, match=r"template must be"):
        initialize(vit(2, 64), 42)
    with pytest.raises(ValueError, match=r"tucker_learned.*needs learn"):
        get_initializer("tucker_learned")(vit(2, 64), template)
    with pytest.raises(ValueError, match=r"needs a kronecker template"):
        get_initializer("kronecker")(vit(2, 64), template)
    with pytest.raises(ValueError, match=r"target's size"):
        get_initializer("pretrained")(vit(2, 64), tucker_fm)
    # A ResNet of other proportions (the simple stem is 64 wide whatever the stages are) ...
    resnet = factorize(perturb(tiny_resnet(layers=(2, 2, 2, 2))), ranks="full", share=False)
    narrow = ResNet(BasicBlock, layers=(2, 2, 2, 2), channels=(8, 16, 32, 64), num_classes=10)
    with pytest.raises(ValueError, match=r"does not match template group 'layer1"):
        initialize(narrow, resnet)

    # Groups of different unit widths in one sequence must all scale by one factor.
    def two_widths(a: int, b: int) -> nn.Module:
        return nn.Sequential(nn.Sequential(nn.Linear(a, a), nn.Linear(a, a), nn.Linear(b, b), nn.Linear(b, b)))

    generic = GenericAdapter(["0"])
    mixed = factorize(two_widths(24, 16), ranks="full", share=False, adapter=generic)
    with pytest.raises(ValueError, match=r"scale every group by one factor f with f \* 8 an integer.*\(24, 12\)"):
        initialize(two_widths(12, 16), mixed, adapter=generic)
    # ... and a Kronecker template cannot change the width of a ResNet (groups of different unit widths).
    kron = factorize(_deep_stem((16, 32, 64, 128), 8), ranks=(8, 8, 8), method="kronecker", share=False)
    with pytest.raises(ValueError, match=r"width changes of Kronecker templates need one unit width"):
        initialize(_deep_stem((8, 16, 32, 64), 4), kron)


def _deep_stem(channels, stem) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), channels=channels, stem_width=stem, stem_type="deep", num_classes=10)


@pytest.mark.parametrize("channels, stem", [((8, 16, 32, 64), 4), ((24, 48, 96, 192), 12)])
def test_resnet_width_change_keeps_channels_aligned(channels, stem):
    # A stage's first block has unit width gcd(in, out) = 16 for 16 -> 32 channels, the rest 32: every
    # group maps each 16-channel unit alike (first 8 of every 16 at half width; 16 of every 24 plus 8
    # fresh at 1.5x), so a lossless template gives the source's weights on those channels in every layer.
    torch.manual_seed(0)
    source = perturb(_deep_stem((16, 32, 64, 128), 8)).eval()
    fm = factorize(source, ranks="full", share=False)
    torch.manual_seed(1)
    target, report = initialize(_deep_stem(channels, stem), fm, width="slice", return_report=True)
    src = source.state_dict()

    def positions(n: int, n_new: int) -> tuple[Tensor, Tensor]:
        """Source channels of each 16-unit kept, and where they land in the target."""
        if n < 16:  # the deep stem's 8 channels scale by the same factor
            kept = torch.arange(min(n, n_new))
            return kept, kept
        unit_new = n_new // (n // 16)
        kept = torch.arange(min(16, unit_new))
        return (
            torch.cat([k * 16 + kept for k in range(n // 16)]),
            torch.cat([k * unit_new + kept for k in range(n // 16)]),
        )

    assert "target-init" not in report.counts()
    for name, value in target.state_dict().items():
        if name not in report:  # num_batches_tracked
            continue
        expected = src[name]
        for dim, (n, n_new) in enumerate(zip(expected.shape, value.shape, strict=True)):
            if n != n_new:
                from_src, to_tgt = positions(n, n_new)
                expected, value = expected.index_select(dim, from_src), value.index_select(dim, to_tgt)
        assert_close_rel(value, expected, msg=name)
    assert report["layer3.0.conv1.weight"] == "template" and report["fc.weight"] == "selected"
    assert report["conv1.3.weight"] == "selected"
    with torch.no_grad():
        assert torch.isfinite(target(IMAGES)).all()
    interpolated = initialize(_deep_stem(channels, stem), fm, width="interpolate")
    zeroed = initialize(_deep_stem(channels, stem), fm, width="zero_fanout").eval()
    with torch.no_grad():  # eval: the running statistics of new channels are used (and must stay valid)
        assert torch.isfinite(interpolated(IMAGES)).all() and torch.isfinite(zeroed(IMAGES)).all()
    for name, var in zeroed.state_dict().items():  # new channels' running statistics: the target's own (var 1)
        if name.endswith("running_var"):
            assert int((var == 1).sum()) >= var.numel() - src[name].numel(), name
    # The head reads none of the channels zero_fanout adds: one zero column per new channel.
    new_columns = zeroed.fc.weight.shape[1] - src["fc.weight"].shape[1]
    assert int((zeroed.fc.weight == 0).all(dim=0).sum()) == max(new_columns, 0)


def test_other_image_and_patch_size_resamples_embeddings(template):
    from timm.layers import resample_abs_pos_embed, resample_patch_embed

    src = template.remainder
    # 64 px at patch 8: an 8x8 grid instead of the template's 4x4; width sliced to 128 as well.
    bigger, report = initialize(vit(6, 128, img_size=64), template, return_report=True)
    expected = resample_abs_pos_embed(src["pos_embed"], new_size=[8, 8], old_size=[4, 4], num_prefix_tokens=1)
    assert_close_rel(bigger.pos_embed.data, expected[..., :128])
    assert report["pos_embed"] == "interpolated"
    # Patch 4 at 32 px: the 8x8 patch kernel resampled to 4x4 (FlexiViT), the grid to 8x8.
    finer, report = initialize(vit(6, 192, patch_size=4), template, return_report=True)
    assert_close_rel(finer.patch_embed.proj.weight.data, resample_patch_embed(src["patch_embed.proj.weight"], [4, 4]))
    assert report["patch_embed.proj.weight"] == "interpolated"
    assert report["patch_embed.proj.bias"] == "copied"
    with torch.no_grad():
        for model, size in ((bigger, 64), (finer, 32)):
            out = model(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)))
            assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_lossless_template_widens_by_interpolating_every_channel_axis():
    # width="interpolate" on a wider target: each weight is the source's, interpolated along each
    # channel axis chunk by chunk (q / k / v, the MLP's four), W' = P W P^T: no random channels.
    source = perturb(vit(2, 64), seed=5)
    wide = initialize(vit(2, 128, seed=3), factorize(source, ranks="full"), depth="first", width="interpolate")
    own, new = dict(source.named_parameters()), dict(wide.named_parameters())
    grow = width_map(64, 128, "interpolate")
    for name in ("blocks.1.attn.qkv.weight", "blocks.1.attn.proj.weight", "blocks.0.mlp.fc1.weight"):
        w = own[name].detach()
        expected = grow.tile(w.shape[0] // 64).apply(grow.tile(w.shape[1] // 64).apply(w, 1), 0)
        assert_close_rel(new[name], expected, msg=name)
    assert_close_rel(new["norm.weight"], grow.apply(own["norm.weight"].detach(), 0))


@pytest.mark.parametrize("kind", ["tucker", "kronecker"])
def test_zero_fanout_adds_channels_nothing_reads(kind):
    # width="zero_fanout" on a wider target: every source weight kept in its place, the weights
    # that write the new channels random, and every weight that reads one (qkv, proj, fc1, fc2,
    # head columns) zero; under "slice" the readers are random instead.
    source = perturb(vit(2, 128), seed=6)
    ranks = "full" if kind == "tucker" else (64, 8, 8)  # a Kronecker template of 8x8 blocks is lossless at k=64
    template = factorize(source, ranks=ranks, method=kind)
    wide = initialize(vit(2, 192, seed=3), template, depth="first", width="zero_fanout")
    sliced = initialize(vit(2, 192, seed=3), template, depth="first", width="slice")
    own, new, rnd = dict(source.named_parameters()), dict(wide.named_parameters()), dict(sliced.named_parameters())
    chunks = {"attn.qkv": (3, 1), "attn.proj": (1, 1), "mlp.fc1": (4, 1), "mlp.fc2": (1, 4)}
    for layer, (out_chunks, in_chunks) in chunks.items():
        name = f"blocks.1.{layer}.weight"
        w = new[name].detach().reshape(out_chunks, 192, in_chunks, 192)
        kept = own[name].detach().reshape(out_chunks, 128, in_chunks, 128)
        assert_close_rel(w[:, :128, :, :128], kept, scale=kept.abs().max(), rtol=1e-5, msg=name)
        assert (w[..., 128:] == 0).all(), f"{name} reads a new channel"
        new_rows = w[:, 128:, :, :128]
        assert_close_rel(new_rows.std(), kept.std(), rtol=0.2, msg=f"{name}: new rows at the trained rows' scale")
        assert rnd[name].detach().reshape(out_chunks, 192, in_chunks, 192)[..., 128:].abs().max() > 0
    # The new channels are features of their own: under "slice" a Tucker template's new rows are one
    # fixed mixture of the trained rows in every layer (M @ proj_0 predicts them in proj_1 too, up to
    # float32 round-off through the solve: 6e-6 seen).
    for model, own_features in ((wide, True), (sliced, False)):
        if kind == "kronecker" and not own_features:
            continue
        p0, p1 = (model.state_dict()[f"blocks.{i}.attn.proj.weight"].double() for i in (0, 1))
        mix = torch.linalg.solve(p0[:128, :128].T, p0[128:, :128].T).T  # new rows of block 0 = mix @ trained rows
        miss = (mix @ p1[:128, :128] - p1[128:, :128]).norm() / p1[128:, :128].norm()
        assert (miss > 0.5) if own_features else (miss < 1e-3), f"{kind}: {miss:.3g}"
    # The remainder's new channels have the trained ones' statistics (under slice: the target's own init).
    for name in ("pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.weight"):
        trained, fresh = (
            own[name].detach(),
            new[name].detach().movedim(-1 if name != "patch_embed.proj.weight" else 0, 0)[128:],
        )
        assert_close_rel(fresh.std(), trained.std(), rtol=0.25, msg=name)
        assert_close_rel(fresh.mean(), trained.mean(), rtol=0.1, scale=trained.std() + trained.mean().abs(), msg=name)
    head = new["head.weight"].detach()
    assert (head[:, 128:] == 0).all() and rnd["head.weight"].detach()[:, 128:].abs().max() > 0
    assert_close_rel(head[:, :128], own["head.weight"].detach())
    out = wide(IMAGES)
    assert out.shape == (8, 10) and torch.isfinite(out).all()


def test_depth_rule_first_keeps_the_first_layers():
    source = vit(4, 64)
    template = factorize(source, ranks="full")
    target, report = initialize(vit(2, 64, seed=3), template, depth="first", return_report=True)
    own = dict(source.named_parameters())
    for name, value in target.named_parameters():
        if name.startswith("blocks."):  # block i of the target is block i of the source
            assert_close_rel(value, own[name], msg=name)
    assert report["blocks.1.norm1.weight"] == "copied"
    # At the source's width a lossless template with depth 'first' is weight selection, tensor for tensor.
    selected = dict(get_initializer("weight_selection")(vit(2, 64, seed=4), source).named_parameters())
    for name, value in target.named_parameters():
        assert_close_rel(value, selected[name], msg=name)
    assert depth_map(4, 2, "first").lo.tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"depth='first' keeps the first 6 of the template's 4 layers"):
        initialize(vit(6, 64), template, depth="first")


def test_depth_identity_spreads_the_layers_and_marks_the_new_ones():
    deeper = depth_map(6, 12, "identity")  # source layer i at 2i, a new layer after each
    assert deeper.fresh.tolist() == [False, True] * 6 and deeper.lo.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    odd = depth_map(6, 8, "identity")  # positions i * 8 // 6 = 0, 1, 2, 4, 5, 6
    assert odd.fresh.nonzero().flatten().tolist() == [3, 7] and odd.lo.tolist() == [0, 1, 2, 2, 3, 4, 5, 5]
    assert depth_map(6, 4, "identity").lo.tolist() == [0, 1, 2, 3] and not depth_map(6, 4, "identity").has_fresh


# (family, source model, deeper target): a ViT (writers attn.proj and mlp.fc2) and a ResNet-D (the
# last BN of a basic block; stages 2-4 grow from 2 blocks to 3, the first block a group of its own).
IDENTITY_CASES = {"vit": ((2, 128), (5, 128)), "resnetd": ((2, 32), (3, 32))}


@pytest.mark.parametrize("family", sorted(IDENTITY_CASES))
def test_depth_identity_adds_blocks_that_compute_the_identity(family):
    # A deeper target from a lossless template under depth 'identity' computes the source's function;
    # the new blocks are not copies of trained ones (their other weights drawn at the trained scale).
    from tucker_init import create_model
    from tucker_init.pipeline import lossless_template

    def build(depth: int, width: int, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = vit(depth, width, seed=seed) if family == "vit" else create_model(family, depth=depth, width=width)
        return model.eval()

    (small, large) = IDENTITY_CASES[family]
    source = perturb(build(*small, seed=7), seed=7)
    own_init = build(*large, seed=3).state_dict()
    target, report = initialize(build(*large, seed=3), lossless_template(source), depth="identity", return_report=True)
    images = IMAGES
    with torch.no_grad():
        expected = source(images)
        assert_close_rel(target(images), expected, rtol=OUTPUT_RTOL[torch.float32], msg="identity blocks")
        interpolated = initialize(build(*large, seed=3), lossless_template(source), depth="interpolate")
        assert rel_error(interpolated(images), expected) > 1e-2  # blends of trained blocks change the function
    own, new = source.state_dict(), target.state_dict()
    if family == "vit":  # source block 1 at 5 // 2 = 2; blocks 1, 3 and 4 are new
        kept, fresh, before, writers = "blocks.2", "blocks.1", "blocks.0", ("attn.proj", "mlp.fc2")
        assert_close_rel(new["blocks.2.attn.qkv.weight"], own["blocks.1.attn.qkv.weight"])
        inner = ("attn.qkv.weight", "mlp.fc1.weight", "norm1.weight")
    else:  # layer2: blocks 0 (its own group) and 1 kept, block 2 new
        kept, fresh, before, writers = "layer2.1", "layer2.2", "layer2.1", ("bn2",)
        inner = ("conv1.weight", "bn1.weight")
        running_var = new["layer2.2.bn1.running_var"]  # buffers keep the target's init
        assert torch.equal(running_var, torch.ones_like(running_var))
    assert report[f"{kept}.{inner[0]}"] in ("template", "copied", "selected")
    for name in new:
        if name.startswith(fresh + ".") and new[name].is_floating_point():
            assert report[name] == "new-block", name
            if "running" in name:  # buffers, the writer's BN included, keep the target's init
                assert torch.equal(new[name], own_init[name]), name
            elif any(name.startswith(f"{fresh}.{w}.") for w in writers):
                assert (new[name] == 0).all(), f"{name}: a residual writer of a new block is zero"
    for rel in inner:
        drawn, trained = new[f"{fresh}.{rel}"], new[f"{before}.{rel}"]
        assert rel_error(drawn, trained) > 0.5, f"{rel}: drawn, not copied"
        assert_close_rel(drawn.std(), trained.std(), rtol=0.3, scale=trained.std() + 1e-3, msg=rel)
        assert_close_rel(drawn.mean(), trained.mean(), rtol=0.3, scale=trained.std() + trained.mean().abs(), msg=rel)
    # Training reaches the new blocks: their writers get gradients at once.
    target.train()
    target(images).square().mean().backward()
    writer = dict(target.named_parameters())[f"{fresh}.{writers[0]}.weight"]
    assert writer.grad is not None and writer.grad.abs().max() > 0


def test_depth_identity_needs_the_adapters_residual_writers():
    # A generic adapter does not know which submodules write a block's residual stream.
    source = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4)))
    adapter = GenericAdapter(block_containers=["1"])
    template = factorize(source, ranks="full", adapter=adapter)
    deeper = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)))
    with pytest.raises(ValueError, match=r"depth='identity' adds block '1.1'.*residual_writers.*'interpolate'"):
        initialize(deeper, template, depth="identity", adapter=adapter)
    initialize(deeper, template, depth="interpolate", adapter=adapter)
    learn = LearnConfig(data=[(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))], steps=1)
    with pytest.raises(ValueError, match=r"depth='identity' starts new blocks as the identity, which learned"):
        initialize(deeper, template, depth="identity", learn=learn, adapter=adapter)


# (family, source size, narrower target, wider target): a timm ViT, a ResNet-D, and a Swin, whose
# per-head relative position bias tables are selected over heads, as weight selection does.
SELECT_CASES = {
    "vit": ((2, 128), (1, 64), (1, 192)),
    "resnetd": ((2, 32), (1, 16), (1, 64)),
    "swin": ((2, 64), (1, 32), (1, 128)),
}


@pytest.mark.parametrize("family", sorted(SELECT_CASES))
def test_width_select_on_a_lossless_template_is_weight_selection_at_every_narrower_size(family):
    # depth 'first' + width 'select' are weight selection's two rules: at an integer width ratio the
    # lossless template builds its model tensor for tensor (embeddings, norms, stem and head included).
    from tucker_init import create_model
    from tucker_init.pipeline import lossless_template

    def build(depth: int, width: int) -> nn.Module:
        torch.manual_seed(2)
        return vit(depth, width, seed=2) if family == "vit" else create_model(family, depth=depth, width=width)

    source_size, narrower, wider = SELECT_CASES[family]
    source = perturb(build(*source_size), seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every tensor is mapped: nothing left at the target's init
        built = initialize(build(*narrower), lossless_template(source), depth="first", width="select")
    expected = get_initializer("weight_selection")(build(*narrower), source).state_dict()
    for name, value in built.state_dict().items():
        if value.is_floating_point():
            assert_close_rel(value, expected[name], msg=name)
    with pytest.raises(ValueError, match=r"width='select' keeps .* so the target must not be wider"):
        initialize(build(*wider), lossless_template(source), width="select")


def test_a_resnets_lossless_template_holds_every_stage_and_selects_like_weight_selection():
    # One shared core cannot hold a ResNet's stages (their mode sizes differ); a core per group can.
    from tucker_init import create_model
    from tucker_init.pipeline import lossless_template

    torch.manual_seed(0)
    source = perturb(create_model("resnetd", depth=2, width=32), seed=6)
    with pytest.raises(ValueError, match=r"ranks='full' needs one template per group \(share=False\)"):
        factorize(source, ranks="full")
    held = lossless_template(source)
    assert_close_rel(held.materialize().layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    torch.manual_seed(1)
    shallower = initialize(create_model("resnetd", depth=1, width=32), held, depth="first")
    torch.manual_seed(1)
    selected = get_initializer("weight_selection")(create_model("resnetd", depth=1, width=32), source)
    expected = selected.state_dict()
    for name, value in shallower.state_dict().items():
        if value.is_floating_point():  # BN's step counters are integers
            assert_close_rel(value, expected[name], msg=name)
