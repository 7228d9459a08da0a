"""Distillation as a template objective (DESIGN.md 1.5b): a student learns from a frozen teacher.

WAVE, TLEG and LeTs train their templates by distilling a pre-trained model, and the typical
user already has one. :class:`Distillation` wraps a student (a dense timm model or a
:class:`~tucker_init.FactorizedModel`) and a teacher, and its ``forward(images)`` returns an
output whose ``.loss`` the training engine minimizes, as the masked autoencoders' does:

- ``"features"``: the student's ``forward_features`` tokens ``(B, N, Cs)`` (CNN maps
  ``(B, Cs, h, w)`` are read as ``h*w`` tokens) go through a learned linear projection to the
  teacher's width ``Ct`` (none when the widths agree); both sides are layer-normalized per token
  (no affine) and compared by mean squared error. Normalizing both makes the loss 0 when the
  student equals the teacher (a full-rank HOSVD of it) and independent of the teacher's scale.
- ``"logits"``: ``T^2 * KL(softmax(t / T) || softmax(s / T))`` of the heads' logits (Hinton et
  al.); it needs a teacher whose head was trained on the same classes.
- ``"both"``: the sum.

The teacher runs in eval mode under ``no_grad`` and is kept outside the module's parameters and
state dict (a checkpoint holds the student and the projection only) but follows ``.to()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..templates.factorized import FactorizedModel
from ..validation import check_choice

__all__ = ["DISTILL_TARGETS", "DistillOutput", "Distillation", "token_features"]

DISTILL_TARGETS = ("features", "logits", "both")


@dataclass
class DistillOutput:
    """What :meth:`Distillation.forward` returns: the loss and its parts (detached, no host sync)."""

    loss: Tensor
    feature_loss: Tensor | None
    logit_loss: Tensor | None


def token_features(features: Tensor) -> Tensor:
    """``(B, N, C)`` tokens of a ``forward_features`` output: ViT tokens as they are, CNN maps
    ``(B, C, h, w)`` flattened to ``(B, h*w, C)``."""
    if features.ndim == 3:
        return features
    if features.ndim == 4:
        return features.flatten(2).transpose(1, 2)
    raise ValueError(f"forward_features must give (B, N, C) tokens or (B, C, h, w) maps, found {tuple(features.shape)}")


def _features_and_logits(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    features = model.forward_features(images)
    return features, model.forward_head(features)


def _probe_widths(student: nn.Module, teacher: nn.Module, images: Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Token shapes ``(N, C)`` of student and teacher on one image, without grad (in eval mode:
    batch norm cannot train on a single image)."""
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            s, _ = _run(student, images[:1])
            t, _ = _features_and_logits(teacher, images[:1])
    finally:
        student.train(was_training)
    return tuple(token_features(s).shape[1:]), tuple(token_features(t).shape[1:])


def _run(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    # A FactorizedModel reconstructs its weights once, then runs both entry points on them.
    if isinstance(model, FactorizedModel):
        return model.call(_features_and_logits, images)
    return _features_and_logits(model, images)


class Distillation(nn.Module):
    """``loss = distill(student(images), teacher(images))``; see the module docstring.

    Args:
        student: a timm model or a FactorizedModel wrapping one (its parameters train).
        teacher: a dense timm model with ``forward_features`` / ``forward_head``; frozen.
        target: ``"features"``, ``"logits"`` or ``"both"``.
        temperature: softens both logit distributions (``"logits"`` / ``"both"``).
        image_size: the training images' size (a zeros image of it sizes the projection).
        in_chans: their channels.

    Raises:
        ValueError: an unknown target, a temperature <= 0, token grids that differ between
            student and teacher (features), or head sizes that differ (logits).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        target: str = "features",
        temperature: float = 1.0,
        image_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        for name, value in (("student", student), ("teacher", teacher)):
            if not isinstance(value, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, found {type(value).__name__}")
        check_choice("target", target, DISTILL_TARGETS)
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
            raise ValueError(f"temperature must be a number > 0, found {temperature!r}")
        self.student = student
        self.target = target
        self.temperature = float(temperature)
        teacher.eval().requires_grad_(False)
        self._teacher = (teacher,)  # a tuple: not a submodule, so not in parameters() or state_dict()
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        device = next(teacher.parameters()).device
        self.projection = self._make_projection(student, teacher, torch.zeros(1, in_chans, *size, device=device))

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def _make_projection(self, student: nn.Module, teacher: nn.Module, sample: Tensor) -> nn.Module:
        """A linear map from the student's token width to the teacher's (identity when equal)."""
        if self.target == "logits":
            return nn.Identity()
        (n_s, c_s), (n_t, c_t) = _probe_widths(student, teacher, sample)
        if n_s != n_t:
            raise ValueError(
                f"student and teacher give different token counts ({n_s} vs {n_t}) on the same images: "
                "feature distillation needs the same patch grid (patch size and prefix tokens); "
                "use target='logits' or a teacher of the student's patch size"
            )
        return nn.Identity() if c_s == c_t else nn.Linear(c_s, c_t)

    def _apply(self, fn: Any, recurse: bool = True) -> Distillation:
        # .to() / .cuda() / .half() move the hidden teacher along with the student.
        super()._apply(fn, recurse)
        self._teacher[0]._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> Distillation:
        super().train(mode)
        self.teacher.eval()  # dropout / drop-path / BN statistics of the teacher never change
        return self

    def forward(self, images: Tensor) -> DistillOutput:
        """``images (B, C, H, W)`` -> :class:`DistillOutput` with the scalar ``loss``."""
        with torch.no_grad():
            t_features, t_logits = _features_and_logits(self.teacher, images)
        s_features, s_logits = _run(self.student, images)
        feature_loss = logit_loss = None
        loss = s_logits.new_zeros(())
        if self.target in ("features", "both"):
            s = token_features(s_features)
            t = token_features(t_features).float()
            s = F.layer_norm(self.projection(s).float(), (t.shape[-1],))
            loss = loss + F.mse_loss(s, F.layer_norm(t, (t.shape[-1],)))
            feature_loss = loss.detach()
        if self.target in ("logits", "both"):
            if s_logits.shape != t_logits.shape:
                raise ValueError(
                    f"logit distillation needs heads of the same size: student {tuple(s_logits.shape)}, "
                    f"teacher {tuple(t_logits.shape)}"
                )
            T = self.temperature
            log_p_student = F.log_softmax(s_logits.float() / T, -1)
            log_p_teacher = F.log_softmax(t_logits.float() / T, -1)
            kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
            loss = loss + kl * T * T
            logit_loss = kl.detach() * T * T
        return DistillOutput(loss, feature_loss, logit_loss)
