"""Benchmark: time to initialize a ViT (depth 12, width 192, 3 heads, img 32, patch 4) by each method.

Run from the repository root::

    .venv/bin/python experiments/bench_initialize.py            # all rows, 7 runs each
    .venv/bin/python experiments/bench_initialize.py --runs 3 --no-learn

The template is a Tucker factorization (ranks 96, 192, 192) of a larger ViT (depth 12, width 384,
6 heads, same patch size); the target is built once per run (not timed) and only the
initializer call is timed. Rows without learning report the median over ``--runs`` runs. The
learned row trains the new scalers for 0.16 epoch of 10k real images (Fashion-MNIST when
installed, else scikit-learn digits), batch 64, and reports the loss before and after.
Prints a table and writes ``results/bench_initialize.csv``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from tucker_init import LearnConfig, WeightTemplate, factorize, get_initializer

RESULTS = Path(__file__).resolve().parent.parent / "results" / "bench_initialize.csv"


def vit(depth: int, width: int, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(
        img_size=32, patch_size=4, embed_dim=width, depth=depth, num_heads=width // 64, num_classes=10
    ).eval()


def loader(images: int = 10_000, batch_size: int = 64):
    """A loader over ``images`` real training images, and the dataset's name."""
    from tucker_init.training.data import BatchLoader, default_dataset, load_dataset

    name = default_dataset()
    dataset = load_dataset(name, "train")
    if len(dataset) > images:
        dataset = dataset.subset(images, seed=0)
    return BatchLoader(dataset, batch_size, image_size=32, channels=3, seed=0), name, len(dataset)


def time_runs(fn: Callable[[nn.Module], object], runs: int) -> list[float]:
    times = []
    for run in range(runs):
        target = vit(12, 192, seed=100 + run)
        start = time.perf_counter()
        fn(target)
        times.append(time.perf_counter() - start)
    return times


@torch.no_grad()
def mean_loss(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    return sum(float(nn.functional.cross_entropy(model(x), y)) for x, y in batches) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per row (median reported)")
    parser.add_argument("--no-learn", action="store_true", help="skip the learned row")
    parser.add_argument("--epochs", type=float, default=0.16, help="learning budget in epochs of 10k images")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    source = vit(12, 384, seed=0)
    start = time.perf_counter()
    fm = factorize(source, ranks=(96, 192, 192))
    template = WeightTemplate.from_model(fm)
    print(f"template: ViT depth 12 width 384, ranks (96, 192, 192), made in {time.perf_counter() - start:.2f} s")

    tucker = get_initializer("tucker")
    rows: list[dict[str, object]] = []
    cases: list[tuple[str, str, str, Callable[[nn.Module], object]]] = [
        ("tucker", "interpolate", "slice", lambda m: tucker(m, template, depth="interpolate", width="slice")),
        ("tucker", "select", "slice", lambda m: tucker(m, template, depth="select", width="slice")),
        ("tucker", "interpolate", "interpolate", lambda m: tucker(m, template, width="interpolate")),
        ("weight_selection", "first-N", "uniform", lambda m: get_initializer("weight_selection")(m, source)),
        ("linear_expansion", "A+(l/L)B", "uniform", lambda m: get_initializer("linear_expansion")(m, source)),
        ("random", "-", "-", lambda m: get_initializer("random")(m, None, seed=0)),
    ]
    for method, depth, width, fn in cases:
        fn(vit(12, 192, seed=99))  # warm-up: contraction paths, lazy imports
        times = time_runs(fn, args.runs)
        rows.append(
            {
                "method": method,
                "depth_rule": depth,
                "width_rule": width,
                "learn_steps": 0,
                "runs": args.runs,
                "median_s": statistics.median(times),
                "min_s": min(times),
                "max_s": max(times),
                "loss_before": "",
                "loss_after": "",
                "data": "",
            }
        )

    if not args.no_learn:
        batches, name, size = loader()
        fixed = [b for _, b in zip(range(4), batches, strict=False)]  # 256 images to evaluate the loss on
        before = mean_loss(tucker(vit(12, 192, seed=100), template), fixed)
        learn = LearnConfig(data=batches, epochs=args.epochs, lr=1e-3, progress=True)
        target = vit(12, 192, seed=100)
        start = time.perf_counter()
        target = get_initializer("tucker_learned")(target, template, learn=learn)
        elapsed = time.perf_counter() - start
        rows.append(
            {
                "method": "tucker_learned",
                "depth_rule": "learn",
                "width_rule": "learn",
                "learn_steps": learn.num_steps,
                "runs": 1,
                "median_s": elapsed,
                "min_s": elapsed,
                "max_s": elapsed,
                "loss_before": round(before, 4),
                "loss_after": round(mean_loss(target, fixed), 4),
                "data": f"{name} {size} images, batch 64, {args.epochs} epoch",
            }
        )

    header = f"{'method':<18}{'depth':<13}{'width':<13}{'steps':>6}{'median s':>10}{'min s':>8}{'max s':>8}"
    print(f"\n{header}  loss")
    for r in rows:
        loss = f"{r['loss_before']} -> {r['loss_after']}" if r["learn_steps"] else ""
        print(
            f"{r['method']:<18}{r['depth_rule']:<13}{r['width_rule']:<13}{r['learn_steps']:>6}"
            f"{r['median_s']:>10.3f}{r['min_s']:>8.3f}{r['max_s']:>8.3f}  {loss}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0], "threads"])
        for r in rows:
            r["threads"] = torch.get_num_threads()
            for key in ("median_s", "min_s", "max_s"):
                r[key] = f"{r[key]:.4f}"
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
