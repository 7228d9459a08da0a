"""The training entry points, kept importable from here; the engine lives in
:mod:`tucker_init.training` (one part per module).

Example::

    config = TrainConfig(steps=2000, lr=1e-3, warmup_steps=100, out_dir="runs/ft")
    result = finetune(model, train_loader, test_loader, config)
    result.final_eval["top1"]
"""

from .training import *  # noqa: F403 (the same public names)
from .training import __all__  # noqa: F401
