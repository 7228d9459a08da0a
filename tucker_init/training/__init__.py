"""Training: the engine (:func:`train`, :func:`finetune`, :func:`train_step`) and its parts.

config.py        TrainConfig, TrainResult, NonFiniteLossError
optim.py         AdamW groups, warm-up + cosine schedule
batches.py       seeding, device transfer, autocast, endless batch streams
losses.py        classification / masked-image losses, evaluate()
checkpointer.py  restore / save of a run (exact resume), resume checks
metrics.py       JSON-lines metrics (and TensorBoard), progress bar
loop.py          the step loop
"""

from .batches import cycle_batches, seed_everything, to_device
from .checkpointer import Checkpointer, RunState, check_resume
from .config import EvalFn, LossFn, NonFiniteLossError, TrainConfig, TrainResult
from .loop import finetune, train, train_step
from .losses import classification_loss, evaluate, masked_image_loss
from .metrics import MetricsLogger
from .optim import WarmupCosine, build_optimizer, build_scheduler

__all__ = [
    "Checkpointer",
    "EvalFn",
    "LossFn",
    "MetricsLogger",
    "NonFiniteLossError",
    "RunState",
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
