"""Run-time estimate and progress lines: every experiment announces a *measured* estimate before
it starts (each distinct model size is timed for one optimizer step on this machine, so the figure
reflects its current load) and prints each stage with the elapsed time and the time left."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import nn

from tucker_init import masked_model_for
from tucker_init.pipeline import ModelSpec

__all__ = ["JOB_KINDS", "Job", "Progress", "estimate_seconds", "fmt_duration", "log", "resolve_device"]

JOB_KINDS = ("ft", "mae", "eval")
_T0 = time.perf_counter()
_TIMINGS: dict[tuple[Job, torch.device], float] = {}  # seconds per step, measured once


def log(message: str) -> None:
    """A progress line with the seconds since the harness was imported (≈ since the script started)."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", flush=True)


def fmt_duration(seconds: float) -> str:
    """``"42 s"``, ``"3.5 min"`` or ``"1.2 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Job(NamedTuple):
    """A unit of work to estimate.

    ``kind``: ``"ft"`` (``steps`` classification training steps), ``"mae"`` (``steps``
    masked-modeling steps of the dense model, with the MAE ``decoder`` (dim, depth, heads) or the
    library's default; factorized pre-training is taken as dense) or ``"eval"`` (``steps`` images
    through a forward pass, taken as a third of a training step per image).
    """

    spec: ModelSpec
    kind: str
    steps: int
    batch_size: int = 64
    decoder: tuple[int, int, int] | None = None


def _objective(spec: ModelSpec, kind: str, decoder: tuple[int, int, int] | None) -> nn.Module:
    """The module a step of ``kind`` trains: the model itself, or its MAE wrapper."""
    model = spec.build()
    if kind != "mae":
        return model
    options: dict[str, int] = {} if spec.family == "vit" else {"patch_size": max(1, spec.img_size // 4)}
    if decoder is not None:
        options.update(decoder_dim=decoder[0], decoder_depth=decoder[1], decoder_heads=decoder[2])
    return masked_model_for(model, mask_ratio=0.75, **options)


def _step_seconds(job: Job, device: torch.device) -> float:
    """Seconds of one optimizer step of ``job``'s kind, timed after one warm-up step."""
    torch.manual_seed(0)
    module = _objective(job.spec, job.kind, job.decoder).to(device)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    x = torch.randn(job.batch_size, 3, job.spec.img_size, job.spec.img_size, device=device)
    y = torch.randint(0, job.spec.num_classes, (job.batch_size,), device=device)
    elapsed = 0.0
    for _ in range(2):  # the second step is the one that counts
        start = time.perf_counter()
        loss = module(x).loss if job.kind == "mae" else nn.functional.cross_entropy(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return elapsed


def estimate_seconds(jobs: Iterable[Job], device: str = "auto") -> float:
    """Estimated seconds of ``jobs`` on this machine (each distinct (spec, kind, batch, decoder)
    timed once per process, so estimating a stage again to count it done costs nothing)."""
    dev = resolve_device(device)
    total = 0.0
    for job in jobs:
        if job.kind not in JOB_KINDS:
            raise ValueError(f"job kind must be one of {JOB_KINDS}, found {job.kind!r}")
        if job.steps <= 0:
            continue
        timed = job._replace(kind="ft", steps=1, batch_size=64) if job.kind == "eval" else job._replace(steps=1)
        if (timed, dev) not in _TIMINGS:
            _TIMINGS[(timed, dev)] = _step_seconds(timed, dev)
        per_step = _TIMINGS[(timed, dev)]
        total += per_step / 3 * job.steps / 64 if job.kind == "eval" else per_step * job.steps
    return total


class Progress:
    """Stage lines with the elapsed time and, once 2 % of the estimated work is done, the time left
    (the estimate scaled by how fast the run has gone so far)."""

    def __init__(self, total_s: float) -> None:
        self.total = max(total_s, 1e-9)
        self.done = 0.0
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def stage(self, text: str) -> None:
        """Print ``text`` with the time left."""
        frac = self.done / self.total
        left = f" (~{fmt_duration(self.elapsed / frac * (1 - frac))} left)" if 0.02 < frac < 1 else ""
        log(text + left)

    def advance(self, seconds: float) -> None:
        """Count ``seconds`` of the estimate as done."""
        self.done += seconds
