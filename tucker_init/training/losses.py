"""Losses a run minimizes and the evaluation of a classifier."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import all_reduce_sum
from .batches import autocast, to_device
from .config import LossFn, _is_number

__all__ = ["classification_loss", "evaluate", "masked_image_loss"]


def classification_loss(label_smoothing: float = 0.0) -> LossFn:
    """``loss_fn(model, (x, y))``: cross-entropy of ``model(x)`` (computed in float32)."""
    if not (_is_number(label_smoothing) and 0 <= label_smoothing < 1):
        raise ValueError(f"label_smoothing must be a number in [0, 1), found {label_smoothing!r}")

    def loss_fn(model: nn.Module, batch: Any) -> Tensor:
        x, y = batch[0], batch[1]
        return F.cross_entropy(model(x).float(), y, label_smoothing=label_smoothing)

    return loss_fn


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
