"""Masked image modeling: MAE for ViTs and the masked-input variant for CNNs and Swin, dense and
factorized. Only masked patches are scored, the encoder never sees them, and a factorized
encoder at full rank gives the dense model's loss."""

from __future__ import annotations

import itertools

import pytest
import torch
from _models import OUTPUT_RTOL, assert_close_rel
from timm.models.convnext import ConvNeXt
from timm.models.deit import VisionTransformerDistilled
from timm.models.resnet import BasicBlock, ResNet
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from tucker_init import factorize
from tucker_init.objectives.mae import (
    MaskedAutoencoder,
    MaskedConvAutoencoder,
    _encode,
    masked_model_for,
    patchify,
    unpatchify,
)

SMALL_DECODER = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}


def tiny_vit(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10, **kw)


def tiny_resnet() -> ResNet:
    torch.manual_seed(0)
    return ResNet(BasicBlock, layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16, num_classes=10)


def tiny_convnext() -> ConvNeXt:
    torch.manual_seed(0)
    model = ConvNeXt(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64), num_classes=10)
    with torch.no_grad():  # timm's layer scale starts at 1e-6: make the blocks matter
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    return model


def tiny_swin() -> SwinTransformer:
    """32 px, 4 px patches: stages of 8 x 8, 4 x 4, 2 x 2 patches (total stride 16), shifted
    windows in stage 0; ``forward_features`` gives ``(B, 2, 2, 128)`` (NHWC)."""
    torch.manual_seed(0)
    return SwinTransformer(
        img_size=32,
        patch_size=4,
        embed_dim=32,
        depths=(2, 1, 1),
        num_heads=(1, 2, 4),
        window_size=4,
        num_classes=10,
        drop_path_rate=0.0,  # timm's default 0.1 would make two passes differ
    )


def images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def patch_slice(index: int, grid_w: int = 4, p: int = 8) -> tuple[slice, slice]:
    """Rows and columns of patch ``index`` (row-major over a grid ``grid_w`` patches wide)."""
    row, col = divmod(index, grid_w)
    return slice(row * p, (row + 1) * p), slice(col * p, (col + 1) * p)


def pixels_of(sample: int, index: int) -> tuple:
    """Index of the pixels of patch ``index`` of image ``sample``, all channels."""
    return (sample, slice(None), *patch_slice(index))


# -- ViT: MAE ---------------------------------------------------------------------------------------------
def test_patchify_roundtrip_and_order():
    x = images()
    patches = patchify(x, (8, 8))
    assert patches.shape == (2, 16, 192)
    torch.testing.assert_close(unpatchify(patches, (8, 8), (4, 4), 3), x, atol=0, rtol=0)
    # Patch 5 is grid row 1, column 1 (row-major, like timm's patch tokens).
    rows, cols = patch_slice(5)
    torch.testing.assert_close(patches[0, 5], x[0, :, rows, cols].permute(1, 2, 0).reshape(-1), atol=0, rtol=0)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"no_embed_class": True},
        {"reg_tokens": 2},
        {"class_token": False, "global_pool": "avg"},
        {"pos_embed": "none"},
    ],
    ids=["default", "no_embed_class", "reg_tokens", "no_cls", "no_pos"],
)
def test_encoder_with_all_patches_visible_matches_forward_features(kw):
    # With every patch kept (in order), the MAE encoder pass must equal timm's own: prefix
    # tokens and position embeddings are laid out exactly as timm does it.
    vit = tiny_vit(**kw).eval()
    x = images()
    ids_keep = torch.arange(16).expand(2, -1)
    with torch.no_grad():
        assert_close_rel(_encode(vit, x, ids_keep), vit.forward_features(x), OUTPUT_RTOL[torch.float32])


def test_encoder_handles_distilled_deit():
    torch.manual_seed(0)
    deit = VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2).eval()
    x = images()
    with torch.no_grad():
        expected = deit.forward_features(x)
        found = _encode(deit, x, torch.arange(16).expand(2, -1))
    assert_close_rel(found, expected, OUTPUT_RTOL[torch.float32])
    out = MaskedAutoencoder(deit, **SMALL_DECODER)(x, gen())
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize(("ratio", "kept"), [(0.75, 4), (0.5, 8), (0.6, 6)])
def test_mae_loss_finite_and_number_of_kept_tokens(ratio, kept):
    vit = tiny_vit()
    seen = []
    vit.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    mae = MaskedAutoencoder(vit, mask_ratio=ratio, **SMALL_DECODER)
    out = mae(images(), gen())
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.pred.shape == (2, 16, 8 * 8 * 3)
    assert out.mask.shape == (2, 16)
    assert out.mask.sum(1).tolist() == [16 - kept] * 2
    assert seen == [1 + kept]  # cls token + round((1 - ratio) * N) visible patches


def test_masks_differ_per_sample_and_follow_the_generator():
    mae = MaskedAutoencoder(tiny_vit(), **SMALL_DECODER)
    a, b = mae(images(4), gen(1)), mae(images(4), gen(1))
    torch.testing.assert_close(a.mask, b.mask, atol=0, rtol=0)  # the same computation: bit-identical
    torch.testing.assert_close(a.loss, b.loss, atol=0, rtol=0)
    assert not torch.equal(a.mask[0], a.mask[1])
    assert not torch.equal(mae(images(4), gen(2)).mask, a.mask)


def test_only_masked_patches_are_scored_and_never_seen():
    mae = MaskedAutoencoder(tiny_vit(), **SMALL_DECODER).eval()
    x = images()
    out = mae(x, gen(3))
    masked = int(out.mask[0].nonzero()[0])
    visible = int((out.mask[0] == 0).nonzero()[0])

    # A masked patch: the encoder never sees it (pred bit-identical) but the loss scores it.
    x_masked = x.clone()
    x_masked[pixels_of(0, masked)] += 3.0
    out_masked = mae(x_masked, gen(3))
    assert torch.equal(out_masked.pred, out.pred)
    assert not torch.allclose(out_masked.loss, out.loss)

    # A visible patch: its target is not scored (same prediction, other pixels -> same loss).
    x_visible = x.clone()
    x_visible[pixels_of(0, visible)] += 3.0
    torch.testing.assert_close(mae.loss(x_visible, out.pred, out.mask), out.loss, atol=0, rtol=0)

    # And no gradient reaches the predictions of visible patches.
    pred = out.pred.detach().requires_grad_()
    mae.loss(x, pred, out.mask).backward()
    visible_rows = out.mask == 0
    assert torch.all(pred.grad[visible_rows] == 0)
    assert torch.all(pred.grad[~visible_rows].abs().sum(-1) > 0)


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_dense_and_full_rank_factorized_vit_give_the_same_loss(norm_pix_loss):
    vit = tiny_vit()
    fm = factorize(vit, ranks="full")
    dense_mae = MaskedAutoencoder(vit, norm_pix_loss=norm_pix_loss, **SMALL_DECODER)
    fact_mae = MaskedAutoencoder(fm, norm_pix_loss=norm_pix_loss, **SMALL_DECODER)
    fact_mae.decoder.load_state_dict(dense_mae.decoder.state_dict())
    x = images()
    dense, fact = dense_mae(x, gen(5)), fact_mae(x, gen(5))
    torch.testing.assert_close(fact.mask, dense.mask, atol=0, rtol=0)  # the same generator
    assert_close_rel(fact.loss, dense.loss, OUTPUT_RTOL[torch.float32])


def test_gradients_reach_template_scalers_and_decoder():
    fm = factorize(tiny_vit(), ranks=(8, 32, 32))
    mae = MaskedAutoencoder(fm, decoder_pos_embed="learned", **SMALL_DECODER)
    mae(images(), gen()).loss.backward()
    named = [*fm.template.named_parameters(), *fm.scalers.named_parameters()]
    named += [(f"decoder.{n}", p) for n, p in mae.decoder.named_parameters()]
    for name, p in named:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # Encoder remainder parameters that MAE uses get gradients too; the classifier head does not.
    assert fm.backbone.pos_embed.grad is not None and fm.backbone.cls_token.grad is not None
    assert fm.backbone.head.weight.grad is None


def test_norm_pix_loss_normalizes_the_target():
    vit = tiny_vit()
    plain = MaskedAutoencoder(vit, **SMALL_DECODER)
    normed = MaskedAutoencoder(vit, norm_pix_loss=True, **SMALL_DECODER)
    normed.decoder.load_state_dict(plain.decoder.state_dict())
    x = images() * 2.0 + 1.0
    target = normed.target(x)
    assert not torch.allclose(target, plain.target(x))
    # Zero mean relative to the scale of the target itself; unit variance up to the 1e-6 that
    # the normalization adds to the variance (about 2.5e-7 here: pixel variance near 4).
    assert_close_rel(target.mean(-1), torch.zeros(2, 16), scale=target.abs().max())
    assert_close_rel(target.var(-1), torch.ones(2, 16))
    assert not torch.allclose(plain(x, gen()).loss, normed(x, gen()).loss)


def test_a_few_steps_on_a_fixed_batch_lower_the_mae_loss():
    fm = factorize(tiny_vit(), ranks=(8, 32, 32))
    mae = MaskedAutoencoder(fm, **SMALL_DECODER)
    opt = torch.optim.Adam(mae.parameters(), lr=2e-3)
    x = images(4)
    losses = []
    for _ in range(8):
        loss = mae(x, gen(0)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


# -- CNN, Swin: masked input ------------------------------------------------------------------------------
CNNS = {"resnet": tiny_resnet, "convnext": tiny_convnext, "swin": tiny_swin}  # encoders of a feature map


@pytest.mark.parametrize("factorized", [False, True], ids=["dense", "factorized"])
@pytest.mark.parametrize("name", list(CNNS))
def test_cnn_masked_input_loss_and_gradients(name, factorized):
    model = CNNS[name]()
    encoder = factorize(model, ranks="full", share=False) if factorized else model
    mim = masked_model_for(encoder, patch_size=8, decoder_dim=32)
    assert isinstance(mim, MaskedConvAutoencoder)
    x = images()
    out = mim(x, gen(1))
    assert torch.isfinite(out.loss) and out.loss.ndim == 0
    assert out.pred.shape == (2, 16, 192)
    assert out.mask.sum(1).tolist() == [10.0, 10.0]  # default ratio 0.6: round(0.4 * 16) = 6 visible
    out.loss.backward()
    for n, p in mim.decoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    if factorized:
        for n, p in [*encoder.template.named_parameters(), *encoder.scalers.named_parameters()]:
            assert p.grad is not None and p.grad.abs().sum() > 0, n

    # The encoder sees zeros where patches are masked: editing a masked patch leaves pred unchanged.
    masked = int(out.mask[0].nonzero()[0])
    x2 = x.clone()
    x2[pixels_of(0, masked)] = float("nan")
    out2 = mim(x2, gen(1))
    assert torch.equal(out2.pred, out.pred)


def test_cnn_patch_larger_than_stride():
    # p = 16 with convnext's stride 32 at 64x64 would not divide; use p a multiple of the stride.
    mim = MaskedConvAutoencoder(tiny_convnext(), patch_size=32, decoder_dim=16, mask_ratio=0.5)
    out = mim(torch.randn(1, 3, 64, 64, generator=gen()), gen())
    assert out.pred.shape == (1, 4, 32 * 32 * 3) and torch.isfinite(out.loss)


def test_a_few_steps_lower_the_cnn_loss():
    fm = factorize(tiny_resnet(), ranks=(4, 16, 16), share=True)
    mim = masked_model_for(fm, patch_size=8, decoder_dim=32)
    opt = torch.optim.Adam(mim.parameters(), lr=5e-3)
    x = images(4)
    losses = []
    for _ in range(5):
        loss = mim(x, gen(0)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses


def test_swin_features_are_permuted_to_channels_first():
    swin = tiny_swin()
    assert swin.forward_features(images()).shape == (2, 2, 2, 128)  # NHWC
    mim = masked_model_for(swin, image_size=32, decoder_dim=16)
    assert mim.patch_size == (8, 8) and mim.stride == 16 and mim.channels_last
    # The decoder sees (B, 128, 2, 2): its first 1x1 conv takes the 128 channels.
    assert mim.decoder[0].in_channels == 128
    assert mim(images(), gen()).pred.shape == (2, 16, 192)


def test_a_few_steps_lower_the_factorized_swin_loss():
    fm = factorize(tiny_swin(), ranks=(12, 32, 32), share=True)
    mim = masked_model_for(fm, image_size=32, decoder_dim=32)
    opt = torch.optim.Adam(mim.parameters(), lr=2e-3)
    x = images(4)
    losses = []
    for _ in range(6):
        loss = mim(x, gen(0)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert all(b < a for a, b in itertools.pairwise(losses)) and losses[-1] < 0.95 * losses[0], losses


# -- picking the objective and errors -----------------------------------------------------------------------
def test_masked_model_for_picks_by_family():
    vit = tiny_vit()
    assert isinstance(masked_model_for(vit, **SMALL_DECODER), MaskedAutoencoder)
    assert isinstance(masked_model_for(factorize(vit, ranks=(4, 16, 16)), **SMALL_DECODER), MaskedAutoencoder)
    assert isinstance(masked_model_for(tiny_convnext(), patch_size=8), MaskedConvAutoencoder)
    assert isinstance(masked_model_for(factorize(tiny_swin(), ranks=(12, 32, 32)), patch_size=8), MaskedConvAutoencoder)
    with pytest.raises(ValueError, match="no backbone adapter"):
        masked_model_for(nn.Linear(3, 3))


def test_token_encoders_other_than_vit_have_no_objective_yet():
    import timm

    eva = timm.create_model("eva02_tiny_patch14_224", pretrained=False, img_size=28, num_classes=10)
    with pytest.raises(ValueError, match=r"no masked-modeling objective for backbone family 'eva' .*layout 'NLC'"):
        masked_model_for(eva)
    with pytest.raises(ValueError, match=r"needs a timm ResNet or ConvNeXt \(or Swin\).*features_layout 'NLC'"):
        MaskedConvAutoencoder(eva)


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.1])
def test_mask_ratio_outside_open_interval_is_refused(ratio):
    with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\).*found"):
        MaskedAutoencoder(tiny_vit(), mask_ratio=ratio)
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedConvAutoencoder(tiny_resnet(), mask_ratio=ratio, patch_size=8)


def test_bad_decoder_sizes_and_inputs_are_refused():
    vit = tiny_vit()
    with pytest.raises(ValueError, match="decoder_dim must be a multiple of decoder_heads=4, found 30"):
        MaskedAutoencoder(vit, decoder_dim=30, decoder_heads=4)
    with pytest.raises(ValueError, match="decoder_dim must be an int >= 1, found 0"):
        MaskedAutoencoder(vit, decoder_dim=0)
    with pytest.raises(ValueError, match="decoder_depth must be an int >= 0, found -1"):
        MaskedAutoencoder(vit, decoder_depth=-1)
    with pytest.raises(ValueError, match="multiple of 4"):
        MaskedAutoencoder(vit, decoder_dim=6, decoder_heads=2)
    with pytest.raises(ValueError, match="decoder_pos_embed must be one of"):
        MaskedAutoencoder(vit, decoder_pos_embed="rope")
    with pytest.raises(ValueError, match="needs a timm VisionTransformer"):
        MaskedAutoencoder(tiny_resnet())
    with pytest.raises(ValueError, match="needs a timm ResNet or ConvNeXt"):
        MaskedConvAutoencoder(vit)
    with pytest.raises(ValueError, match="patch_size must divide the encoder's total stride 32"):
        MaskedConvAutoencoder(tiny_resnet(), patch_size=12)
    mae = MaskedAutoencoder(vit, **SMALL_DECODER)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\), found \(2, 1, 32, 32\)"):
        mae(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="not divisible into 8x8 patches"):
        mae(torch.zeros(2, 3, 30, 32))
