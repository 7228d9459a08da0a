"""Metrics of a run: losses gathered over a logging window, all-reduced once per window,
checked, and appended as JSON lines (optionally mirrored to TensorBoard); a progress bar."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from .config import NonFiniteLossError
from .distributed import DistInfo, all_reduce_mean, all_reduce_sum

__all__ = ["MetricsLogger", "prune_metrics"]


def prune_metrics(path: Path, step: int) -> None:
    """Drop records after ``step`` (logged by an interrupted run after its last checkpoint)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except (json.JSONDecodeError, AttributeError):
            continue  # a torn last line from a crash
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)


class MetricsLogger:
    """Collects per-step losses and writes one ``"train"`` record per window (``step, loss, lr,
    images_per_s, elapsed``) and ``"eval"`` records, on rank 0 only.

    Args:
        path: the JSON-lines file, or ``None`` to write nothing.
        tensorboard: a folder for a TensorBoard ``SummaryWriter`` beside the JSON lines, or ``None``.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        info: DistInfo,
        *,
        total_steps: int,
        start_step: int,
        elapsed_before: float,
        tensorboard: str | os.PathLike | None = None,
    ) -> None:
        self.info = info
        self.path = Path(path) if path is not None and info.is_main else None
        self.elapsed_before = elapsed_before
        self.history: list[dict[str, Any]] = []
        self.last_loss: float | None = None
        self._losses: list[Tensor] = []
        self._images = 0
        self._lr = 0.0
        self.started = self._window_start = time.perf_counter()
        self._tb = _summary_writer(tensorboard) if tensorboard is not None and info.is_main else None
        show = info.is_main and sys.stderr.isatty()
        self.bar = tqdm(total=total_steps, initial=start_step, disable=not show, dynamic_ncols=True, desc="train")

    def elapsed(self) -> float:
        """Wall-clock seconds of the whole run (earlier invocations included)."""
        return self.elapsed_before + time.perf_counter() - self.started

    def step(self, loss: Tensor, images: int, lr: float) -> None:
        """Record one optimizer step (no synchronization: ``loss`` stays on its device)."""
        self._losses.append(loss.detach().float().reshape(()))
        self._images += images
        self._lr = lr
        self.bar.update(1)

    def flush(self, step: int, good_checkpoint: Path | None) -> None:
        """All-reduce the window's losses (every rank calls this), check them, log them.

        Raises:
            NonFiniteLossError: a loss of the window was NaN / inf.
        """
        if not self._losses:
            return
        losses = all_reduce_mean(torch.stack(self._losses)).tolist()  # one sync per window
        first = step - len(losses) + 1
        for i, value in enumerate(losses):
            if not math.isfinite(value):
                raise NonFiniteLossError(first + i, value, good_checkpoint)
        now = time.perf_counter()
        device = self._losses[0].device  # NCCL cannot reduce CPU tensors
        images = float(all_reduce_sum(torch.tensor(float(self._images), device=device)).item())
        self.last_loss = sum(losses) / len(losses)
        record = {
            "step": step,
            "loss": self.last_loss,
            "lr": self._lr,
            "images_per_s": images / max(now - self._window_start, 1e-9),
            "elapsed": self.elapsed_before + now - self.started,
        }
        self.history.append(record)
        self.write({"kind": "train", **record})
        self.bar.set_postfix(loss=f"{self.last_loss:.4f}", lr=f"{self._lr:.2e}")
        self._losses, self._images, self._window_start = [], 0, now

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` to the JSON lines (and its numbers to TensorBoard)."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            kind = record.get("kind", "train")
            for key, value in record.items():
                if key not in ("kind", "step") and isinstance(value, int | float):
                    self._tb.add_scalar(f"{kind}/{key}", value, record["step"])

    def close(self) -> None:
        self.bar.close()
        if self._tb is not None:
            self._tb.close()


def _summary_writer(folder: str | os.PathLike) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # tensorboard is an optional extra
        raise ValueError("tensorboard= needs the tensorboard package: pip install 'tucker_init[tensorboard]'") from err
    return SummaryWriter(log_dir=str(folder))
