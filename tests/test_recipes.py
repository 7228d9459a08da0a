"""Named recipes give the documented hyper-parameters; the engine's options they switch on
(layer-wise lr decay, model EMA, mixup / cutmix) work and resume bit-exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _train_worker import tiny_loader, tiny_vit

from tucker_init.training import TrainConfig, build_optimizer, finetune
from tucker_init.training.recipes import Recipe, get_recipe, list_recipes, register_recipe


def test_mae_recipe_is_the_papers():
    recipe = get_recipe("mae", kind="pretrain")
    config = recipe.train_config(steps=8000, batch_size=4096)
    assert config.lr == pytest.approx(1.5e-4 * 4096 / 256)  # 2.4e-3, MAE's base lr scaled
    assert config.betas == (0.9, 0.95) and config.weight_decay == 0.05
    assert config.warmup_steps == 400  # 40 of 800 epochs
    assert config.min_lr == 0.0
    assert recipe.mask_ratio == 0.75 and recipe.norm_pix_loss and recipe.crop_scale == (0.2, 1.0)


def test_finetune_recipes_are_the_papers():
    mae_ft = get_recipe("mae_finetune", kind="finetune").train_config(steps=1000, batch_size=1024)
    assert mae_ft.lr == pytest.approx(2e-3) and mae_ft.layer_decay == 0.65
    assert (mae_ft.mixup, mae_ft.cutmix, mae_ft.label_smoothing) == (0.8, 1.0, 0.1)
    assert mae_ft.warmup_steps == 50
    deit = get_recipe("deit")
    assert deit.scaled_lr(512) == pytest.approx(5e-4) and deit.scaled_lr(1024) == pytest.approx(1e-3)
    assert deit.drop_path == 0.1 and deit.auto_augment == "rand-m9-mstd0.5-inc1" and deit.reprob == 0.25


def test_small_recipes_are_what_the_jobs_used_before():
    pre = get_recipe("small_pretrain").train_config(steps=70, batch_size=64, seed=3)
    assert pre == TrainConfig(steps=70, batch_size=64, lr=1.5e-3, warmup_steps=7, weight_decay=0.05, seed=3)
    ft = get_recipe("small_finetune").train_config(steps=300, batch_size=64, lr=2e-3)
    assert ft == TrainConfig(steps=300, batch_size=64, lr=2e-3, warmup_steps=30, label_smoothing=0.1)


def test_recipe_lookup_errors():
    with pytest.raises(ValueError, match=r"recipe must be one of \[.*'mae'.*\], found 'mea'"):
        get_recipe("mea")
    with pytest.raises(ValueError, match=r"'mae' is a pretrain recipe; for finetune use one of"):
        get_recipe("mae", kind="finetune")
    with pytest.raises(ValueError, match=r"recipe.kind must be one of"):
        register_recipe(Recipe("odd", "distill", lr=1e-3))
    register_recipe(get_recipe("deit").replace(name="deit_no_mix", mixup=0.0, cutmix=0.0))
    assert "deit_no_mix" in list_recipes("finetune")


def test_layer_decay_scales_each_block_group():
    model = tiny_vit()  # depth 2
    config = TrainConfig(steps=10, lr=1e-2, layer_decay=0.5)
    lrs = sorted({group["lr"] for group in build_optimizer(model, config).param_groups})
    # timm: embeddings, 2 blocks, head -> 4 layer ids with lr * 0.5 ** (3 - i)
    assert lrs == pytest.approx([1e-2 * 0.5**k for k in (3, 2, 1, 0)])
    with pytest.raises(ValueError, match=r"layer_decay needs a timm model with group_matcher"):
        build_optimizer(torch.nn.Linear(2, 2), config)


def _finetune(tmp_path: Path, steps: int, max_steps: int | None, resume: bool, batch_size: int = 8):
    torch.manual_seed(0)
    model = tiny_vit()
    config = TrainConfig(
        steps=steps,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=3e-3,
        warmup_steps=1,
        label_smoothing=0.1,
        layer_decay=0.75,
        ema_decay=0.9,
        mixup=0.8,
        cutmix=1.0,
        seed=1,
        device="cpu",
        log_every=1,
        out_dir=str(tmp_path),
    )
    test = tiny_loader(8, augment=False)
    result = finetune(model, tiny_loader(batch_size), test, config, resume=resume)
    return model, result


def test_mixup_ema_and_layer_decay_resume_bit_exactly(tmp_path):
    whole, whole_result = _finetune(tmp_path / "a", 6, None, False)
    _finetune(tmp_path / "b", 6, 3, False)
    resumed, resumed_result = _finetune(tmp_path / "b", 6, None, True)
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    for key, value in whole_result.ema.state_dict().items():
        assert torch.equal(resumed_result.ema.state_dict()[key], value), key
    assert resumed_result.final_eval == whole_result.final_eval
    # The evaluation scored the EMA weights, not the model's own.
    assert not torch.equal(whole_result.ema.state_dict()["head.weight"], whole.state_dict()["head.weight"])


def test_mixup_needs_an_even_batch(tmp_path):
    with pytest.raises(ValueError, match=r"mixup / cutmix need an even batch per process, found 7"):
        _finetune(tmp_path, 2, None, False, batch_size=7)


def test_recipes_augment_streamed_image_folders_as_their_papers():
    from tucker_init.pipeline import _transform_options
    from tucker_init.training.streaming import build_transform

    deit = repr(build_transform("finetune", 32, options=_transform_options(get_recipe("deit"))))
    assert "RandAugment" in deit and "RandomErasing(p=0.25" in deit and "scale=(0.08, 1.0)" in deit
    mae = repr(build_transform("mae", 32, options=_transform_options(get_recipe("mae"))))
    assert "scale=(0.2, 1.0)" in mae and "RandAugment" not in mae and "RandomErasing" not in mae
