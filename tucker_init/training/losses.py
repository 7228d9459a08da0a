"""Losses a run minimizes and the evaluation of a classifier."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batches import autocast, to_device
from .config import LossFn, TrainConfig, _is_number
from .distributed import all_reduce_sum

__all__ = ["classification_loss", "evaluate", "make_mixup", "masked_image_loss"]


def classification_loss(label_smoothing: float = 0.0, mixup: Any = None) -> LossFn:
    """``loss_fn(model, (x, y))``: cross-entropy of ``model(x)`` (computed in float32).

    With ``mixup`` (a timm ``Mixup``, which applies the label smoothing itself) the batch is
    mixed first and the loss is timm's ``SoftTargetCrossEntropy`` against the mixed targets.
    """
    if not (_is_number(label_smoothing) and 0 <= label_smoothing < 1):
        raise ValueError(f"label_smoothing must be a number in [0, 1), found {label_smoothing!r}")
    if mixup is not None:
        from timm.loss import SoftTargetCrossEntropy

        soft_ce = SoftTargetCrossEntropy()

        def mixed_loss(model: nn.Module, batch: Any) -> Tensor:
            x, y = mixup(batch[0], batch[1])
            return soft_ce(model(x).float(), y)

        return mixed_loss

    def loss_fn(model: nn.Module, batch: Any) -> Tensor:
        x, y = batch[0], batch[1]
        return F.cross_entropy(model(x).float(), y, label_smoothing=label_smoothing)

    return loss_fn


def make_mixup(config: TrainConfig, model: nn.Module, batch_size: int | None) -> Any:
    """timm's ``Mixup`` for ``config.mixup`` / ``config.cutmix`` (``None`` when both are 0).

    Raises:
        ValueError: the per-process batch is odd (Mixup pairs images with the batch flipped) or
            the model does not say its ``num_classes``.
    """
    if not (config.mixup or config.cutmix):
        return None
    from timm.data import Mixup

    num_classes = getattr(model, "num_classes", None)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"mixup / cutmix need a model with num_classes (a timm classifier), found {num_classes!r}")
    if batch_size is not None and batch_size % 2:
        raise ValueError(f"mixup / cutmix need an even batch per process, found {batch_size}")
    return Mixup(
        mixup_alpha=config.mixup,
        cutmix_alpha=config.cutmix,
        label_smoothing=config.label_smoothing,
        num_classes=num_classes,
    )


def masked_image_loss(model: nn.Module, batch: Any) -> Tensor:
    """``loss_fn`` for masked-image pre-training: ``model(images).loss`` (labels ignored)."""
    x = batch[0] if isinstance(batch, list | tuple) else batch
    return model(x).loss


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    device: str | torch.device | None = None,
    *,
    amp: bool = True,
    reduce: bool = True,
) -> dict[str, float]:
    """Top-1 accuracy (percent) and mean cross-entropy of ``model`` over one pass of ``loader``.

    The model is put in eval mode and restored afterwards. With ``reduce=True`` and an
    initialized process group the sums are all-reduced (every rank must call this); ranks
    holding disjoint shards and ranks holding the same full set both give the right answer.

    Returns:
        ``{"top1": percent, "loss": mean CE, "count": images}``.
    """
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    try:
        for batch in loader:
            x, y = to_device((batch[0], batch[1]), device)
            with autocast(device, amp):
                logits = model(x)
            logits = logits.float()
            sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
            sums[1] += (logits.argmax(-1) == y).sum()
            sums[2] += y.numel()
    finally:
        model.train(was_training)
    if reduce:
        sums = all_reduce_sum(sums)
    loss_sum, correct, count = sums.tolist()
    if count == 0:
        raise ValueError("evaluate: the loader yielded no images")
    return {"top1": 100.0 * correct / count, "loss": loss_sum / count, "count": int(count)}
