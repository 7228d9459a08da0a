"""AdamW with decoupled weight decay kept off 1-D parameters, and the warm-up + cosine schedule."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from .config import TrainConfig

__all__ = ["WarmupCosine", "build_optimizer", "build_scheduler"]


def _no_decay_names(model: nn.Module) -> set[str]:
    # timm models list parameters to keep out of weight decay (pos_embed, cls_token, ...);
    # honour that for every sub-module, e.g. the backbone inside a FactorizedModel.
    names: set[str] = set()
    for prefix, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            with contextlib.suppress(Exception):
                names.update(f"{prefix}.{n}" if prefix else n for n in fn())
    return names


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two groups: decayed (matrices, conv kernels, templates, scalers) and not
    decayed (1-D parameters such as norms and biases, and ``no_weight_decay()`` names); with
    ``config.layer_decay``, timm's layer-wise groups instead (each group's lr scaled)."""
    if config.layer_decay is not None:
        return _layer_decay_optimizer(model, config)
    skip = _no_decay_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    if not decay and not no_decay:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    groups = [
        {"params": g, "weight_decay": wd}
        for g, wd in ((decay, config.weight_decay), (no_decay, 0.0))
        if g  # AdamW refuses empty groups
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def _layer_decay_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    from timm.optim import param_groups_layer_decay

    if not callable(getattr(model, "group_matcher", None)):
        raise ValueError(
            f"layer_decay needs a timm model with group_matcher() (its blocks in order), found "
            f"{type(model).__name__}; materialize a FactorizedModel first or set layer_decay=None"
        )
    groups = param_groups_layer_decay(
        model,
        weight_decay=config.weight_decay,
        no_weight_decay_list=_no_decay_names(model),
        layer_decay=config.layer_decay,
    )
    for group in groups:  # the schedule scales each group's own base lr
        group["lr"] = config.lr * group.pop("lr_scale", 1.0)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


class WarmupCosine:
    """LR multiplier at step ``s`` (0-based, the step about to be taken): ``(s + 1) / warmup``
    during the warm-up, then a half cosine from 1 to ``min_ratio`` over the remaining steps.

    A class rather than a closure so that ``LambdaLR.state_dict()`` records its settings.
    """

    def __init__(self, total_steps: int, warmup_steps: int, min_ratio: float) -> None:
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps - 1)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay: the first step uses ``lr / warmup_steps``, step
    ``warmup_steps - 1`` uses ``lr``, the last step (``total_steps - 1``) uses ``min_lr``."""
    factor = WarmupCosine(total_steps, config.warmup_steps, config.min_lr / config.lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
