"""The ``learn`` rule of :func:`~tucker_init.initialize` (DESIGN.md 1.4): the target's scalers,
resized from the template's, are trained for a short budget with the template core and the
remainder frozen, on a copy of the target; the dense weights are written afterwards.

``learn`` starts from the resizing rules ``interpolate`` (depth) and ``slice`` (width) and trains
the scalers whose rule is ``learn`` (X for depth, U and V for width; Kronecker S for either), or
all of them when neither rule is.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..templates.factorized import FactorizedModel, master_dtype
from ..templates.template import WeightTemplate
from ..training import cycle_batches, to_device, train_step
from ..validation import as_int, check_choice
from .plan import ResizePlan, source_tensors
from .remainder import map_remainder
from .report import init_state
from .target_weights import resized_factors

__all__ = [
    "DEFAULT_LEARN_EPOCHS",
    "LEARN_OBJECTIVES",
    "LOSS_INPUTS",
    "LearnConfig",
    "Learned",
    "learn_scalers",
    "starting_rules",
]

DEFAULT_LEARN_EPOCHS = 0.16  # SWEET learns new scalers for ~0.16 epoch of the target's data
LOSS_INPUTS = ("output", "model")
LEARN_OBJECTIVES = ("labels", "mae")


@dataclass
class LearnConfig:
    """Budget and data for learning new scalers (template and remainder frozen).

    Attributes:
        data: iterable of batches ``(x float (B, 3, H, W), y int64 (B,))``, re-iterated when
            exhausted; needs ``__len__`` (batches per epoch) when ``epochs`` is used.
        steps: number of optimizer steps; or
        epochs: a budget in (fractions of) epochs, ``steps = max(1, round(epochs * len(data)))``.
            Give at most one of ``steps`` / ``epochs``; with neither, ``epochs=0.16``, the
            budget SWEET uses.
        lr: Adam learning rate for the scalers.
        loss: ``loss(output, batch) -> scalar`` (``loss_on="output"``, output = ``model(x)``) or
            ``loss(model, batch) -> scalar`` (``loss_on="model"``; ``model`` is the
            :class:`~tucker_init.FactorizedModel`, callable like the target and with ``.call``).
            Default: cross-entropy of the target's logits against ``y``.
        loss_on: ``"output"`` or ``"model"``, see ``loss``.
        objective: ``"labels"`` (``loss`` above, by default cross-entropy) or ``"mae"``: the
            masked-image loss on the images alone (labels, if any, ignored), through a fresh
            MAE decoder trained with the scalers, for targets whose data has no labels.
        progress: show a tqdm progress bar.
        device: where to train; default the target's device.
    """

    data: Iterable[Any]
    steps: int | None = None
    epochs: float | None = None
    lr: float = 1e-3
    loss: Callable[..., Tensor] | None = None
    loss_on: str = "output"
    objective: str = "labels"
    progress: bool = True
    device: str | torch.device | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.data, Iterable):
            raise ValueError(f"learn.data must be an iterable of (x, y) batches, found {type(self.data).__name__}")
        self._check_budget()
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"learn.lr must be a positive finite number, found {self.lr!r}")
        if self.loss is not None and not callable(self.loss):
            raise ValueError(f"learn.loss must be callable or None, found {type(self.loss).__name__}")
        check_choice("learn.loss_on", self.loss_on, LOSS_INPUTS)
        if self.loss_on == "model" and self.loss is None:
            raise ValueError("learn.loss_on='model' needs learn.loss(model, batch) -> scalar, found loss=None")
        check_choice("learn.objective", self.objective, LEARN_OBJECTIVES)
        if self.objective == "mae" and self.loss is not None:
            raise ValueError("learn.objective='mae' has its own loss: leave learn.loss at None")

    def _check_budget(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise ValueError(
                f"learn takes one budget: steps (int > 0) or epochs (float > 0; default {DEFAULT_LEARN_EPOCHS}), "
                f"found steps={self.steps!r}, epochs={self.epochs!r}"
            )
        if self.steps is None and self.epochs is None:
            self.epochs = DEFAULT_LEARN_EPOCHS
        if self.steps is not None:
            steps = as_int(self.steps)
            if steps is None or steps < 1:
                raise ValueError(f"learn.steps must be a positive int, found {self.steps!r}")
            self.steps = steps
        if self.epochs is not None:
            if isinstance(self.epochs, bool) or not isinstance(self.epochs, int | float) or not self.epochs > 0:
                raise ValueError(f"learn.epochs must be a positive number, found {self.epochs!r}")
            if not hasattr(self.data, "__len__"):
                raise ValueError(
                    "learn.epochs needs len(learn.data) (batches per epoch); "
                    f"{type(self.data).__name__} has no __len__: pass steps instead"
                )
            if len(self.data) < 1:  # type: ignore[arg-type]
                raise ValueError("learn.data must hold at least one batch, found len(data) == 0")

    @property
    def num_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, round(self.epochs * len(self.data)))  # type: ignore[arg-type, operator]

    @classmethod
    def coerce(cls, value: LearnConfig | Mapping[str, Any] | None) -> LearnConfig | None:
        """Accept a LearnConfig, a dict of its fields, or None."""
        if value is None or isinstance(value, LearnConfig):
            return value
        if isinstance(value, Mapping):
            known = [f.name for f in fields(cls)]
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise ValueError(f"learn has unknown key(s) {unknown}; expected keys from {known}")
            if "data" not in value:
                raise ValueError("learn must give 'data': an iterable of (x, y) batches")
            return cls(**value)
        raise ValueError(f"learn must be a LearnConfig, a dict or None, found {type(value).__name__}")


def starting_rules(depth: str, width: str) -> tuple[str, str]:
    """The resizing rules that ``learn`` starts from: ``interpolate`` for depth, ``slice`` for width."""
    return ("interpolate" if depth == "learn" else depth, "slice" if width == "learn" else width)


def _trainable_scalers(depth: str, width: str) -> set[str]:
    """Scalers a learned run trains: those whose rule is "learn" (Kronecker S for either), or all."""
    trainable = set()
    if depth == "learn":
        trainable |= {"X", "S"}
    if width == "learn":
        trainable |= {"U", "V", "S"}
    return trainable or {"X", "U", "V", "S"}


def _learn_loss(learn: LearnConfig) -> Callable[[nn.Module, Any], Tensor]:
    """``loss_fn(model, batch)`` of a learned run: ``learn.loss`` on the model, on its output, or
    cross-entropy of ``(x, y)`` batches."""

    def loss_fn(model: nn.Module, batch: Any) -> Tensor:
        if learn.loss_on == "model":
            return learn.loss(model, batch)  # type: ignore[misc]
        if not (isinstance(batch, tuple | list) and len(batch) >= 2):
            raise ValueError(f"learn.data must yield (x, y) batches for the default loss, found {type(batch).__name__}")
        output = model(batch[0])
        return learn.loss(output, batch) if learn.loss is not None else F.cross_entropy(output, batch[1])

    return loss_fn


def _masked_objective(fm: FactorizedModel, batch: Any, device: torch.device) -> tuple[nn.Module, Callable]:
    """The masked-image objective around ``fm`` with a fresh decoder (template files hold none),
    and its loss."""
    from ..objectives.mae import masked_model_for
    from ..training import masked_image_loss

    images = batch[0] if isinstance(batch, tuple | list) else batch
    return masked_model_for(fm, image_size=images.shape[-1]).to(device), masked_image_loss


def _learn(fm: FactorizedModel, learn: LearnConfig, trainable: set[str], device: torch.device) -> list[float]:
    """Adam on the chosen scalers, one :func:`~tucker_init.training.train_step` per batch;
    returns the loss per step."""
    from tqdm.auto import tqdm

    fm.to(device)
    for p in fm.parameters():
        p.requires_grad_(False)
    params = [p for group in fm.scalers.values() for key, p in group.items() if key in trainable]
    for p in params:
        p.requires_grad_(True)
    model, loss_fn = fm, _learn_loss(learn)
    batches = cycle_batches(learn.data, name="learn.data")
    if learn.objective == "mae":
        first = next(batches)
        batches = itertools.chain([first], batches)
        model, loss_fn = _masked_objective(fm, first, device)
        params += [p for name, p in model.named_parameters() if not name.startswith("encoder.")]
    optimizer = torch.optim.Adam(params, lr=learn.lr)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(learn.num_steps), desc="learn scalers", disable=not learn.progress, leave=False)
    for step in bar:
        loss = train_step(model, to_device(next(batches), device), loss_fn, optimizer, device=device, amp=False)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at step {step}; lower learn.lr (now {learn.lr})")
        losses.append(float(loss))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    return losses


class Learned(NamedTuple):
    """A learned run: the target as a factorized model (its scalers trained), the loss per step
    and the scaler names that were trained."""

    model: FactorizedModel
    losses: list[float]
    trained: list[str]


def learn_scalers(
    template: WeightTemplate,
    target: nn.Module,
    plan: ResizePlan,
    learn: LearnConfig,
    *,
    depth: str,
    width: str,
    seed: int = 0,
) -> Learned:
    """Train the target's scalers, resized from ``template`` by ``plan``, on ``learn``.

    The target is not modified: a copy of it holds the mapped remainder inside a
    :class:`~tucker_init.FactorizedModel` whose template (frozen) and scalers are the template's
    resized ones, in the target's dtype (at least float32, so the backbone can be called).

    Args:
        depth, width: :func:`~tucker_init.initialize`'s rules (``learn`` picks what trains).
    """
    state = init_state(target)
    source = source_tensors(template)
    factors, scalers = resized_factors(plan, source, master_dtype(state.values()), seed)
    working = copy.deepcopy(target)
    remainder = map_remainder(plan.remainder, source.state, state, target, plan.adapter)
    with torch.no_grad():
        working_state = init_state(working)
        for name, value in remainder.items():
            working_state[name].copy_(value)
    fm = FactorizedModel(working, plan.target_layout, plan.config, factors, scalers, plan.adapter)
    trainable = _trainable_scalers(depth, width)
    device = learn.device if learn.device is not None else next(iter(state.values())).device
    losses = _learn(fm, learn, trainable, torch.device(device))
    return Learned(fm, losses, sorted(trainable & set(scalers[0])))
