"""Batches on their way to the model: seeding, device transfer, autocast, endless streams."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["autocast", "batch_images", "batch_stream", "cycle_batches", "seed_everything", "to_device"]


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, numpy and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: Any, device: torch.device, *, channels_last: bool = False) -> Any:
    """Move every tensor of a (nested tuple / list / dict) batch to ``device`` (asynchronously
    from pinned memory); with ``channels_last``, 4-D tensors (images) change memory format too."""
    if isinstance(batch, Tensor):
        if channels_last and batch.ndim == 4:
            return batch.to(device, non_blocking=True, memory_format=torch.channels_last)
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, channels_last=channels_last) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device, channels_last=channels_last) for v in batch)
    return batch


def batch_images(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple) and batch:
        return batch_images(batch[0])
    return 0


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cycle_batches(loader: Iterable[Any], name: str = "loader") -> Iterator[Any]:
    """Re-iterate ``loader`` forever; a ValueError naming ``name`` if it yields nothing."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"{name} yielded no batches")


def batch_stream(loader: Iterable[Any], skip: int) -> Iterator[Any]:
    """Batches across epochs. Loaders with ``infinite()`` (BatchLoader) are used as they
    are; others are re-iterated each epoch, skipping ``skip`` batches (resume without a
    loader ``state_dict``, exact for a deterministic loader)."""
    stream = loader.infinite() if callable(getattr(loader, "infinite", None)) else cycle_batches(loader)
    for _ in range(skip):
        next(stream)
    return stream
