"""The training engine: :func:`train` runs ``loss_fn(model, batch)`` for a fixed number of
optimizer steps, as MAE's ``engine_pretrain.py`` does, with its other jobs in parts of their own:
the :class:`~.checkpointer.Checkpointer` (restore / save), the :class:`~.metrics.MetricsLogger`
and :func:`train_step` (one optimizer step, shared with ``initialize(learn=...)``).

It is reproducible (torch, numpy and ``random`` seeded from ``config.seed`` plus the rank; the
loader carries its own seed and position), resumable (``resume=True`` ends with the same
parameters as an uninterrupted run), safe (a non-finite loss raises
:class:`NonFiniteLossError` and the last good checkpoint is kept) and distributed (under
``torchrun`` the model is wrapped in DDP; only rank 0 shows progress and writes files).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .batches import autocast, batch_images, batch_stream, seed_everything, to_device
from .checkpointer import Checkpointer, RunState
from .config import EvalFn, LossFn, TrainConfig, TrainResult, _is_int
from .distributed import DistInfo, all_reduce_sum, init_distributed, wrap_ddp
from .losses import classification_loss, evaluate, make_mixup
from .metrics import MetricsLogger, prune_metrics
from .optim import build_optimizer, build_scheduler

__all__ = ["finetune", "train", "train_step"]


def train_step(
    model: nn.Module,
    batch: Any,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    amp: bool = True,
    grad_clip: float | None = None,
) -> Tensor:
    """One optimizer step on ``batch`` (already on ``device``); returns the detached loss.

    ``loss_fn(model, batch)`` runs under bf16 autocast on CUDA when ``amp``.

    Raises:
        TypeError: ``loss_fn`` did not return a scalar floating-point tensor.
    """
    with autocast(device, amp):
        loss = loss_fn(model, batch)
    if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        found = f"tensor of shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
        raise TypeError(f"loss_fn must return a scalar floating-point tensor, found {found}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return loss.detach()


def _check_args(model: Any, loss_fn: Any, config: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, found {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, found {type(config).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(model, batch), found {type(loss_fn).__name__}")
    config.validate()  # fields may have been changed since construction


def _check_loader(loader: Any, config: TrainConfig, info: DistInfo) -> int:
    """The run's total steps; the loader must match the job's processes and batch size."""
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
    steps_per_epoch = len(loader) if hasattr(loader, "__len__") else None
    if steps_per_epoch == 0:
        raise ValueError("loader has no batches (len(loader) == 0)")
    return config.total_steps(steps_per_epoch)


def _out_of_time(config: TrainConfig, info: DistInfo, step: int, started: float, device: torch.device) -> bool:
    """Whether the invocation's time budget is spent. Every rank must agree to stop at the same
    step: under DDP the clocks are compared (one collective) only at logging steps."""
    if config.max_time_s is None or (info.world_size > 1 and step % config.log_every):
        return False
    over = time.perf_counter() - started >= config.max_time_s
    if info.world_size > 1:
        over = bool(all_reduce_sum(torch.tensor(float(over), device=device)).item() > 0)
    return over


def _evaluate_now(model: nn.Module, eval_fn: EvalFn, step: int, device: torch.device) -> dict[str, Any]:
    """``{"step": step, **eval_fn(model)}`` in eval mode, without grad, without shifting the training RNG."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                metrics = dict(eval_fn(model))
        finally:
            model.train(was_training)
    # Tensors become numbers so the records are JSON (and weights_only) friendly.
    return {"step": step, **{k: v.item() if isinstance(v, Tensor) else v for k, v in metrics.items()}}


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
    tensorboard: str | os.PathLike | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``config.steps`` optimizer steps.

    Args:
        model: any module; it is moved to the run's device. Under torchrun (``WORLD_SIZE``
            > 1) it is wrapped in DDP for the loop (``loss_fn`` receives the wrapper).
        loader: yields batches; a :class:`~tucker_init.training.data.BatchLoader` (its
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
        tensorboard: also log the metrics to a TensorBoard folder (needs ``tensorboard``).

    Returns:
        A :class:`TrainResult`.

    Raises:
        NonFiniteLossError: the loss became NaN / inf (the last good checkpoint is kept).
        ValueError: bad config, loader not matching the config, or a checkpoint that does
            not match the config on resume.
    """
    _check_args(model, loss_fn, config)
    info = init_distributed(config.device)
    device = info.device
    total = _check_loader(loader, config, info)
    seed_everything(config.seed + info.rank)  # ranks differ (dropout); the loader shards the data
    model.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
    model.train()
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total)
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    ema = _model_ema(model, config)
    if ema is not None:
        parts["ema"] = ema
    checkpointer = Checkpointer(config.out_dir, info, config, total, job, parts, loader)
    state = checkpointer.restore() if resume else RunState()

    own_metrics = metrics_path is None and config.out_dir is not None  # the run's own file, not a shared one
    if own_metrics:
        metrics_path = Path(config.out_dir) / "metrics.jsonl"
        if resume and info.is_main and checkpointer.good is not None:
            prune_metrics(metrics_path, state.step)
    logger = MetricsLogger(
        metrics_path,
        info,
        total_steps=total,
        start_step=state.step,
        elapsed_before=state.elapsed_before,
        tensorboard=tensorboard,
    )
    run = _Run(
        model,
        _compiled(wrap_ddp(model, info, config.find_unused_parameters), config.compile),
        optimizer,
        scheduler,
        ema,
        config,
        info,
        total,
        state,
        checkpointer,
        logger,
    )
    try:
        stopped = _run_steps(run, batch_stream(loader, state.skip), loss_fn, eval_fn, before_step)
        written = checkpointer.save(state, logger.elapsed())
    finally:
        logger.close()
    done = stopped == "completed" and state.evals and state.evals[-1]["step"] == state.step
    return TrainResult(
        step=state.step,
        total_steps=total,
        loss=logger.last_loss,
        history=logger.history,
        evals=state.evals,
        final_eval=state.evals[-1] if done else None,
        stopped=stopped,
        elapsed_s=logger.elapsed(),
        checkpoint=written,
        ema=None if ema is None else ema.module,
    )


def _compiled(model: nn.Module, backend: str | None) -> nn.Module:
    """``torch.compile(model)`` for the training steps (the bare model keeps its parameter
    names for checkpoints and evaluation)."""
    return model if backend is None else torch.compile(model, backend=backend)


def _model_ema(model: nn.Module, config: TrainConfig) -> nn.Module | None:
    if config.ema_decay is None:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=config.ema_decay)


@dataclass
class _Run:
    """What the step loop works on."""

    model: nn.Module
    ddp_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any
    config: TrainConfig
    info: DistInfo
    total: int
    state: RunState
    checkpointer: Checkpointer
    logger: MetricsLogger

    def evaluate(self, eval_fn: EvalFn) -> None:
        """Evaluate (the EMA weights when kept), log and record the result."""
        evaluated = self.model if self.ema is None else self.ema.module
        record = _evaluate_now(evaluated, eval_fn, self.state.step, self.info.device)
        self.logger.write({"kind": "eval", **record})
        self.state.evals.append(record)

    def step(self, batch: Any, loss_fn: LossFn) -> None:
        """One optimizer step, the schedule, the EMA and the metrics."""
        lr = max(group["lr"] for group in self.optimizer.param_groups)  # the top layer's, with layer decay
        config = self.config
        loss = train_step(
            self.ddp_model,
            batch,
            loss_fn,
            self.optimizer,
            device=self.info.device,
            amp=config.amp,
            grad_clip=config.grad_clip,
        )
        self.scheduler.step()
        self.state.step += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.state.step)
        self.logger.step(loss, batch_images(batch), lr)


def _run_steps(
    run: _Run,
    stream: Any,
    loss_fn: LossFn,
    eval_fn: EvalFn | None,
    before_step: Callable[[int], None] | None,
) -> str:
    """The step loop; returns why it stopped: ``"completed"``, ``"max_steps"`` or ``"max_time"``."""
    config, state = run.config, run.state
    stop_at = min(run.total, config.max_steps) if config.max_steps is not None else run.total
    stopped = "completed"
    while state.step < stop_at:
        batch = to_device(next(stream), run.info.device, channels_last=config.channels_last)
        if before_step is not None:
            before_step(state.step)
        run.step(batch, loss_fn)
        step = state.step
        if _out_of_time(config, run.info, step, run.logger.started, run.info.device) and step < stop_at:
            stopped = "max_time"
        checkpoint_due = config.checkpoint_every > 0 and step % config.checkpoint_every == 0
        eval_due = eval_fn is not None and config.eval_every > 0 and step % config.eval_every == 0
        ending = step >= stop_at or stopped != "completed"
        if step % config.log_every == 0 or checkpoint_due or eval_due or ending:
            run.logger.flush(step, run.checkpointer.good)  # checks the losses before anything is evaluated or saved
        if eval_due:
            run.evaluate(eval_fn)  # type: ignore[arg-type]
        if ending:
            break
        if checkpoint_due:
            run.checkpointer.save(state, run.logger.elapsed())
    if state.step >= run.total:
        stopped = "completed"
        if eval_fn is not None and (not state.evals or state.evals[-1]["step"] != state.step):
            run.evaluate(eval_fn)
    elif stopped == "completed":
        stopped = "max_steps"
    run.logger.flush(state.step, run.checkpointer.good)
    return stopped


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
    tensorboard: str | os.PathLike | None = None,
) -> TrainResult:
    """Fine-tune a classifier: :func:`train` with cross-entropy (``config.label_smoothing``),
    evaluating on ``test_loader`` every ``config.eval_every`` steps and at the end (mixup / cutmix
    when the config asks for them); ``job`` and ``tensorboard`` as in :func:`train`.

    Returns:
        The :class:`TrainResult`; ``final_eval`` holds ``top1`` (percent) / ``loss`` on the
        test set and ``curve("top1")`` the accuracy-vs-steps curve.
    """

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return evaluate(m, test_loader, amp=config.amp)

    mixup = make_mixup(config, model, getattr(train_loader, "batch_size", None))
    return train(
        model,
        train_loader,
        classification_loss(config.label_smoothing, mixup=mixup),
        config,
        resume=resume,
        metrics_path=metrics_path,
        eval_fn=eval_fn,
        before_step=before_step,
        job=job,
        tensorboard=tensorboard,
    )
