"""What a training run is: :class:`TrainConfig` (hyper-parameters and bookkeeping, validated
field by field), :class:`TrainResult` (what it returned) and :class:`NonFiniteLossError`."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..validation import as_int
from .distributed import DEVICES

__all__ = ["EvalFn", "LossFn", "NonFiniteLossError", "TrainConfig", "TrainResult"]

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
    "layer_decay",
    "ema_decay",
    "mixup",
    "cutmix",
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


_INT_FIELDS = (
    "steps",
    "batch_size",
    "warmup_steps",
    "seed",
    "log_every",
    "checkpoint_every",
    "eval_every",
    "max_steps",
)


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
        channels_last: keep the model and the image batches in ``torch.channels_last`` memory
            format (faster convolutions on GPUs with tensor cores; for CNNs).
        compile: ``torch.compile`` the model for the training steps with this backend
            (``"inductor"`` on a GPU; ``"aot_eager"`` traces without code generation); ``None``
            runs eagerly.
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
        layer_decay: layer-wise lr decay (timm's ``param_groups_layer_decay``: block ``i`` of
            ``n`` gets ``lr * layer_decay ** (n - i)``); the model must be a timm model with
            ``group_matcher``. ``None`` disables.
        ema_decay: keep a timm ``ModelEmaV3`` of the model with this decay; evaluations use it.
            ``None`` disables.
        mixup, cutmix: alphas of timm's ``Mixup`` for :func:`finetune` (0 disables each).
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
    channels_last: bool = False
    compile: str | None = None
    log_every: int = 50
    checkpoint_every: int = 0
    eval_every: int = 0
    out_dir: str | None = None
    max_time_s: float | None = None
    max_steps: int | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float | None = None
    ema_decay: float | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:  # numpy / torch integers become plain ints (checkpoints store plain values)
            value = as_int(getattr(self, name))
            if value is not None:
                setattr(self, name, value)
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
        for key in ("amp", "channels_last"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "a bool")
        if self.compile is not None and not (isinstance(self.compile, str) and self.compile):
            raise bad("compile", "a torch.compile backend name such as 'inductor', or None")
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
        for key in ("layer_decay", "ema_decay"):
            value = getattr(self, key)
            if value is not None and not (_is_number(value) and 0 < value < 1):
                raise bad(key, "a number in (0, 1) or None")
        for key in ("mixup", "cutmix"):
            if not (_is_number(getattr(self, key)) and getattr(self, key) >= 0):
                raise bad(key, "a number >= 0 (0 disables)")

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
    def field_defaults(cls) -> dict[str, Any]:
        """Default of every field that has one, as :meth:`to_dict` writes it."""
        defaults = {f.name: f.default for f in fields(cls) if f.default is not dataclasses.MISSING}
        return defaults | {"betas": list(defaults["betas"])}

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
        ema: the EMA copy of the model (``config.ema_decay``), which the evaluations used.
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
    ema: nn.Module | None = None

    @property
    def completed(self) -> bool:
        return self.stopped == "completed"

    def curve(self, metric: str = "top1") -> list[tuple[int, float]]:
        """``[(step, evals[i][metric]), ...]``."""
        return [(int(e["step"]), float(e[metric])) for e in self.evals if metric in e]
