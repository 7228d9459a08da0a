"""One run of an experiment: build a target, initialize it with a registered initializer, learn
its scalers where the method does, fine-tune it with the library's job (``pipeline.finetune_model``,
the ``small_finetune`` recipe) on the fixed images of :mod:`.data`."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from tucker_init import ImageDataset, InitReport, LearnConfig, get_initializer
from tucker_init.pipeline import ModelSpec, finetune_model, make_train_loader
from tucker_init.training import TrainResult, seed_everything

from .data import Splits
from .estimate import resolve_device

__all__ = ["finetune_classifier", "init_target", "learn_config"]


def learn_config(train: ImageDataset, batch_size: int, steps: int, seed: int, device: str) -> LearnConfig:
    """Scaler learning (``tucker_learned``, ``kronecker``) on the labelled training images."""
    loader = make_train_loader(train, batch_size, seed=seed)
    return LearnConfig(data=loader, steps=steps, progress=False, device=str(resolve_device(device)))


def init_target(
    spec: ModelSpec,
    method: str,
    source: Any,
    seed: int,
    *,
    seed_method: bool = False,
    reset_head: bool = False,
    **options: Any,
) -> tuple[nn.Module, InitReport]:
    """A model of ``spec`` built under ``seed`` (so the parts no source covers keep the same timm
    init under every method), then initialized by the registered initializer ``method`` from
    ``source`` with ``options`` (e.g. ``learn=``), and ``seed=seed`` too with ``seed_method``.
    ``reset_head``: the classifier keeps timm's init (a labelled source hands over no trained
    classifier)."""
    seed_everything(seed)
    model = spec.build()
    head = copy.deepcopy(model.get_classifier().state_dict()) if reset_head else None
    if seed_method:
        options["seed"] = seed
    model, report = get_initializer(method)(model, source, return_report=True, **options)
    if head is not None:
        model.get_classifier().load_state_dict(head)
    return model, report


def finetune_classifier(
    model: nn.Module,
    splits: Splits,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str = "auto",
    image_size: int = 32,
    eval_every: int = 0,
    layer_decay: float | None = None,
) -> TrainResult:
    """``pipeline.finetune_model`` with the ``small_finetune`` recipe (AdamW, 10 % warm-up + cosine,
    label smoothing 0.1) at ``lr`` on ``splits.train``, scored on ``splits.test`` (the same images
    for every run); with ``layer_decay``, timm's layer-wise lr decay on top (one lr for all without)."""
    return finetune_model(
        model,
        splits.train,
        test_data=splits.test,
        steps=steps,
        batch_size=batch_size,
        recipe="small_finetune",
        lr=lr,
        eval_every=eval_every,
        image_size=image_size,
        seed=seed,
        device=device,
        engine=None if layer_decay is None else {"layer_decay": layer_decay},
    )
