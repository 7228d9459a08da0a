"""Checkpointing of a run: what it writes into ``out_dir/last.pt`` and how a resumed run
restores it (model, optimizer, schedule, step, RNG of every rank, loader position, metrics).

A resume is refused when anything that shapes the trajectory differs: the config's trajectory
fields, the job (kind of job, model, data set and its fingerprint, ...) or the planned steps.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .batches import seed_everything
from .checkpoint import LAST, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .config import _TRAJECTORY_FIELDS, NonFiniteLossError, TrainConfig
from .distributed import DistInfo, all_gather_objects

__all__ = ["Checkpointer", "RunState", "check_resume", "plain_job"]


@dataclass
class RunState:
    """Where a run stands: restored from a checkpoint or fresh.

    Attributes:
        step: optimizer steps done in the whole run.
        elapsed_before: wall-clock seconds of earlier invocations.
        evals: evaluation records of the run so far.
        skip: batches to skip in a loader without ``state_dict`` (resume by replay).
    """

    step: int = 0
    elapsed_before: float = 0.0
    evals: list[dict[str, Any]] = field(default_factory=list)
    skip: int = 0


def plain_job(job: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``job`` as plain JSON values (tuples become lists), so a stored and a fresh one compare."""
    if job is None:
        return None
    if not isinstance(job, Mapping):
        raise TypeError(f"job must be a mapping of plain values or None, found {type(job).__name__}")
    try:
        return json.loads(json.dumps(dict(job)))
    except (TypeError, ValueError) as err:
        raise TypeError(f"job must hold plain JSON values (numbers, strings, lists, dicts, None): {err}") from err


def _job_diff(saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> list[str]:
    """``"field: checkpoint X, now Y"`` for every field of the jobs that differs (both must be set)."""
    if saved is None or current is None:
        return []  # checkpoints of older versions, or runs that record no job
    if saved.get("kind") != current.get("kind"):  # another kind of job: the rest cannot match anyway
        return [f"kind: checkpoint {saved.get('kind')!r}, now {current.get('kind')!r}"]
    keys = list(current) + [k for k in saved if k not in current]
    return [f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


def check_resume(
    saved: Mapping[str, Any], config: TrainConfig, total: int, path: Path, job: Mapping[str, Any] | None = None
) -> None:
    """Refuse to resume from ``saved`` when the config's trajectory fields, the job (data set,
    model, ranks, ...) or the planned steps differ."""
    current = config.to_dict()
    # A checkpoint older than a field holds the field's default.
    saved_cfg = TrainConfig.field_defaults() | dict(saved.get("config", {}))

    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    diff = _job_diff(saved.get("job"), plain_job(job))
    if not diff or not diff[0].startswith("kind:"):
        diff += [
            f"{k}: checkpoint {saved_cfg.get(k)!r}, now {current[k]!r}"
            for k in _TRAJECTORY_FIELDS
            if norm(saved_cfg.get(k)) != norm(current[k])
        ]
    if diff:
        raise ValueError(f"cannot resume from {str(path)!r}: the config differs in " + "; ".join(diff))
    if saved.get("total_steps") != total:
        raise ValueError(
            f"cannot resume from {str(path)!r}: it plans {saved.get('total_steps')} steps, this run {total} "
            "(did the loader length change?)"
        )


def _params_finite(model: nn.Module) -> bool:
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


class Checkpointer:
    """Saves and restores one run's state in ``out_dir/last.pt`` (nothing without ``out_dir``).

    ``parts`` are the objects with ``state_dict`` / ``load_state_dict`` that make up the run
    (``model``, ``optimizer``, ``scheduler``, optionally ``ema``), stored under their names.
    """

    def __init__(
        self,
        out_dir: str | None,
        info: DistInfo,
        config: TrainConfig,
        total_steps: int,
        job: Mapping[str, Any] | None,
        parts: Mapping[str, Any],
        loader: Any,
    ) -> None:
        self.path = Path(out_dir) / LAST if out_dir is not None else None
        self.info, self.config, self.total, self.job = info, config, total_steps, plain_job(job)
        self.parts, self.loader = dict(parts), loader
        self.good: Path | None = self.path if self.path is not None and self.path.is_file() else None

    def restore(self) -> RunState:
        """Load ``last.pt`` into the parts, the RNGs and the loader; a fresh state (with a
        warning) when there is none yet."""
        if self.path is None:
            raise ValueError("resume=True needs config.out_dir (the checkpoint is out_dir/last.pt), found None")
        if not self.path.is_file():
            warnings.warn(f"resume=True but {str(self.path)!r} does not exist: starting from step 0", stacklevel=3)
            return RunState()
        ckpt = load_checkpoint(self.path)
        check_resume(ckpt, self.config, self.total, self.path, self.job)
        for name, part in self.parts.items():
            part.load_state_dict(ckpt[name])
        state = RunState(int(ckpt["step"]), float(ckpt.get("elapsed", 0.0)), list(ckpt.get("evals", [])))
        self._restore_rng(ckpt["rng"], state.step)
        if ckpt.get("loader") is not None and callable(getattr(self.loader, "load_state_dict", None)):
            self.loader.load_state_dict(ckpt["loader"])
        else:
            state.skip = state.step
        return state

    def _restore_rng(self, states: list[Any], step: int) -> None:
        if len(states) == self.info.world_size:
            restore_rng_state(states[self.info.rank])
            return
        warnings.warn(
            f"checkpoint was written by {len(states)} process(es), this job has {self.info.world_size}: "
            "RNG states re-seeded, the run will not be bit-identical",
            stacklevel=4,
        )
        seed_everything(self.config.seed + self.info.rank + 1_000_003 * step)

    def save(self, state: RunState, elapsed: float) -> Path | None:
        """Write the run at ``state.step``, ``elapsed`` wall-clock seconds into the whole run
        (every rank calls this: RNG states are gathered)."""
        if self.path is None:
            return None
        model = self.parts["model"]
        if not _params_finite(model):
            raise NonFiniteLossError(state.step, float("nan"), self.good, what="parameters")
        rng = all_gather_objects(capture_rng_state())  # collective: every rank takes part
        if self.info.is_main:
            loader_state = self.loader.state_dict() if callable(getattr(self.loader, "state_dict", None)) else None
            save_checkpoint(
                self.path,
                **{name: part.state_dict() for name, part in self.parts.items()},
                step=state.step,
                total_steps=self.total,
                rng=rng,
                loader=loader_state,
                config=self.config.to_dict(),
                job=self.job,
                world_size=self.info.world_size,
                evals=state.evals,
                elapsed=elapsed,
            )
        self.good = self.path
        return self.path
