"""Real sub-network scaling (issue 12.2): every pre-training step also trains narrower and / or
shallower models built from the template, so pre-training sees the models ``initialize`` builds.

Prefix masks (:mod:`tucker_init.objectives.stochastic`) narrow only the templated weights; the residual
stream, norms, embeddings and head keep their full width. Here a sampled target size is a real
model of that size: :func:`~tucker_init.resize.target_weights` maps the live
:class:`~tucker_init.FactorizedModel` (core, scalers and remainder, every channel axis: whole
heads, embeddings, norms, head; depth by ``select`` or ``first``) to its tensors, differentiably, and the same
objective runs on it through ``torch.func.functional_call``. Its loss is added to the full
model's, so gradients from every size reach the one template.

Sizes are drawn per step from ``random.Random`` seeded with ``(seed, step)``: reproducible and
exact on resume (the engine's ``before_step`` passes the step). ``sandwich=True`` trains the
smallest size and one random other size each step (the full size always trains), as the
sandwich rule of slimmable networks; otherwise one random size. Each size keeps its own
objective head (an MAE decoder, a distillation projection), trained with the rest.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..resize.plan import PLAN_DEPTH_RULES, ResizePlan, plan_resize
from ..resize.target_weights import target_weights
from ..templates.factorized import FactorizedModel
from ..validation import check_choice

__all__ = ["SubnetOutput", "SubnetTraining", "choose_subnet_sizes"]


@dataclass
class SubnetOutput:
    """The summed loss, the full model's part and the sizes trained this step."""

    loss: Tensor
    full_loss: Tensor
    sizes: tuple[str, ...]


def _path_of(module: nn.Module, inner: nn.Module) -> str:
    """The attribute path of ``inner`` inside ``module`` ("" for itself)."""
    for name, child in module.named_modules():
        if child is inner:
            return name
    raise ValueError(f"{type(inner).__name__} is not a submodule of {type(module).__name__}")


class SubnetTraining(nn.Module):
    """The full objective plus the objective of sampled smaller models built from its template.

    Args:
        full: the objective of the full model (e.g. a MaskedAutoencoder or Distillation whose
            encoder / student is ``factorized``); its output has ``.loss``.
        factorized: the FactorizedModel inside ``full`` whose template all sizes share.
        models: size name -> a freshly built model of that size (its weights are never used:
            each step computes them from the template).
        make_objective: builds the same objective around one of ``models``.
        sandwich: train the smallest size and one random other size per step (else one random).
        seed: seeds the draws.
        depth: the depth rule that builds the shallower sizes (``"select"``: evenly spaced layers;
            ``"first"``: the first layers, weight selection's rule; ``"interpolate"``); initialize
            targets with the same rule, the one their sub-networks were trained under.

    Raises:
        ValueError: no sizes, or a size the template cannot build (see ``plan_resize``).
    """

    def __init__(
        self,
        full: nn.Module,
        factorized: FactorizedModel,
        models: Mapping[str, nn.Module],
        make_objective: Callable[[nn.Module], nn.Module],
        *,
        sandwich: bool = False,
        seed: int = 0,
        depth: str = "select",
    ) -> None:
        super().__init__()
        check_choice("depth", depth, PLAN_DEPTH_RULES)
        if not models:
            raise ValueError("models must name at least one smaller size, found none")
        self.full = full
        self._factorized = (factorized,)  # already inside `full`; a tuple keeps it from being registered twice
        self.objectives = nn.ModuleDict({name: make_objective(model) for name, model in models.items()})
        self._models = dict(models)
        self._buffer_names = {name: {k for k, _ in m.named_buffers()} for name, m in models.items()}
        self._paths = {name: _path_of(self.objectives[name], m) for name, m in models.items()}
        # Planned once here (all checks); index tensors follow the device on first use.
        self._plans: dict[str, ResizePlan] = {
            name: plan_resize(factorized, model, depth=depth, width="slice") for name, model in models.items()
        }
        self._plan_devices: dict[str, torch.device] = {}
        by_size = sorted(models, key=lambda n: sum(p.numel() for p in models[n].parameters()))
        self.sizes: tuple[str, ...] = tuple(by_size)
        self.sandwich = bool(sandwich)
        self.seed = int(seed)
        self.step = 0

    def set_step(self, step: int) -> None:
        """Called by the engine before each step (``before_step``): the draw depends on it."""
        self.step = int(step)

    def sampled(self) -> tuple[str, ...]:
        """The sizes trained at the current step."""
        rng = random.Random(self.seed * 1_000_003 + self.step)
        if self.sandwich and len(self.sizes) > 1:
            return (self.sizes[0], rng.choice(self.sizes[1:]))
        return (rng.choice(self.sizes),)

    def _weights(self, name: str, device: torch.device) -> dict[str, Tensor]:
        if self._plan_devices.get(name) != device:  # index tensors follow the objective's device
            self._plans[name] = self._plans[name].to(device)
            self._plan_devices[name] = device
        plan = self._plans[name]
        weights = target_weights(self._factorized[0], self._models[name], plan=plan)
        buffers = self._buffer_names[name]
        # Batch norm updates running statistics in place: never into the full model's buffers.
        return {k: v.detach().clone() if k in buffers else v for k, v in weights.items()}

    def subnet_loss(self, name: str, images: Tensor) -> Tensor:
        """The objective of size ``name`` on ``images``, its weights computed from the template."""
        prefix = self._paths[name]
        weights = {f"{prefix}.{k}" if prefix else k: v for k, v in self._weights(name, images.device).items()}
        return torch.func.functional_call(self.objectives[name], weights, (images,), strict=False).loss

    def forward(self, images: Tensor) -> SubnetOutput:
        """``images (B, C, H, W)`` -> the full loss plus each sampled size's loss."""
        full_loss = self.full(images).loss
        sizes = self.sampled()
        loss = full_loss
        for name in sizes:
            loss = loss + self.subnet_loss(name, images)
        return SubnetOutput(loss, full_loss.detach(), sizes)


def choose_subnet_sizes(
    depth: int, width: int, multiple: int, sizes: Sequence[tuple[int, int]] | None
) -> list[tuple[int, int]]:
    """The sizes to train beside ``(depth, width)``: ``sizes`` checked, or by default half the
    depth and / or half the width (rounded down to a multiple of ``multiple``, e.g. a ViT's
    head dim), each at least one block and one multiple.

    Raises:
        ValueError: a size larger than the template's, or equal to it, or not a multiple.
    """
    if sizes is None:
        half_depth = max(1, depth // 2)
        half_width = max(multiple, width // 2 // multiple * multiple)
        sizes = [(half_depth, half_width), (half_depth, width), (depth, half_width)]
        return sorted({s for s in sizes if s != (depth, width)})
    out = []
    for d, w in sizes:
        if not (1 <= d <= depth and multiple <= w <= width) or w % multiple or (d, w) == (depth, width):
            raise ValueError(
                f"subnet sizes must be smaller than the template's (depth {depth}, width {width}), with widths "
                f"multiples of {multiple}; found depth {d}, width {w}"
            )
        out.append((int(d), int(w)))
    return out
