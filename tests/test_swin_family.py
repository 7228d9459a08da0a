"""The ``swin`` model family (``create_model("swin", depth=, width=)``) through the library's jobs:
built at 32 px, rebuilt by timm alone, pre-trained with the masked-input objective (template and
dense), a template initializing Swin models of other depths and widths, weight selection from the
dense model, and fine-tuning."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from timm.models.swin_transformer import SwinTransformer

from tucker_init import factorize, get_initializer, initialize
from tucker_init.models import DEFAULT_SIZES, FAMILIES, ModelSpec, create_model, swin_config
from tucker_init.pipeline import finetune_model, init_model, load_model, pretrain

SMALL = {"steps": 2, "batch_size": 8, "train_subset": 32, "device": "cpu"}


def stages(model: SwinTransformer) -> list[tuple[int, int, int, tuple[int, int]]]:
    """(blocks, width, heads, window) of each stage."""
    return [
        (len(s.blocks), s.blocks[0].dim, s.blocks[0].attn.num_heads, tuple(s.blocks[0].attn.window_size))
        for s in model.layers
    ]


def test_swin_family_sizes():
    assert "swin" in FAMILIES and DEFAULT_SIZES["swin"] == (2, 64)
    model = create_model("swin", depth=2, width=64)
    assert isinstance(model, SwinTransformer)
    # 32 px, patches of 4: grids 8, 4, 2; the last stage's window is clipped to its 2 x 2 grid.
    assert stages(model) == [(2, 64, 2, (4, 4)), (2, 128, 4, (4, 4)), (2, 256, 8, (2, 2))]
    assert model.feature_info[-1]["reduction"] == 16
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert stages(create_model("swin", depth=1, width=32))[0] == (1, 32, 1, (4, 4))
    assert swin_config(3, 96, 64, 2)["num_heads"] == (3, 6, 12)


def test_swin_timm_equivalent_builds_the_same_architecture():
    spec = ModelSpec("swin", 1, 32)
    name, kwargs = spec.timm_equivalent()
    ours, theirs = spec.build().state_dict(), timm.create_model(name, pretrained=False, **kwargs).state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 48}, "swin width must be a multiple of its head size 32"),
        ({"img_size": 36}, "swin img_size must be a multiple of 16"),
        ({"depth": 0}, "swin depth must be a positive int"),
    ],
)
def test_swin_sizes_that_do_not_fit_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model("swin", **kwargs)


def test_swin_template_and_dense_pretrain_init_and_finetune(tmp_path: Path):
    source = ModelSpec("swin", 1, 64)
    template = pretrain(source, "digits", tmp_path / "template", ranks=(12, 64, 64), **SMALL)
    dense = pretrain(source, "digits", tmp_path / "dense", dense=True, **SMALL)
    for result in (template, dense):
        losses = [h["loss"] for h in result.history if "loss" in h]
        assert result.train.step == 2 and losses and all(map(torch.isfinite, torch.tensor(losses)))

    # The template initializes a deeper, narrower Swin; weight selection a narrower one.
    target = ModelSpec("swin", 2, 32)
    model, report = init_model(target, template.path)
    assert stages(model)[0][:2] == (2, 32) and set(report.names("target-init")) <= {"layers.0.blocks.1.attn_mask"}
    selected = get_initializer("weight_selection")(ModelSpec("swin", 1, 32).build(), load_model(dense.path)[0])
    for name, value in selected.state_dict().items():
        assert torch.isfinite(value.float()).all(), name

    result = finetune_model(model, "digits", steps=2, batch_size=8, train_subset=32, test_subset=16, device="cpu")
    assert result.final_eval is not None and 0.0 <= result.final_eval["top1"] <= 100.0


def test_depth_identity_warns_when_a_swin_block_would_lose_its_shift():
    # 2 -> 4 blocks puts template block 1 (shifted) at position 2 (not shifted): said, not silent.
    def make(depths: tuple[int, ...]) -> SwinTransformer:
        return timm.create_model(
            "swin_tiny_patch4_window7_224",
            img_size=32,
            window_size=4,
            embed_dim=16,
            depths=depths,
            num_heads=(1, 2, 4, 8),
            num_classes=10,
        )

    template = factorize(make((2, 2, 2, 2)), ranks="full", share=False)
    with pytest.warns(UserWarning, match=r"other parity \[\(1, 2\)\]"):
        initialize(make((4, 2, 2, 2)), template, depth="identity")
