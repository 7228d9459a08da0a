"""The GPU check (issue 10.4): does the library train at GPU scale, and what does the template cost there?

Measures, with the library's own engine pieces (``train_step``, bf16 autocast, channels_last):
- the factorized / dense train-step ratio at batch 256 for ViT-S/16 at 224 px and ResNet-50
  (dense and factorized steps interleaved, warm-up, median of per-pair ratios and their spread);
- MAE pre-training images/s, dense against factorized (ViT-S/16, mask 0.75);
- a 2-process NCCL pre-training run of the CLI when the machine has 2 GPUs.

Run on a CUDA machine (about 3 minutes on one H200)::

    bash experiments/gpu_check.sh                  # writes $OUT or results/gpu_check/gpu_check.csv

``--smoke`` runs tiny models on the CPU in seconds (the test suite does, since CI has no GPU).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # experiments/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from tucker_init import factorize, masked_model_for  # noqa: E402
from tucker_init.training import train_step  # noqa: E402


@dataclass(frozen=True)
class Case:
    """One model to time: how to build it, at which image size and batch, with which ranks."""

    name: str
    build: Callable[[], nn.Module]
    image_size: int
    batch_size: int
    ranks: tuple[int, int, int]
    channels_last: bool


def cases(smoke: bool) -> list[Case]:
    if smoke:
        tiny_vit = lambda: timm.create_model(  # noqa: E731
            "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=10, pretrained=False
        )
        tiny_resnet = lambda: timm.create_model("resnet18", num_classes=10, pretrained=False)  # noqa: E731
        return [
            Case("vit_tiny_smoke", tiny_vit, 32, 4, (8, 32, 32), False),
            Case("resnet18_smoke", tiny_resnet, 32, 4, (4, 16, 16), True),
        ]
    return [
        Case(
            "vit_small_patch16_224", lambda: timm.create_model("vit_small_patch16_224"), 224, 256, (72, 192, 192), False
        ),
        Case("resnet50", lambda: timm.create_model("resnet50"), 224, 256, (9, 64, 64), True),
    ]


def _classification(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]).float(), batch[1])


def _masked(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return model(batch[0]).loss


def _stepper(model: nn.Module, loss_fn: Callable, batch, device: torch.device, amp: bool) -> Callable[[], None]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        train_step(model, batch, loss_fn, optimizer, device=device, amp=amp)

    return step


def _timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def interleaved_ratio(dense: Callable[[], None], factorized: Callable[[], None], device, warmup: int, pairs: int):
    """Median and quartiles of per-pair factorized / dense times, plus the median dense time."""
    for _ in range(warmup):
        dense()
        factorized()
    ratios, dense_times = [], []
    for _ in range(pairs):
        d = _timed(dense, device)
        f = _timed(factorized, device)
        ratios.append(f / d)
        dense_times.append(d)
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return median, q1, q3, statistics.median(dense_times)


def measure(case: Case, device: torch.device, mae: bool, warmup: int, pairs: int) -> dict[str, object]:
    """One row: the factorized / dense ratio of a classification (or MAE) train step."""
    torch.manual_seed(0)
    memory = torch.channels_last if case.channels_last and not mae else torch.preserve_format
    dense = case.build().to(device, memory_format=memory)
    fact = factorize(dense, ranks=case.ranks).to(device, memory_format=memory)
    if mae:
        dense, fact = masked_model_for(dense).to(device), masked_model_for(fact).to(device)
    x = torch.randn(case.batch_size, 3, case.image_size, case.image_size, device=device).to(memory_format=memory)
    y = torch.randint(0, 10, (case.batch_size,), device=device)
    loss_fn = _masked if mae else _classification
    amp = device.type == "cuda"
    median, q1, q3, dense_s = interleaved_ratio(
        _stepper(dense, loss_fn, (x, y), device, amp),
        _stepper(fact, loss_fn, (x, y), device, amp),
        device,
        warmup,
        pairs,
    )
    return {
        "case": case.name,
        "step": "mae" if mae else "classification",
        "batch": case.batch_size,
        "image_size": case.image_size,
        "ranks": "x".join(map(str, case.ranks)),
        "ratio_median": round(median, 4),
        "ratio_q1": round(q1, 4),
        "ratio_q3": round(q3, 4),
        "dense_images_per_s": round(case.batch_size / dense_s, 1),
        "factorized_images_per_s": round(case.batch_size / (dense_s * median), 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "precision": "bf16 autocast" if amp else "float32",
    }


def nccl_run(out: Path) -> dict[str, object] | None:
    """A 2-process pre-training run of the CLI over NCCL, when 2 GPUs exist."""
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return None
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "tucker_init", "pretrain", "--device", "cuda", "--data", "digits", "--steps", "20",
        "--batch-size", "64", "--out", str(out / "nccl_run"),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    return {
        "case": "torchrun 2 x GPU pretrain (digits, 20 steps)",
        "step": "ddp",
        "ok": done.returncode == 0,
        "seconds": round(time.perf_counter() - start, 1),
        "last_line": (done.stdout or done.stderr).strip().splitlines()[-1:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU (seconds)")
    parser.add_argument("--out", default=os.environ.get("OUT", str(ROOT / "results" / "gpu_check")))
    parser.add_argument("--pairs", type=int, default=None, help="timed dense/factorized pairs per case")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.type == "cpu" and not args.smoke:
        parser.error("no CUDA device: run with --smoke on a CPU")
    warmup, pairs = (1, args.pairs or 3) if args.smoke else (5, args.pairs or 20)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in cases(args.smoke):
        for mae in (False, True) if "vit" in case.name else (False,):
            rows.append(measure(case, device, mae, warmup, pairs))
            print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ddp = nccl_run(Path(tmp))
    if ddp is not None:
        rows.append(ddp)
        print(ddp, flush=True)
    fields = sorted({key for row in rows for key in row}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with (out / "gpu_check.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out / 'gpu_check.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
