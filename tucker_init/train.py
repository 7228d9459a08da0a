"""A generic, step-based training loop for pre-training and fine-tuning.

:func:`train` runs ``loss_fn(model, batch)`` for a fixed number of optimizer steps with
AdamW (no weight decay on 1-D parameters, biases and a timm model's ``no_weight_decay()``
names), a linear warm-up followed by a cosine decay to ``min_lr``, optional gradient
clipping and bf16 autocast on CUDA. It is

- reproducible: seeds torch, numpy and ``random`` from ``config.seed`` (plus the rank); the
  loader carries its own seed and position;
- resumable: checkpoints (``out_dir/last.pt``) hold everything needed to continue, and
  ``train(..., resume=True)`` ends with the same parameters as an uninterrupted run;
- safe: a non-finite loss raises :class:`NonFiniteLossError` and the last good checkpoint is
  never overwritten by a bad state;
- distributed: under ``torchrun`` the model is wrapped in DDP (see
  :mod:`tucker_init.distributed`); only rank 0 shows progress and writes files.

Pre-training uses :func:`masked_image_loss`, fine-tuning :func:`finetune` (cross-entropy,
evaluation every ``eval_every`` steps and at the end).

Example::

    config = TrainConfig(steps=2000, lr=1e-3, warmup_steps=100, out_dir="runs/ft")
    result = finetune(model, train_loader, test_loader, config)
    result.final_eval["top1"]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .checkpoint import LAST, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .distributed import (
    DEVICES,
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    all_reduce_sum,
    init_distributed,
    unwrap,
    wrap_ddp,
)

__all__ = [
    "LossFn",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "WarmupCosine",
    "build_optimizer",
    "build_scheduler",
    "classification_loss",
    "evaluate",
    "finetune",
    "masked_image_loss",
    "seed_everything",
    "train",
]

LossFn = Callable[[nn.Module, Any], Tensor]
EvalFn = Callable[[nn.Module], Mapping[str, float]]

# Fields that shape the optimization trajectory: a resumed run must agree on them. The others
# (device, logging, checkpoint cadence, time budget, ...) may change between invocations.
_TRAJECTORY_FIELDS = (
    "steps",
    "epochs",
    "batch_size",
    "lr",
    "min_lr",
    "weight_decay",
    "warmup_steps",
    "label_smoothing",
    "grad_clip",
    "seed",
    "betas",
)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped.

    Attributes:
        step: the (1-based) optimizer step whose loss was not finite.
        loss: that loss value.
        checkpoint: the last good checkpoint on disk, if any (it was not overwritten).
    """

    def __init__(self, step: int, loss: float, checkpoint: str | os.PathLike | None = None, what: str = "loss") -> None:
        self.step = step
        self.loss = loss
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        where = (
            f"the last good checkpoint {str(self.checkpoint)!r} was kept"
            if self.checkpoint is not None
            else "no checkpoint was written"
        )
        super().__init__(
            f"non-finite {what} ({loss}) at step {step}: training stopped and {where}. "
            "Lower lr, raise warmup_steps or set grad_clip."
        )


# -- configuration --------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TrainConfig:
    """Hyper-parameters and bookkeeping of one training run.

    Attributes:
        steps: optimizer steps of the whole run; exactly one of ``steps`` / ``epochs``.
        epochs: length in epochs of the loader (``ceil(epochs * len(loader))`` steps).
        batch_size: global batch size (all ranks together); when given it is checked
            against the loader (``loader.batch_size * world_size``).
        lr: peak learning rate, reached at the end of the warm-up.
        min_lr: learning rate at the end of the cosine decay (``0 <= min_lr <= lr``).
        weight_decay: AdamW decoupled weight decay (not applied to 1-D parameters / biases).
        warmup_steps: linear warm-up steps (``lr * (s + 1) / warmup_steps`` at step ``s``).
        label_smoothing: for :func:`classification_loss` / :func:`finetune`.
        grad_clip: clip the global gradient norm to this value; ``None`` disables.
        seed: seeds torch, numpy and ``random`` (rank ``r`` uses ``seed + r``).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        amp: bf16 autocast on CUDA (ignored on CPU).
        log_every: steps between logged metrics (and non-finite-loss checks).
        checkpoint_every: steps between checkpoints in ``out_dir``; 0 = only at the end of
            the invocation (completed, ``max_steps`` or ``max_time_s``).
        eval_every: steps between calls of ``eval_fn``; 0 = only at the end of the run.
        out_dir: where ``last.pt`` (and by default ``metrics.jsonl``) go; ``None`` writes
            nothing.
        max_time_s: wall-clock budget of this invocation; when spent, a checkpoint is written
            and ``train`` returns (resume later with ``resume=True``).
        max_steps: stop this invocation once this many steps of the run are done (the
            schedule still spans ``steps``), e.g. to split a run over several jobs.
        betas: AdamW betas.
        find_unused_parameters: passed to DDP; needed when some parameters get no gradient
            (e.g. a classification head during masked-image pre-training).
    """

    steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None
    lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    log_every: int = 50
    checkpoint_every: int = 0
    eval_every: int = 0
    out_dir: str | None = None
    max_time_s: float | None = None
    max_steps: int | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.out_dir, os.PathLike):
            self.out_dir = os.fspath(self.out_dir)
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError (naming the field) for any out-of-range value."""

        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"{name} must be {expected}, found {getattr(self, name)!r}")

        if (self.steps is None) == (self.epochs is None):
            raise ValueError(
                f"steps / epochs: exactly one must be set, found steps={self.steps!r}, epochs={self.epochs!r}"
            )
        if self.steps is not None and not (_is_int(self.steps) and self.steps > 0):
            raise bad("steps", "a positive int")
        if self.epochs is not None and not (_is_number(self.epochs) and self.epochs > 0):
            raise bad("epochs", "a positive number")
        if self.batch_size is not None and not (_is_int(self.batch_size) and self.batch_size > 0):
            raise bad("batch_size", "a positive int or None")
        if not (_is_number(self.lr) and self.lr > 0):
            raise bad("lr", "a positive finite number")
        if not (_is_number(self.min_lr) and 0 <= self.min_lr <= self.lr):
            raise bad("min_lr", f"a number in [0, lr={self.lr}]")
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            raise bad("weight_decay", "a finite number >= 0")
        if not (_is_int(self.warmup_steps) and self.warmup_steps >= 0):
            raise bad("warmup_steps", "an int >= 0")
        if self.steps is not None and self.warmup_steps > self.steps:
            raise bad("warmup_steps", f"at most steps={self.steps}")
        if not (_is_number(self.label_smoothing) and 0 <= self.label_smoothing < 1):
            raise bad("label_smoothing", "a number in [0, 1)")
        if self.grad_clip is not None and not (_is_number(self.grad_clip) and self.grad_clip > 0):
            raise bad("grad_clip", "a positive number or None")
        if not (_is_int(self.seed) and self.seed >= 0):
            raise bad("seed", "an int >= 0")
        name = self.device.split(":")[0] if isinstance(self.device, str) else None
        if name not in DEVICES or (isinstance(self.device, str) and ":" in self.device and name != "cuda"):
            raise bad("device", f"one of {list(DEVICES)} (or 'cuda:N')")
        if not isinstance(self.amp, bool):
            raise bad("amp", "a bool")
        for key in ("log_every",):
            if not (_is_int(getattr(self, key)) and getattr(self, key) > 0):
                raise bad(key, "a positive int")
        for key in ("checkpoint_every", "eval_every"):
            if not (_is_int(getattr(self, key)) and getattr(self, key) >= 0):
                raise bad(key, "an int >= 0 (0 disables)")
        if self.out_dir is not None and not isinstance(self.out_dir, str):
            raise bad("out_dir", "a path or None")
        if self.max_time_s is not None and not (_is_number(self.max_time_s) and self.max_time_s > 0):
            raise bad("max_time_s", "a positive number or None")
        if self.max_steps is not None and not (_is_int(self.max_steps) and self.max_steps > 0):
            raise bad("max_steps", "a positive int or None")
        if not (
            isinstance(self.betas, tuple)
            and len(self.betas) == 2
            and all(_is_number(b) and 0 <= b < 1 for b in self.betas)
        ):
            raise bad("betas", "two numbers in [0, 1)")

    def total_steps(self, steps_per_epoch: int | None = None) -> int:
        """Steps of the whole run (``steps``, or ``ceil(epochs * steps_per_epoch)``)."""
        if self.steps is not None:
            return self.steps
        if not steps_per_epoch:
            raise ValueError("config.epochs needs a loader with a length (len(loader) > 0); set steps instead")
        total = math.ceil(self.epochs * steps_per_epoch)  # type: ignore[operator]
        if self.warmup_steps > total:
            raise ValueError(f"warmup_steps must be at most the run's {total} steps, found {self.warmup_steps}")
        return total

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (stored in checkpoints, readable with ``weights_only=True``)."""
        data = asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        step: steps done in the whole run so far.
        total_steps: steps of the whole run.
        loss: mean loss of the last logged window (``None`` if nothing was logged).
        history: train records logged by this invocation (``step, loss, lr, images_per_s,
            elapsed``).
        evals: ``{"step": s, **eval_fn(model)}`` for every evaluation of the run (including
            those before a resume): the accuracy-vs-steps curve of :func:`finetune`.
        final_eval: the evaluation at the end of the run (``None`` if the run stopped early
            or no ``eval_fn`` was given).
        stopped: ``"completed"``, ``"max_steps"`` or ``"max_time"``.
        elapsed_s: wall-clock seconds of the whole run (all invocations).
        checkpoint: the last checkpoint written (``None`` without ``out_dir``).
    """

    step: int
    total_steps: int
    loss: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    final_eval: dict[str, Any] | None = None
    stopped: str = "completed"
    elapsed_s: float = 0.0
    checkpoint: Path | None = None

    @property
    def completed(self) -> bool:
        return self.stopped == "completed"

    def curve(self, metric: str = "top1") -> list[tuple[int, float]]:
        """``[(step, evals[i][metric]), ...]``."""
        return [(int(e["step"]), float(e[metric])) for e in self.evals if metric in e]


# -- building blocks --------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python ``random``, numpy and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    decayed (1-D parameters such as norms and biases, and ``no_weight_decay()`` names)."""
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


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested tuple / list / dict) batch to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _batch_images(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple) and batch:
        return _batch_images(batch[0])
    return 0


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
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


def _batch_stream(loader: Iterable[Any], skip: int) -> Iterator[Any]:
    """Batches across epochs. Loaders with ``infinite()`` (BatchLoader) are used as they
    are; others are re-iterated each epoch, skipping ``skip`` batches (resume without a
    loader ``state_dict``, exact for a deterministic loader)."""
    stream = loader.infinite() if callable(getattr(loader, "infinite", None)) else cycle_batches(loader)
    for _ in range(skip):
        next(stream)
    return stream


# -- losses and evaluation --------------------------------------------------------------------------
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
            with _autocast(device, amp):
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


# -- the loop ---------------------------------------------------------------------------------------
def _check_loader(loader: Any, config: TrainConfig, info: DistInfo) -> None:
    world = getattr(loader, "world_size", None)
    if _is_int(world) and world != info.world_size:
        raise ValueError(
            f"loader was built for world_size={world} but the job has {info.world_size} process(es); "
            "build it with rank=info.rank, world_size=info.world_size"
        )
    local = getattr(loader, "batch_size", None)
    if config.batch_size is not None and _is_int(local) and local * info.world_size != config.batch_size:
        raise ValueError(
            f"batch_size={config.batch_size} (global) does not match the loader: {local} per process x "
            f"{info.world_size} process(es) = {local * info.world_size}"
        )


def _plain_job(job: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``job`` as plain JSON values (tuples become lists), so a stored and a fresh one compare."""
    if job is None:
        return None
    if not isinstance(job, Mapping):
        raise TypeError(f"job must be a mapping of plain values or None, found {type(job).__name__}")
    try:
        return json.loads(json.dumps(dict(job)))
    except (TypeError, ValueError) as err:
        raise TypeError(f"job must hold plain JSON values (numbers, strings, lists, dicts, None): {err}") from err


def _job_diff(saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> list[str]:
    """``"field: checkpoint X, now Y"`` for every field of the jobs that differs (both must be set)."""
    if saved is None or current is None:
        return []  # checkpoints of older versions, or runs that record no job
    if saved.get("kind") != current.get("kind"):  # another kind of job: the rest cannot match anyway
        return [f"kind: checkpoint {saved.get('kind')!r}, now {current.get('kind')!r}"]
    keys = list(current) + [k for k in saved if k not in current]
    return [f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


def _check_resume(
    saved: Mapping[str, Any], config: TrainConfig, total: int, path: Path, job: Mapping[str, Any] | None = None
) -> None:
    """Refuse to resume from ``saved`` when the config's trajectory fields, the job (data set,
    model, ranks, ...: see :func:`train`'s ``job``) or the planned steps differ."""
    current = config.to_dict()
    saved_cfg = saved.get("config", {})

    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    diff = _job_diff(saved.get("job"), _plain_job(job))
    if not diff or not diff[0].startswith("kind:"):
        diff += [
            f"{k}: checkpoint {saved_cfg.get(k)!r}, now {current[k]!r}"
            for k in _TRAJECTORY_FIELDS
            if norm(saved_cfg.get(k)) != norm(current[k])
        ]
    if diff:
        raise ValueError(f"cannot resume from {str(path)!r}: the config differs in " + "; ".join(diff))
    if saved.get("total_steps") != total:
        raise ValueError(
            f"cannot resume from {str(path)!r}: it plans {saved.get('total_steps')} steps, this run {total} "
            "(did the loader length change?)"
        )


def _params_finite(model: nn.Module) -> bool:
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def _prune_metrics(path: Path, step: int) -> None:
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


def train(
    model: nn.Module,
    loader: Iterable[Any],
    loss_fn: LossFn,
    config: TrainConfig,
    *,
    resume: bool = False,
    metrics_path: str | os.PathLike | None = None,
    eval_fn: EvalFn | None = None,
    before_step: Callable[[int], None] | None = None,
    job: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``config.steps`` optimizer steps.

    Args:
        model: any module; it is moved to the run's device. Under torchrun (``WORLD_SIZE``
            > 1) it is wrapped in DDP for the loop (``loss_fn`` receives the wrapper).
        loader: yields batches; a :class:`~tucker_init.data.BatchLoader` (its
            ``infinite()`` and ``state_dict()`` give exact resume), or any re-iterable.
            Under torchrun each rank's loader must hold its shard (``rank``/``world_size``).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``, batch already on the device,
            called under bf16 autocast on CUDA when ``config.amp``.
        config: the :class:`TrainConfig`.
        resume: continue from ``config.out_dir/last.pt`` (model, optimizer, schedule, step,
            RNG, loader position); starts from scratch, with a warning, if there is none.
        metrics_path: JSON-lines file that train (``"kind": "train"``) and eval records are
            appended to; defaults to ``out_dir/metrics.jsonl`` when ``out_dir`` is set (on
            resume, that default file loses the records logged after the checkpoint, which
            are logged again, so each step appears once).
        eval_fn: ``eval_fn(model) -> {name: value}``, called on every rank (with the bare
            model, in eval mode, without grad) every ``config.eval_every`` steps and at the
            end of the run; it does not disturb the training RNG.
        before_step: called with the 0-based index of each optimizer step before its
            forward pass, e.g. ``WidthScaling.set_step`` (its masks depend only on the seed
            and the step, so a resumed run draws the same ones).
        job: what the run is about beyond ``config`` (kind of job, model, data set and its
            fingerprint, ...; plain JSON values), stored in the checkpoint under ``"job"``; a
            resume whose job differs from the stored one in any field is refused.

    Returns:
        A :class:`TrainResult`.

    Raises:
        NonFiniteLossError: the loss became NaN / inf (the last good checkpoint is kept).
        ValueError: bad config, loader not matching the config, or a checkpoint that does
            not match the config on resume.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, found {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, found {type(config).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(model, batch), found {type(loss_fn).__name__}")
    config.validate()  # fields may have been changed since construction
    job = _plain_job(job)
    info = init_distributed(config.device)
    device = info.device
    steps_per_epoch = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    if steps_per_epoch == 0:
        raise ValueError("loader has no batches (len(loader) == 0)")
    total = config.total_steps(steps_per_epoch)
    _check_loader(loader, config, info)

    out_dir = Path(config.out_dir) if config.out_dir is not None else None
    ckpt_path = out_dir / LAST if out_dir is not None else None
    own_metrics = metrics_path is None and out_dir is not None  # the run's own file, not a shared one
    if own_metrics:
        metrics_path = out_dir / "metrics.jsonl"
    metrics_file = Path(metrics_path) if metrics_path is not None and info.is_main else None

    seed_everything(config.seed + info.rank)  # ranks differ (dropout); the loader shards the data
    model.to(device)
    model.train()
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total)

    step, elapsed_before, evals = 0, 0.0, []
    skip = 0
    if resume:
        if ckpt_path is None:
            raise ValueError("resume=True needs config.out_dir (the checkpoint is out_dir/last.pt), found None")
        if ckpt_path.is_file():
            ckpt = load_checkpoint(ckpt_path)
            _check_resume(ckpt, config, total, ckpt_path, job)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            step = int(ckpt["step"])
            elapsed_before = float(ckpt.get("elapsed", 0.0))
            evals = list(ckpt.get("evals", []))
            states = ckpt["rng"]
            if len(states) == info.world_size:
                restore_rng_state(states[info.rank])
            else:
                warnings.warn(
                    f"checkpoint was written by {len(states)} process(es), this job has {info.world_size}: "
                    "RNG states re-seeded, the run will not be bit-identical",
                    stacklevel=2,
                )
                seed_everything(config.seed + info.rank + 1_000_003 * step)
            if ckpt.get("loader") is not None and callable(getattr(loader, "load_state_dict", None)):
                loader.load_state_dict(ckpt["loader"])  # type: ignore[attr-defined]
            else:
                skip = step
            if metrics_file is not None and own_metrics:
                _prune_metrics(metrics_file, step)
        else:
            warnings.warn(f"resume=True but {str(ckpt_path)!r} does not exist: starting from step 0", stacklevel=2)

    ddp_model = wrap_ddp(model, info, config.find_unused_parameters)
    stream = _batch_stream(loader, skip)
    stop_at = min(total, config.max_steps) if config.max_steps is not None else total
    good_ckpt: Path | None = ckpt_path if ckpt_path is not None and ckpt_path.is_file() else None

    def write_metrics(record: dict[str, Any]) -> None:
        if metrics_file is not None:
            metrics_file.parent.mkdir(parents=True, exist_ok=True)
            with metrics_file.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def run_eval() -> dict[str, Any]:
        assert eval_fn is not None
        fork_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):  # evaluation must not shift training RNG
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    metrics = dict(eval_fn(model))
            finally:
                model.train(was_training)
        # Tensors become numbers so the records are JSON (and weights_only) friendly.
        record = {"step": step, **{k: v.item() if isinstance(v, Tensor) else v for k, v in metrics.items()}}
        write_metrics({"kind": "eval", **record})
        return record

    def save() -> Path | None:
        nonlocal good_ckpt
        if ckpt_path is None:
            return None
        if not _params_finite(model):
            raise NonFiniteLossError(step, float("nan"), good_ckpt, what="parameters")
        rng = all_gather_objects(capture_rng_state())  # collective: every rank takes part
        if info.is_main:
            save_checkpoint(
                ckpt_path,
                model=unwrap(model).state_dict(),
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                step=step,
                total_steps=total,
                rng=rng,
                loader=loader.state_dict() if callable(getattr(loader, "state_dict", None)) else None,  # type: ignore[attr-defined]
                config=config.to_dict(),
                job=job,
                world_size=info.world_size,
                evals=evals,
                elapsed=elapsed_before + time.perf_counter() - t0,
            )
        good_ckpt = ckpt_path
        return ckpt_path

    history: list[dict[str, Any]] = []
    window_losses: list[Tensor] = []
    window_images = 0
    window_lr = 0.0
    last_loss: float | None = None
    stopped = "completed"
    t0 = time.perf_counter()
    window_t = t0
    show = info.is_main and sys.stderr.isatty()
    bar = tqdm(total=total, initial=step, disable=not show, dynamic_ncols=True, desc="train")

    def flush() -> None:
        """All-reduce the window's losses, check them, log them."""
        nonlocal window_losses, window_images, window_t, last_loss
        if not window_losses:
            return
        losses = all_reduce_mean(torch.stack(window_losses)).tolist()  # one sync per window
        first = step - len(losses) + 1
        for i, value in enumerate(losses):
            if not math.isfinite(value):
                raise NonFiniteLossError(first + i, value, good_ckpt)
        now = time.perf_counter()
        # On the run's device: NCCL cannot reduce CPU tensors.
        images = float(all_reduce_sum(torch.tensor(float(window_images), device=device)).item())
        last_loss = sum(losses) / len(losses)
        record = {
            "step": step,
            "loss": last_loss,
            "lr": window_lr,
            "images_per_s": images / max(now - window_t, 1e-9),
            "elapsed": elapsed_before + now - t0,
        }
        history.append(record)
        write_metrics({"kind": "train", **record})
        bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{window_lr:.2e}")
        window_losses, window_images, window_t = [], 0, now

    try:
        while step < stop_at:
            batch = to_device(next(stream), device)
            if before_step is not None:
                before_step(step)
            window_lr = optimizer.param_groups[0]["lr"]
            with _autocast(device, config.amp):
                loss = loss_fn(ddp_model, batch)
            if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.is_floating_point():
                found = f"tensor of shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
                raise TypeError(f"loss_fn must return a scalar floating-point tensor, found {found}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            window_losses.append(loss.detach().float().reshape(()))
            window_images += _batch_images(batch)
            bar.update(1)

            # Every rank must agree to stop at the same step: under DDP the clocks are compared
            # (one collective) only at logging steps, not every step.
            if config.max_time_s is not None and (info.world_size == 1 or step % config.log_every == 0):
                over = time.perf_counter() - t0 >= config.max_time_s
                if info.world_size > 1:
                    over = bool(all_reduce_sum(torch.tensor(float(over), device=device)).item() > 0)
                if over and step < stop_at:
                    stopped = "max_time"
            checkpoint_due = config.checkpoint_every > 0 and step % config.checkpoint_every == 0
            eval_due = eval_fn is not None and config.eval_every > 0 and step % config.eval_every == 0
            ending = step >= stop_at or stopped != "completed"
            if step % config.log_every == 0 or checkpoint_due or eval_due or ending:
                flush()  # checks the losses before anything is evaluated or saved
            if eval_due:
                evals.append(run_eval())
            if ending:
                break
            if checkpoint_due:
                save()
        if step >= total:
            stopped = "completed"
            if eval_fn is not None and (not evals or evals[-1]["step"] != step):
                evals.append(run_eval())
        elif stopped == "completed":
            stopped = "max_steps"
        flush()
        written = save()
    finally:
        bar.close()
    final_eval = evals[-1] if stopped == "completed" and evals and evals[-1]["step"] == step else None
    return TrainResult(
        step=step,
        total_steps=total,
        loss=last_loss,
        history=history,
        evals=evals,
        final_eval=final_eval,
        stopped=stopped,
        elapsed_s=elapsed_before + time.perf_counter() - t0,
        checkpoint=written,
    )


def finetune(
    model: nn.Module,
    train_loader: Iterable[Any],
    test_loader: Iterable[Any],
    config: TrainConfig,
    *,
    resume: bool = False,
    metrics_path: str | os.PathLike | None = None,
    before_step: Callable[[int], None] | None = None,
    job: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Fine-tune a classifier: :func:`train` with cross-entropy (``config.label_smoothing``),
    evaluating on ``test_loader`` every ``config.eval_every`` steps and at the end; ``job`` as in
    :func:`train`.

    Returns:
        The :class:`TrainResult`; ``final_eval`` holds ``top1`` (percent) / ``loss`` on the
        test set and ``curve("top1")`` the accuracy-vs-steps curve.
    """

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return evaluate(m, test_loader, amp=config.amp)

    return train(
        model,
        train_loader,
        classification_loss(config.label_smoothing),
        config,
        resume=resume,
        metrics_path=metrics_path,
        eval_fn=eval_fn,
        before_step=before_step,
        job=job,
    )
