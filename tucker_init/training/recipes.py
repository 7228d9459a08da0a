"""Named training recipes: the hyper-parameters of a published setting in one place, turned
into a :class:`~.config.TrainConfig` (and the objective's, data's and model's options) for any
step budget and batch size. The pipeline, the CLI and the experiments take a recipe by name
instead of spelling out warm-up + cosine settings of their own.

    mae            MAE pre-training (He et al. 2022): AdamW (0.9, 0.95), lr = 1.5e-4 x batch / 256,
                   wd 0.05, 5 % warm-up then cosine, mask 0.75, norm_pix_loss,
                   RandomResizedCrop(scale 0.2-1) + flip
    mae_finetune   MAE end-to-end fine-tuning (ViT-B): lr = 5e-4 x batch / 256, layer decay 0.65,
                   wd 0.05, 5 % warm-up, drop_path 0.1, mixup 0.8 / cutmix 1.0, label smoothing
                   0.1, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25
    deit           DeiT (Touvron et al. 2021): lr = 5e-4 x batch / 512, wd 0.05, 5 epochs of
                   300 warm-up, drop_path 0.1, mixup 0.8 / cutmix 1.0, label smoothing 0.1,
                   RandAugment, random erasing 0.25, model EMA 0.99996 optional
    small_pretrain / small_finetune
                   the short CPU budgets of the demo, tests and experiments (a fixed lr, 10 %
                   warm-up, no mixup): what the library used before recipes had names

Register another with :func:`register_recipe`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .config import TrainConfig

__all__ = ["Recipe", "get_recipe", "list_recipes", "register_recipe"]


@dataclass(frozen=True)
class Recipe:
    """One training setting.

    Attributes:
        name: the registry key.
        kind: ``"pretrain"`` (masked image modeling) or ``"finetune"`` (classification).
        lr: the learning rate at ``lr_batch``; ``lr_batch=None`` means ``lr`` is used as it is.
        lr_batch: the reference batch of the linear scaling rule, lr = ``lr * batch / lr_batch``.
        min_lr_ratio: the cosine ends at ``min_lr_ratio * lr``...
        min_lr: ...or at this absolute learning rate, when set.
        warmup_fraction: the share of the steps spent warming up.
        weight_decay, betas, grad_clip: AdamW's.
        layer_decay: layer-wise lr decay (timm's ``param_groups_layer_decay``), or ``None``.
        ema_decay: model EMA (timm ``ModelEmaV3``) decay, or ``None``.
        label_smoothing, mixup, cutmix: the classification loss (timm ``Mixup`` when either
            alpha is positive).
        drop_path: stochastic depth rate of the model being trained.
        mask_ratio, norm_pix_loss: the masked-image objective.
        crop_scale: RandomResizedCrop's scale range for image folders (``None``: the in-memory
            loader's pad-crop + flip).
        auto_augment: timm's auto-augment policy string for image folders, or ``None``.
        reprob: random-erasing probability for image folders.
        description: one line for ``--help`` and ``list_recipes()``.
    """

    name: str
    kind: str
    lr: float
    lr_batch: int | None = 256
    min_lr_ratio: float = 1e-3
    min_lr: float | None = None
    warmup_fraction: float = 0.05
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None
    layer_decay: float | None = None
    ema_decay: float | None = None
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    drop_path: float = 0.0
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False
    crop_scale: tuple[float, float] | None = None
    auto_augment: str | None = None
    reprob: float = 0.0
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def scaled_lr(self, batch_size: int) -> float:
        """The peak learning rate for a global ``batch_size`` (linear scaling rule)."""
        return self.lr if self.lr_batch is None else self.lr * batch_size / self.lr_batch

    def train_config(self, steps: int, batch_size: int, **overrides: Any) -> TrainConfig:
        """A :class:`TrainConfig` of this recipe for ``steps`` optimizer steps at a global
        ``batch_size``; ``overrides`` replace any of its fields (e.g. ``lr=``, ``seed=``)."""
        lr = overrides.pop("lr", None)
        lr = self.scaled_lr(batch_size) if lr is None else lr
        values: dict[str, Any] = {
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "min_lr": self.min_lr if self.min_lr is not None else lr * self.min_lr_ratio,
            # + 1e-9: 0.1 * 70 must give 7 warm-up steps, not 6.999...
            "warmup_steps": max(1, math.floor(steps * self.warmup_fraction + 1e-9)) if self.warmup_fraction else 0,
            "weight_decay": self.weight_decay,
            "betas": self.betas,
            "grad_clip": self.grad_clip,
            "label_smoothing": self.label_smoothing,
            "layer_decay": self.layer_decay,
            "ema_decay": self.ema_decay,
            "mixup": self.mixup,
            "cutmix": self.cutmix,
        }
        values.update(overrides)
        return TrainConfig(**values)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (``recipe.replace(mixup=0.0)``)."""
        return dataclasses.replace(self, **changes)


_RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Make ``recipe`` available by its name (replacing one of the same name)."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe, found {type(recipe).__name__}")
    if recipe.kind not in ("pretrain", "finetune"):
        raise ValueError(f"recipe.kind must be one of ['pretrain', 'finetune'], found {recipe.kind!r}")
    _RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str | Recipe, kind: str | None = None) -> Recipe:
    """The recipe registered as ``name`` (a :class:`Recipe` is returned as it is); with ``kind``
    it must be of that kind.

    Raises:
        ValueError: no such recipe, or one of another kind; the message lists the choices.
    """
    recipe = name if isinstance(name, Recipe) else _RECIPES.get(name)  # type: ignore[arg-type]
    choices = list_recipes(kind)
    if recipe is None:
        raise ValueError(f"recipe must be one of {choices}, found {name!r}")
    if kind is not None and recipe.kind != kind:
        raise ValueError(f"recipe {recipe.name!r} is a {recipe.kind} recipe; for {kind} use one of {choices}")
    return recipe


def list_recipes(kind: str | None = None) -> list[str]:
    """Names of the registered recipes (of ``kind`` only, when given)."""
    return [name for name, r in _RECIPES.items() if kind is None or r.kind == kind]


_RAND_AUGMENT = "rand-m9-mstd0.5-inc1"

register_recipe(
    Recipe(
        "mae",
        "pretrain",
        lr=1.5e-4,
        betas=(0.9, 0.95),
        warmup_fraction=40 / 800,
        min_lr_ratio=0.0,
        norm_pix_loss=True,
        crop_scale=(0.2, 1.0),
        description="MAE pre-training: AdamW (0.9, 0.95), lr 1.5e-4 x batch/256, mask 0.75, norm_pix_loss",
    )
)
register_recipe(
    Recipe(
        "mae_finetune",
        "finetune",
        lr=5e-4,
        warmup_fraction=5 / 100,
        min_lr_ratio=2e-3,
        layer_decay=0.65,
        label_smoothing=0.1,
        mixup=0.8,
        cutmix=1.0,
        drop_path=0.1,
        crop_scale=(0.08, 1.0),
        auto_augment=_RAND_AUGMENT,
        reprob=0.25,
        description="MAE fine-tuning: lr 5e-4 x batch/256, layer decay 0.65, mixup/cutmix, RandAugment",
    )
)
register_recipe(
    get_recipe("mae_finetune").replace(  # DeiT's regularization is the one MAE fine-tuning adopted
        name="deit",
        lr_batch=512,
        warmup_fraction=5 / 300,
        min_lr_ratio=1e-5 / 5e-4,
        layer_decay=None,
        description="DeiT: lr 5e-4 x batch/512, mixup/cutmix, RandAugment, label smoothing 0.1",
    )
)
register_recipe(
    Recipe(
        "small_pretrain",
        "pretrain",
        lr=1.5e-3,
        lr_batch=None,
        warmup_fraction=0.1,
        min_lr=1e-6,
        description="short CPU pre-training (demo, tests, experiments): lr 1.5e-3, 10 % warm-up",
    )
)
register_recipe(
    Recipe(
        "small_finetune",
        "finetune",
        lr=1e-3,
        lr_batch=None,
        warmup_fraction=0.1,
        min_lr=1e-6,
        label_smoothing=0.1,
        description="short CPU fine-tuning (demo, tests, experiments): lr 1e-3, 10 % warm-up, smoothing 0.1",
    )
)
