"""initialize() on Swin, Eva (EVA-02, RoPE ViTs) and BEiT targets of other depths and widths.

A full-rank Tucker template is lossless, so under ``width="slice"`` a narrower target must be the
source's sub-network exactly: each stage keeps its first channels (per chunk of the unit width
d) and, in the relative position tables and learned RoPE frequencies, the heads those channels
hold; a Swin patch merging keeps the previous stage's channels in each of its 4 spatial copies.
A shallower target under ``depth="select"`` is made of the selected source blocks. The report
must name every tensor, with ``target-init`` only for the buffers that timm derives from the
geometry (attention masks, RoPE tables, zero k-biases), and no tensor may be left out with a
warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pytest
import timm
import torch
from _models import OUTPUT_RTOL, assert_close_rel, perturb
from torch import Tensor, nn

from backbones import get_adapter
from tucker_init import InitReport, factorize, initialize, plan_resize, target_weights

SWIN = "swin_tiny_patch4_window7_224"
SWIN_KW = {"img_size": 32, "window_size": 4, "num_classes": 10}


def build(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return perturb(timm.create_model(name, pretrained=False, **kwargs), seed).eval()


def swin(embed_dim: int = 32, depths=(2, 2, 2), heads=(2, 4, 8), **kw) -> nn.Module:
    return build(SWIN, embed_dim=embed_dim, depths=depths, num_heads=heads, **(SWIN_KW | kw))


def kept(n: int, chunk: int, chunk_new: int) -> Tensor:
    """Indices that ``slice`` keeps on an axis of ``n // chunk`` chunks: the first ``chunk_new`` of each."""
    return (torch.arange(n // chunk)[:, None] * chunk + torch.arange(chunk_new)).flatten()


def sub(value: Tensor, *index: Tensor | None) -> Tensor:
    """``value`` restricted to ``index[k]`` along axis k (``None``: the whole axis)."""
    for dim, idx in enumerate(index):
        if idx is not None:
            value = value.index_select(dim, idx)
    return value


def init(target: nn.Module, source: nn.Module, share: bool, **kw) -> InitReport:
    """``initialize(target, full-rank template of source)``, failing on any warning."""
    fm = factorize(source, ranks="full", share=share)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a remainder tensor left at the target's init warns
        _, report = initialize(target, fm, return_report=True, **kw)
    return report


def assert_only_derived_at_init(report: InitReport, target: nn.Module) -> None:
    """Every state tensor reported, ``target-init`` exactly for the derived buffers."""
    adapter = get_adapter(target)
    state = [k for k, _ in target.named_parameters()] + [k for k, v in target.named_buffers() if v.is_floating_point()]
    assert set(report) == set(state)
    derived = {k for k in state if adapter.is_derived(target, k)}
    assert set(report.names("target-init")) == derived


def assert_runs(model: nn.Module, size: int) -> None:
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------- Swin
def test_swin_narrower_is_the_sources_subnetwork():
    source = swin(embed_dim=32, heads=(2, 4, 8))  # head_dim 16 in every stage, widths 32, 64, 128
    target = swin(embed_dim=16, heads=(1, 2, 4), seed=1)  # the same heads of 16, half of them
    report = init(target, source, share=False, width="slice")
    assert_only_derived_at_init(report, target)
    assert set(report.names("target-init")) == {"layers.0.blocks.1.attn_mask"}  # shifted windows of stage 0
    src, tgt = source.state_dict(), target.state_dict()
    widths, widths_new = (32, 64, 128), (16, 32, 64)
    for i, (c, c_new) in enumerate(zip(widths, widths_new, strict=True)):
        rows = kept(c, c, c_new)
        for j in range(2):
            block = f"layers.{i}.blocks.{j}"
            # The bias table keeps the window and the first heads (the channels slice keeps).
            table = f"{block}.attn.relative_position_bias_table"
            assert report[table] == "selected"
            assert_close_rel(tgt[table], sub(src[table], None, torch.arange(c_new // 16)), msg=table)
            qkv = f"{block}.attn.qkv.weight"  # q, k, v each keep their first c_new channels
            assert_close_rel(tgt[qkv], sub(src[qkv], kept(3 * c, c, c_new), rows), msg=qkv)
            assert_close_rel(tgt[f"{block}.norm1.weight"], src[f"{block}.norm1.weight"][rows])
        if i:  # patch merging: 4 spatial copies of the previous stage's channels in, this stage's out
            before = kept(4 * widths[i - 1], widths[i - 1], widths_new[i - 1])
            merge = f"layers.{i}.downsample"
            assert_close_rel(tgt[f"{merge}.reduction.weight"], sub(src[f"{merge}.reduction.weight"], rows, before))
            assert_close_rel(tgt[f"{merge}.norm.weight"], src[f"{merge}.norm.weight"][before])
    assert_close_rel(tgt["patch_embed.proj.weight"], src["patch_embed.proj.weight"][:16])
    assert_close_rel(tgt["head.fc.weight"], src["head.fc.weight"][:, :64])
    assert_runs(target, 32)


def test_swin_shallower_selects_source_blocks_per_stage():
    source = swin(depths=(3, 3, 2))
    target = swin(depths=(2, 2, 1), seed=1)
    report = init(target, source, share=False, depth="select")
    assert_only_derived_at_init(report, target)
    src, tgt = source.state_dict(), target.state_dict()
    picks = {0: [0, 2], 1: [0, 2], 2: [0]}  # round(linspace(0, L-1, L')) per stage
    for i, blocks in picks.items():
        for j, k in enumerate(blocks):
            for rel in ("attn.relative_position_bias_table", "attn.qkv.weight", "mlp.fc2.bias", "norm2.weight"):
                a, b = f"layers.{i}.blocks.{j}.{rel}", f"layers.{i}.blocks.{k}.{rel}"
                assert_close_rel(tgt[a], src[b], msg=f"{a} from {b}")
    # Shifts alternate by position in the stage (stage 0 only: the others fit in one window), so
    # target block 1 is shifted where its source block 2 is not, and keeps its own mask.
    assert source.layers[0].blocks[2].attn_mask is None and target.layers[0].blocks[1].attn_mask is not None
    assert report["layers.0.blocks.1.attn_mask"] == "target-init"
    assert_runs(target, 32)


def test_swin_other_window_resamples_the_bias_tables():
    source = swin()
    target = swin(window_size=2, seed=1)  # tables of (2*2-1)^2 = 9 positions instead of 49
    report = init(target, source, share=False)
    assert_only_derived_at_init(report, target)
    assert report["layers.0.blocks.0.attn.relative_position_bias_table"] == "interpolated"
    assert target.layers[0].blocks[0].attn.relative_position_bias_table.shape == (9, 2)
    assert_runs(target, 32)


def test_swin_refuses_split_heads_and_other_stage_counts():
    source = swin()
    fm = factorize(source, ranks="full", share=False)
    with pytest.raises(ValueError, match=r"stage 0: the target's heads \(head_dim 8"):
        initialize(swin(embed_dim=16, heads=(2, 4, 8)), fm)
    with pytest.raises(ValueError, match="the target has 2 stages, the template 3"):
        initialize(swin(depths=(2, 2), heads=(2, 4)), fm)


# -------------------------------------------------------------------------------------- Eva
def eva02(embed_dim: int, heads: int, depth: int, seed: int = 0, **kw) -> nn.Module:
    kw = {"img_size": 28, "num_classes": 10} | kw
    return build("eva02_tiny_patch14_224", seed, embed_dim=embed_dim, num_heads=heads, depth=depth, **kw)


def rope_mixed(embed_dim: int, heads: int, depth: int, seed: int = 0) -> nn.Module:
    kw = {"img_size": 32, "patch_size": 8, "num_classes": 10}
    return build("vit_small_patch16_rope_mixed_224", seed, embed_dim=embed_dim, num_heads=heads, depth=depth, **kw)


def test_eva02_narrower_and_shallower_is_the_sources_subnetwork():
    # A packed SwiGLU (fc1 = value and gate, 2 x 256 rows) at mlp ratio 2: d = 128 -> 64.
    source = eva02(128, 4, depth=3, mlp_ratio=2.0)
    target = eva02(64, 2, depth=2, seed=1, mlp_ratio=2.0)
    report = init(target, source, share=True, depth="select", width="slice")
    assert_only_derived_at_init(report, target)
    assert {"rope.pos_embed", "blocks.0.attn.k_bias"} <= set(report.names("target-init"))
    src, tgt = source.state_dict(), target.state_dict()
    rows, hidden = torch.arange(64), kept(512, 128, 64)  # both halves keep the same hidden units
    for j, k in enumerate([0, 2]):  # round(linspace(0, 2, 2))
        a, b = f"blocks.{j}", f"blocks.{k}"
        assert_close_rel(tgt[f"{a}.mlp.fc1.weight"], sub(src[f"{b}.mlp.fc1.weight"], hidden, rows))
        assert_close_rel(tgt[f"{a}.mlp.fc2.weight"], sub(src[f"{b}.mlp.fc2.weight"], rows, kept(256, 128, 64)))
        assert_close_rel(tgt[f"{a}.attn.q_bias"], src[f"{b}.attn.q_bias"][rows])
    assert_close_rel(tgt["pos_embed"], src["pos_embed"][..., :64])
    assert_runs(target, 28)


def test_eva02_mlp_ratio_8_3_keeps_whole_heads_of_each_chunk():
    # EVA-02's own proportions (mlp hidden 8D/3): d = gcd(384, 1024) = 128 holds 2 heads of 64;
    # slicing each chunk to 64 keeps heads 0, 2, 4 of 6, whole.
    source = eva02(384, 6, depth=1)
    target = eva02(192, 3, depth=1, seed=1)
    init(target, source, share=True)
    src, tgt = source.state_dict(), target.state_dict()
    heads = kept(384, 128, 64)
    assert_close_rel(tgt["blocks.0.attn.v_bias"], src["blocks.0.attn.v_bias"][heads])
    qkv = kept(3 * 384, 128, 64)
    assert_close_rel(tgt["blocks.0.attn.qkv.weight"], sub(src["blocks.0.attn.qkv.weight"], qkv, heads))
    assert_runs(target, 28)


def test_eva_refuses_heads_that_straddle_chunks():
    # mlp ratio 8/3 at width 96: d = gcd(96, 256) = 32 would cut heads of 48.
    fm = factorize(eva02(192, 4, depth=1), ranks="full")
    with pytest.raises(ValueError, match="head_dim 48"):
        initialize(eva02(96, 2, depth=1), fm)


def test_rope_mixed_frequencies_follow_depth_and_heads():
    source = rope_mixed(128, 4, depth=3)
    target = rope_mixed(64, 2, depth=2, seed=1)
    report = init(target, source, share=True, depth="interpolate")
    assert_only_derived_at_init(report, target)
    assert report["rope.freqs"] == "selected"  # (2, depth, heads, head_dim / 2): blocks 0, 2 and heads 0, 1
    freqs = source.rope.freqs.detach()
    assert_close_rel(target.rope.freqs, sub(freqs, None, torch.tensor([0, 2]), torch.arange(2)))
    assert_runs(target, 32)


# ------------------------------------------------------------------------------------- BEiT
def beit(embed_dim: int, heads: int, depth: int, seed: int = 0, **kw) -> nn.Module:
    kw = {"img_size": 32, "patch_size": 8, "num_classes": 10} | kw
    return build("beit_base_patch16_224", seed, embed_dim=embed_dim, num_heads=heads, depth=depth, **kw)


@pytest.mark.parametrize("shared", [False, True], ids=["per_block", "shared"])
def test_beit_narrower_and_shallower_keeps_heads_of_the_tables(shared):
    kw = {"use_rel_pos_bias": not shared, "use_shared_rel_pos_bias": shared}
    source = beit(128, 4, depth=3, **kw)
    target = beit(64, 2, depth=2, seed=1, **kw)
    report = init(target, source, share=True, depth="select")
    assert_only_derived_at_init(report, target)
    src, tgt = source.state_dict(), target.state_dict()
    tables = (
        ["rel_pos_bias.relative_position_bias_table"]
        if shared
        else [f"blocks.{j}.attn.relative_position_bias_table" for j in range(2)]
    )
    for name in tables:
        origin = name.replace("blocks.1.", "blocks.2.")  # select: blocks 0 and 2
        assert report[name] == "selected"
        assert_close_rel(tgt[name], src[origin][:, :2], msg=name)
    assert_close_rel(tgt["blocks.1.gamma_2"], src["blocks.2.gamma_2"][:64])
    assert_runs(target, 32)


def test_beit_other_image_size_resamples_the_tables():
    source = beit(64, 2, depth=2)
    target = beit(64, 2, depth=2, seed=1, img_size=48)  # a 6x6 grid: (2*6-1)^2 + 3 = 124 positions
    report = init(target, source, share=True)
    assert_only_derived_at_init(report, target)
    assert report["blocks.0.attn.relative_position_bias_table"] == "interpolated"
    # The 3 class-token rows are kept as they are.
    assert_close_rel(
        target.blocks[0].attn.relative_position_bias_table[-3:], source.blocks[0].attn.relative_position_bias_table[-3:]
    )
    assert_runs(target, 48)


def test_own_size_is_the_materialized_model():
    """At the template's own size every family reproduces the source (up to round-off)."""
    cases: Sequence[tuple[nn.Module, nn.Module, bool, int]] = [
        (swin(), swin(seed=1), False, 32),
        (eva02(192, 3, depth=2), eva02(192, 3, depth=2, seed=1), True, 28),
        (beit(64, 2, depth=2), beit(64, 2, depth=2, seed=1), True, 32),
    ]
    for source, target, share, size in cases:
        init(target, source, share=share)
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            assert_close_rel(target(x), source(x), OUTPUT_RTOL[torch.float32], msg=type(source).__name__)


def test_swin_subnetwork_gradients_reach_the_kept_heads_and_channels():
    """Sub-network pre-training (DESIGN.md 1.3 c) through the same maps: a narrower Swin's loss
    reaches the source's bias tables in the kept heads only, and its patch merging in the kept
    channels of each spatial copy only."""
    fm = factorize(swin(), ranks="full", share=False).eval()
    narrow = swin(embed_dim=16, heads=(1, 2, 4), seed=1)
    weights = target_weights(fm, narrow, plan=plan_resize(fm, narrow))
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.func.functional_call(narrow, weights, (images,)).logsumexp(-1).sum().backward()
    backbone = fm.backbone
    table = backbone.layers[1].blocks[0].attn.relative_position_bias_table.grad  # (49, 4): 2 heads kept
    assert table[:, :2].abs().sum() > 0 and table[:, 2:].abs().sum() == 0
    merge = backbone.layers[1].downsample.reduction.weight.grad  # (64, 4 x 32): 32 rows, 4 x 16 columns kept
    used = torch.zeros_like(merge, dtype=torch.bool)
    used[:32, kept(128, 32, 16)] = True
    assert merge[used].abs().sum() > 0 and merge[~used].abs().sum() == 0
