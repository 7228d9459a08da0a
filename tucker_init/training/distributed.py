"""Multi-process training with ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc_per_node N script.py`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and joins the
process group (NCCL on GPU, gloo on CPU). Without those variables everything here degrades
to a single process, so the same script runs with plain ``python`` too.

Conventions used by :func:`tucker_init.training.train`: every rank seeds ``seed + rank``, the
model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` (DDP averages the
gradients, so ``N`` ranks with ``B / N`` images each take the step of one process with ``B``),
logged metrics are all-reduced, and only rank 0 writes checkpoints and metrics files.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DEVICES",
    "DistInfo",
    "all_gather_objects",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "cleanup",
    "get_info",
    "init_distributed",
    "is_main",
    "resolve_device",
    "unwrap",
    "wrap_ddp",
]

DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job.

    Attributes:
        rank: global rank, 0 for a single process.
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: the device this process trains on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str | torch.device, local_rank: int = 0) -> torch.device:
    """``"cpu"``, ``"cuda"`` (GPU ``local_rank``) or ``"auto"`` (CUDA when available).

    Raises:
        ValueError: an unknown name, or ``"cuda"`` without a usable GPU.
    """
    if isinstance(device, torch.device):
        name = device.type
    elif isinstance(device, str):
        name = device.split(":")[0]
    else:
        raise ValueError(f"device must be one of {list(DEVICES)}, found {device!r}")
    if name not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)}, found {device!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch.cuda.is_available() is False")
    if isinstance(device, str) and ":" in device:  # an explicit index wins ("cuda:1")
        return torch.device(device)
    return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, found {value!r}") from None


def get_info(device: str | torch.device = "auto") -> DistInfo:
    """The rank / world size of the current process group (or of the environment when none
    is initialized yet), without joining anything."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local = _env_int("LOCAL_RANK", rank)
    return DistInfo(rank, world, local, resolve_device(device, local))


def init_distributed(device: str | torch.device = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by the torchrun environment variables.

    Idempotent: a process group that already exists is reused. With ``WORLD_SIZE`` unset or
    1 no group is created and a single-process :class:`DistInfo` is returned.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``; selects the backend (NCCL for CUDA,
            gloo for CPU) and, for CUDA, the GPU ``LOCAL_RANK``.
        timeout_s: collective timeout.
    """
    info = get_info(device)
    if info.world_size <= 1 or (dist.is_available() and dist.is_initialized()):
        return info
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    if not 0 <= info.rank < info.world_size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={info.world_size}), found {info.rank}")
    backend = "nccl" if info.device.type == "cuda" else "gloo"
    if info.device.type == "cuda":
        torch.cuda.set_device(info.device)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=info.rank,
        world_size=info.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return info


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return _env_int("RANK", 0) == 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def cleanup() -> None:
    """Leave the process group (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for all ranks (no-op in a single process)."""
    if _active():
        dist.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of ``tensor`` over ranks (a new tensor; the input is left alone)."""
    out = tensor.detach().clone()
    if _active():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Mean of ``tensor`` over ranks."""
    out = all_reduce_sum(tensor)
    return out / dist.get_world_size() if _active() else out


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects; ``[obj]`` in one process)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: nn.Module, info: DistInfo, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` wrapped in DDP when ``info.world_size > 1``, else ``model`` itself.

    DDP hooks every trainable parameter of ``model`` (``model.parameters()``), so a
    :class:`~tucker_init.templates.factorized.FactorizedModel`, whose forward builds the block weights
    from its template and scalers and calls the backbone functionally, is synchronized like
    any module: its template, scalers and remainder parameters are all registered parameters.
    Rank 0's parameters and buffers are broadcast at wrapping time.
    """
    if info.world_size <= 1:
        return model
    if info.device.type == "cuda":
        return nn.parallel.DistributedDataParallel(
            model,
            device_ids=[info.device.index],
            output_device=info.device.index,
            find_unused_parameters=find_unused_parameters,
        )
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
