"""The training entry points, kept importable from here; the engine lives in
:mod:`tucker_init.training` (one part per module).

Example::

    config = TrainConfig(steps=2000, lr=1e-3, warmup_steps=100, out_dir="runs/ft")
    result = finetune(model, train_loader, test_loader, config)
    result.final_eval["top1"]
"""

from .training import (
    EvalFn,
    LossFn,
    NonFiniteLossError,
    TrainConfig,
    TrainResult,
    WarmupCosine,
    build_optimizer,
    build_scheduler,
    check_resume,
    classification_loss,
    cycle_batches,
    evaluate,
    finetune,
    masked_image_loss,
    seed_everything,
    to_device,
    train,
    train_step,
)

__all__ = [
    "EvalFn",
    "LossFn",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "WarmupCosine",
    "build_optimizer",
    "build_scheduler",
    "check_resume",
    "classification_loss",
    "cycle_batches",
    "evaluate",
    "finetune",
    "masked_image_loss",
    "seed_everything",
    "to_device",
    "train",
    "train_step",
]
