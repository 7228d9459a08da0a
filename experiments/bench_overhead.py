"""Overhead of a factorized training step over a dense one (same backbone, same batch).

Answers: how much slower is training a FactorizedModel (template + scalers, weights
reconstructed every step) than training the dense model? DESIGN.md 1.2 predicts about
r / (B*N), a few percent.

Run:
    .venv/bin/python experiments/bench_overhead.py            # ViT d12 w192 + ResNet-18, batch 128, 32x32
    .venv/bin/python experiments/bench_overhead.py --quick    # batch 32, fewer repeats
    .venv/bin/python experiments/bench_overhead.py --mae      # also the MAE pre-training step (ViT)

Dense and factorized steps alternate (d, f, d, f, ...) so that load from other processes
hits both alike; the reported ratio is the median of the per-pair ratios. Writes
results/bench_overhead.csv and .md.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tucker_init import factorize  # noqa: E402

# Each case: the model and the ranks to time. The reconstruction costs about
# 2*|T|*(r1 + r1*r2/n) FLOPs per pass, so the overhead grows with rank; several ranks are timed.
CASES: dict[str, tuple[Callable[[], nn.Module], list[tuple[int, int, int]]]] = {
    # ViT depth 12, width 192 (3 heads), 32x32 input with 4x4 patches: 64 tokens + cls.
    # Unified tensor (144, 192, 192).
    "vit_d12_w192": (
        lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10, pretrained=False),
        [(36, 48, 48), (72, 96, 96), (144, 192, 192)],
    ),
    # ResNet-18; a shared core allows r1 <= 18 (its smallest group) and r2, r3 <= 64.
    "resnet18": (
        lambda: timm.create_model("resnet18", num_classes=10, pretrained=False),
        [(4, 16, 16), (9, 32, 32), (18, 64, 64)],
    ),
}


def classification_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def mae_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, seed: int = 0):
    from tucker_init.mae import masked_model_for

    mae = masked_model_for(model)
    opt.add_param_group({"params": [p for n, p in mae.named_parameters() if not n.startswith("encoder.")]})

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        mae(x, generator=torch.Generator().manual_seed(seed)).loss.backward()
        opt.step()

    return step


def time_pairs(dense_step, fact_step, repeats: int, warmup: int = 2) -> tuple[list[float], list[float]]:
    for _ in range(warmup):
        dense_step()
        fact_step()
    dense, fact = [], []
    for _ in range(repeats):
        for fn, out in ((dense_step, dense), (fact_step, fact)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return dense, fact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="batch 32, 4 repeats")
    parser.add_argument("--mae", action="store_true", help="also time the MAE pre-training step (ViT)")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.repeats = 32, 4
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    rows = []
    for name in args.cases:
        build, rank_list = CASES[name]
        kinds = ["train"] + (["mae"] if args.mae and name.startswith("vit") else [])
        for kind, ranks in ((k, r) for k in kinds for r in rank_list):
            dense = build().train()
            fm = factorize(dense, ranks=ranks).train()
            opt_d = torch.optim.AdamW(dense.parameters(), lr=1e-4)
            opt_f = torch.optim.AdamW(fm.parameters(), lr=1e-4)
            if kind == "train":
                steps = classification_step(dense, opt_d, x, y), classification_step(fm, opt_f, x, y)
            else:
                steps = mae_step(dense, opt_d, x), mae_step(fm, opt_f, x)
            d, f = time_pairs(*steps, repeats=args.repeats)
            ratio = statistics.median(b / a for a, b in zip(d, f, strict=True))
            row = {
                "case": name,
                "step": kind,
                "batch": args.batch,
                "ranks": "x".join(map(str, ranks)),
                "dense_ms": round(1000 * statistics.median(d), 1),
                "factorized_ms": round(1000 * statistics.median(f), 1),
                "ratio": round(ratio, 3),
                "threads": torch.get_num_threads(),
            }
            rows.append(row)
            print(row, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "bench_overhead.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cmd = "python experiments/bench_overhead.py " + " ".join(sys.argv[1:])
    lines = [
        f"Produced by `{cmd.strip()}` on {torch.get_num_threads()} CPU threads.",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
    ]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    (args.out / "bench_overhead.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
