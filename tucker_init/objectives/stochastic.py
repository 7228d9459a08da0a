"""Width-wise stochastic scaling (SWEET; DESIGN.md section 1.3).

During pre-training the width scalers of each group are masked, ``U_hat = M_U * U`` and
``V_hat = M_V * V``, so that the template cannot rely on one fixed width. Both readings of
the paper are implemented, as a switch, for the ablation to decide:

- ``"prefix"``: keep the first d' of the d rows of U and V for a random d' <= d, which
  simulates a narrower model and pushes width-invariant structure into the low-index rows
  (the rows that ``width="slice"`` keeps when initializing a narrower target). Only the
  templated weights shrink: the residual stream, norms, embeddings and other dense
  parameters keep their full width, so the narrower model is an approximation.
- ``"rank"``: dropout over the r2 / r3 columns of U / V, rescaled by 1 / (1 - p).
- ``"off"``: identity (the ablation's control).

Masks depend only on ``(seed, step, group_index)``, so a run is reproducible and a resumed
run draws the same masks (save :meth:`WidthScaling.state_dict` with the checkpoint).

Example::

    fm = factorize(vit, ranks=(8, 32, 32))
    scaling = WidthScaling("prefix", seed=0).attach(fm)
    for step, images in enumerate(loader):
        scaling.set_step(step)
        loss = mae(images).loss
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..templates.factorized import FactorizedModel
from ..templates.kinds import get_kind
from ..validation import as_int, check_int

__all__ = ["MODES", "WidthScaling"]

MODES = ("prefix", "rank", "off")
_STATE_KEYS = ("mode", "p", "min_fraction", "multiple", "seed", "step")


def _mask_seed(seed: int, step: int, group_index: int) -> int:
    # A hash rather than arithmetic on the three ints: no collisions between nearby
    # (step, group) pairs, and stable across processes (unlike Python's hash()).
    digest = hashlib.blake2b(f"{seed}:{step}:{group_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class WidthScaling:
    """``scaler_hook`` for a Tucker :class:`~tucker_init.templates.factorized.FactorizedModel` that masks
    the width scalers during training.

    ``mode="prefix"``: keep the first d' rows of ``U (d, r2)`` and ``V (d, r3)`` for a random
    d' drawn uniformly from the multiples of ``multiple`` in ``[min_fraction * d, d]``; U and
    V of a group share d' at a step (the group's channel width). ``mode="rank"``: each of the
    r2 columns of U and r3 columns of V is dropped with probability ``p`` and the kept ones
    are scaled by ``1 / (1 - p)``, like dropout; at least one column of each is kept.
    ``mode="off"``: identity.

    Masks are drawn with a private ``torch.Generator`` seeded from ``(seed, step,
    group_index)``, so they are reproducible and independent of the global RNG. The hook is
    the identity when the attached model is in eval mode (``fm.training`` False); an
    unattached hook always masks. Depth scalers X are never masked.

    Args:
        mode: ``"prefix"``, ``"rank"`` or ``"off"``.
        p: rank mode: drop probability, in [0, 1).
        min_fraction: prefix mode: smallest kept fraction of d, in (0, 1].
        multiple: prefix mode: d' is a multiple of this (a ViT's head_dim keeps whole heads);
            ``None`` takes ``fm.adapter.width_multiple(fm.backbone)`` at :meth:`attach`, or 1.
        seed: the run's seed.
    """

    def __init__(
        self,
        mode: str = "prefix",
        *,
        p: float = 0.25,
        min_fraction: float = 0.25,
        multiple: int | None = None,
        seed: int = 0,
    ) -> None:
        self._validate(mode, p, min_fraction, multiple, seed)
        self.mode = mode
        self.p = float(p)
        self.min_fraction = float(min_fraction)
        self.multiple = None if multiple is None else as_int(multiple)
        self.seed = check_int("seed", seed)
        self.step = 0
        self.fm: FactorizedModel | None = None

    @staticmethod
    def _validate(mode: Any, p: Any, min_fraction: Any, multiple: Any, seed: Any) -> None:
        if not isinstance(mode, str) or mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, found {mode!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"p must be a float in [0, 1), found {p!r}")
        if (
            isinstance(min_fraction, bool)
            or not isinstance(min_fraction, (int, float))
            or not 0.0 < min_fraction <= 1.0
        ):
            raise ValueError(f"min_fraction must be a float in (0, 1], found {min_fraction!r}")
        if multiple is not None and (as_int(multiple) is None or as_int(multiple) < 1):
            raise ValueError(f"multiple must be a positive int or None, found {multiple!r}")
        check_int("seed", seed)

    # -- wiring ---------------------------------------------------------------------------------
    def attach(self, fm: FactorizedModel) -> WidthScaling:
        """Install as ``fm.scaler_hook`` and remember ``fm`` (its ``training`` flag switches
        the masks on and off). Fills in ``multiple`` from the adapter when it was not given.

        Raises:
            ValueError: ``fm`` holds Kronecker templates, or ``multiple`` does not divide a
                group's width d.
        """
        if not isinstance(fm, FactorizedModel):
            raise TypeError(f"attach expects a FactorizedModel, found {type(fm).__name__}")
        if not get_kind(fm.config.method).width_scaling:
            raise ValueError(
                "stochastic scaling applies to Tucker templates (width scalers U, V); "
                f"this model uses method={fm.config.method!r}"
            )
        multiple = self.multiple if self.multiple is not None else int(fm.adapter.width_multiple(fm.backbone))
        for group in fm.layout.groups:
            if group.width % multiple:
                raise ValueError(
                    f"multiple must divide the width d={group.width} of group {group.name!r}, found {multiple}"
                )
        self.multiple = multiple
        self.fm = fm
        fm.scaler_hook = self
        return self

    def set_step(self, step: int) -> None:
        """Select the masks of training step ``step`` (call once per optimizer step)."""
        if as_int(step) is None or as_int(step) < 0:
            raise ValueError(f"step must be a non-negative int, found {step!r}")
        self.step = as_int(step)

    @property
    def active(self) -> bool:
        """Whether masks are applied now: mode is not "off" and the model is training."""
        return self.mode != "off" and (self.fm is None or self.fm.training)

    # -- masks --------------------------------------------------------------------------------------
    def _generator(self, group_index: int) -> torch.Generator:
        return torch.Generator().manual_seed(_mask_seed(self.seed, self.step, group_index))

    def sample_width(self, group_index: int, width: int) -> int:
        """d' of group ``group_index`` at the current step (prefix mode), for width d = ``width``."""
        multiple = self.multiple or 1
        if width % multiple:
            raise ValueError(f"multiple={multiple} must divide the width d={width}")
        top = width // multiple
        low = min(max(math.ceil(self.min_fraction * width / multiple), 1), top)
        units = int(torch.randint(low, top + 1, (1,), generator=self._generator(group_index)))
        return units * multiple

    def masks(self, group_index: int, width: int, r2: int, r3: int) -> tuple[Tensor, Tensor]:
        """``(M_U, M_V)`` for the current step: prefix ``(d, 1)`` row masks, rank ``(1, r2)`` and
        ``(1, r3)`` column masks (already scaled by 1 / (1 - p)); ones when mode is "off"."""
        if self.mode == "prefix":
            rows = (torch.arange(width) < self.sample_width(group_index, width)).float()[:, None]
            return rows, rows
        if self.mode == "rank":
            gen = self._generator(group_index)
            return self._column_mask(r2, gen), self._column_mask(r3, gen)
        return torch.ones(1, r2), torch.ones(1, r3)

    def _column_mask(self, rank: int, gen: torch.Generator) -> Tensor:
        keep = torch.rand(rank, generator=gen) >= self.p
        if not keep.any():  # an all-zero scaler would zero the whole group
            keep[torch.randint(rank, (1,), generator=gen)] = True
        return (keep.float() / (1.0 - self.p))[None]

    def __call__(self, group_index: int, scalers: dict[str, Tensor]) -> dict[str, Tensor]:
        """Masked copy of one group's scalers ``{"X", "U" (d, r2), "V" (d, r3)}``; X unchanged."""
        if not self.active:
            return scalers
        if "U" not in scalers or "V" not in scalers:
            raise ValueError(
                f"stochastic scaling applies to Tucker templates: expected scalers 'U' and 'V', found {sorted(scalers)}"
            )
        U, V = scalers["U"], scalers["V"]
        if U.shape[0] != V.shape[0]:
            raise ValueError(f"U and V must have the same width d, found U {tuple(U.shape)}, V {tuple(V.shape)}")
        m_u, m_v = self.masks(group_index, U.shape[0], U.shape[1], V.shape[1])
        out = dict(scalers)
        out["U"] = U * m_u.to(device=U.device, dtype=U.dtype)
        out["V"] = V * m_v.to(device=V.device, dtype=V.dtype)
        return out

    # -- checkpointing ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Settings and current step (plain Python values, JSON-serializable)."""
        return {key: getattr(self, key) for key in _STATE_KEYS}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; the attached model stays attached."""
        missing = [k for k in _STATE_KEYS if k not in state]
        unexpected = [k for k in state if k not in _STATE_KEYS]
        if missing or unexpected:
            raise ValueError(
                f"WidthScaling state must have keys {list(_STATE_KEYS)}; missing {missing}, unexpected {unexpected}"
            )
        self._validate(state["mode"], state["p"], state["min_fraction"], state["multiple"], state["seed"])
        self.mode = state["mode"]
        self.p = float(state["p"])
        self.min_fraction = float(state["min_fraction"])
        self.multiple = state["multiple"]
        self.seed = state["seed"]
        self.set_step(state["step"])

    def __repr__(self) -> str:
        return (
            f"WidthScaling(mode={self.mode!r}, p={self.p}, min_fraction={self.min_fraction}, "
            f"multiple={self.multiple}, seed={self.seed}, step={self.step})"
        )
