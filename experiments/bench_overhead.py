"""Overhead of a factorized training step over a dense one (same backbone, same batch).

Answers: how much slower is training a FactorizedModel (template + scalers, weights
reconstructed every step) than training the dense model? DESIGN.md 1.2 predicts about
r / (B*N), a few percent.

Run from the repository root::

    .venv/bin/python experiments/bench_overhead.py            # the full table (~15 min here)
    .venv/bin/python experiments/bench_overhead.py --quick    # 32 px, 2 threads, few pairs (minutes)
    .venv/bin/python experiments/bench_overhead.py --smoke    # tiny models (seconds, for the tests)
    .venv/bin/python experiments/bench_overhead.py --table docs/results/bench_overhead.csv --label full
    .venv/bin/python experiments/bench_overhead.py --profile --cases resnet18 --threads 2  # GEMMs vs copies

How it measures, for a machine that other processes share:

- dense and factorized steps run in one process, interleaved in pairs, the order alternating
  (d f, f d, ...), after ``--warmup`` pairs that are not counted;
- the ratio is the median of the per-pair ratios (factorized / dense), with its interquartile
  range; beside the wall-clock ratio, the same for the process CPU time (all threads);
- every step is split into forward + backward and optimizer step, and the reconstruction alone
  (forward and backward of ``reconstruct()``) is timed, so that a ratio can be read as
  ``backbone + reconstruction + smaller optimizer step``;
- the load average is printed and stored with every row;
- thread counts are set with ``torch.set_num_threads``, one after the other on the same models.

Cases: ViT depth 12 width 192 (patch 4) at three ranks, also the MAE step; ResNet-18 and
ResNet-50 at three ranks; ConvNeXt-atto; batch 128. At 32 px: every rank, 2 and 1 threads, 4
pairs. At 64 px, to keep the whole run near 15 minutes on a shared 2-core machine (a 64-px ViT
step takes ~25 s there): the middle rank, 2 threads, 2 pairs (``--all-ranks-64``,
``--threads-64 2 1`` and ``--pairs-64`` widen it). Writes ``docs/results/bench_overhead.csv``
(``--quick`` and ``--smoke``: ``results/``) and prints the Markdown tables that the README shows.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Sleeping, not spinning, OpenMP workers: on a shared, oversubscribed machine a spinning worker
# that loses its core turns every parallel region into a scheduler wait (a 2-thread ResNet-18
# step here took 2-4 s instead of 0.42 s, in bursts). Set before torch loads libgomp; export
# OMP_WAIT_POLICY=ACTIVE to measure the spinning default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import timm
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tucker_init import factorize  # noqa: E402
from tucker_init.objectives.mae import masked_model_for  # noqa: E402

FULL_CSV = ROOT / "docs" / "results" / "bench_overhead.csv"
SCRATCH_CSV = ROOT / "results" / "bench_overhead.csv"


@dataclass(frozen=True)
class Case:
    """A backbone and the ranks to time; ``mae`` also times the MAE pre-training step."""

    name: str
    build: Callable[[int], nn.Module]  # image size -> fresh model
    ranks: tuple[tuple[int, int, int], ...]
    mae: bool = False


def _vit(px: int) -> nn.Module:
    # depth 12, width 192, 3 heads; 4x4 patches: 64 tokens + cls at 32 px, 256 at 64 px.
    return timm.create_model("vit_tiny_patch16_224", img_size=px, patch_size=4, num_classes=10)


CASES = {
    # One group (144, 192, 192); the reconstruction costs about 2*|T|*(r1 + r1*r2/n) FLOPs per
    # pass, so the overhead grows with rank.
    "vit_d12_w192": Case("vit_d12_w192", _vit, ((36, 48, 48), (72, 96, 96), (144, 192, 192)), mae=True),
    # A shared core allows r1 <= 18 (the smallest group) and r2, r3 <= 64.
    "resnet18": Case(
        "resnet18", lambda px: timm.create_model("resnet18", num_classes=10), ((4, 16, 16), (9, 32, 32), (18, 64, 64))
    ),
    "resnet50": Case(
        "resnet50", lambda px: timm.create_model("resnet50", num_classes=10), ((4, 16, 16), (9, 32, 32), (18, 64, 64))
    ),
    # r1 <= 16, r2, r3 <= 40 (stage 0 has d = 40).
    "convnext_atto": Case(
        "convnext_atto", lambda px: timm.create_model("convnext_atto", num_classes=10), ((8, 20, 20),)
    ),
}


def _smoke_cases() -> dict[str, Case]:
    from timm.models.resnet import BasicBlock, ResNet
    from timm.models.vision_transformer import VisionTransformer

    def vit(px: int) -> nn.Module:
        return VisionTransformer(img_size=px, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)

    def resnet(px: int) -> nn.Module:
        return ResNet(BasicBlock, layers=(1, 1, 1, 1), channels=(8, 16, 16, 16), num_classes=10)

    return {
        "vit_smoke": Case("vit_smoke", vit, ((4, 16, 16),), mae=True),
        "resnet_smoke": Case("resnet_smoke", resnet, ((2, 8, 8),)),
    }


# -- steps ---------------------------------------------------------------------------------------
# A step returns: wall, process CPU time, forward+backward wall, optimizer wall, minor page faults.
Step = Callable[[], tuple[float, float, float, float, int]]


def _timed(loss: Callable[[], torch.Tensor], opt: torch.optim.Optimizer) -> Step:
    def step() -> tuple[float, float, float, float, int]:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        wall, cpu = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss().backward()
        middle = time.perf_counter()
        opt.step()
        end = time.perf_counter()
        cpu = time.process_time() - cpu
        return end - wall, cpu, middle - wall, end - middle, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

    return step


def classification_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Step:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return _timed(lambda: nn.functional.cross_entropy(model(x), y), opt)


def mae_step(model: nn.Module, x: torch.Tensor, seed: int = 0) -> Step:
    mae = masked_model_for(model)
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-4)
    return _timed(lambda: mae(x, generator=torch.Generator().manual_seed(seed)).loss, opt)


def reconstruction_ms(fm: nn.Module, repeats: int) -> float:
    """Median wall time of ``fm.reconstruct()`` forward and backward (fixed upstream gradients)."""
    weights = fm.reconstruct()
    upstream = {k: torch.randn_like(v) for k, v in weights.items()}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        weights = fm.reconstruct()
        torch.autograd.backward(list(weights.values()), [upstream[k] for k in weights])
        times.append(time.perf_counter() - start)
    fm.zero_grad(set_to_none=True)
    return 1000 * statistics.median(times)


def reconstruction_profile(fm: nn.Module, repeats: int = 5) -> dict[str, float]:
    """Milliseconds per ``reconstruct()`` forward + backward by kind of operator (torch.profiler's
    self time): the GEMMs of the contraction, the copies of ``unstack``, and the rest."""
    from torch.profiler import profile

    weights = fm.reconstruct()
    upstream = {k: torch.randn_like(v) for k, v in weights.items()}

    def run() -> None:
        w = fm.reconstruct()
        torch.autograd.backward(list(w.values()), [upstream[k] for k in w])
        fm.zero_grad(set_to_none=True)

    run()
    with profile() as prof:
        for _ in range(repeats):
            run()
    kinds = {"aten::mm": "GEMM", "aten::bmm": "GEMM", "aten::copy_": "unstack copies", "aten::clone": "unstack copies"}
    out = {"GEMM": 0.0, "unstack copies": 0.0, "other": 0.0}
    for event in prof.key_averages():
        out[kinds.get(event.key, "other")] += event.self_cpu_time_total / 1000 / repeats
    return out


def compile_comparison(fm: nn.Module, repeats: int = 7) -> tuple[float, float, float]:
    """``(eager ms, compiled ms, compile s)``: ``reconstruct()`` forward + backward, eager and
    under ``torch.compile`` (inductor), interleaved, median wall time."""
    compiled = torch.compile(fm.reconstruct)
    weights = fm.reconstruct()
    upstream = {k: torch.randn_like(v) for k, v in weights.items()}

    def run(fn: Callable[[], dict[str, torch.Tensor]]) -> float:
        start = time.perf_counter()
        w = fn()
        torch.autograd.backward(list(w.values()), [upstream[k] for k in w])
        fm.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    compile_s = run(compiled)
    eager, comp = [], []
    for _ in range(repeats):
        eager.append(run(fm.reconstruct))
        comp.append(run(compiled))
    return 1000 * statistics.median(eager), 1000 * statistics.median(comp), compile_s


def interleaved(dense: Step, fact: Step, pairs: int, warmup: int) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """``pairs`` (dense, factorized) measurements after ``warmup`` uncounted pairs; the order
    within a pair alternates so that neither step always runs first."""
    out = []
    for i in range(warmup + pairs):
        if i % 2:
            f = fact()
            d = dense()
        else:
            d = dense()
            f = fact()
        if i >= warmup:
            out.append((d, f))
    return out


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def summarize(pairs, **fields) -> dict[str, object]:
    wall = [f[0] / d[0] for d, f in pairs]
    cpu = [f[1] / d[1] for d, f in pairs]
    (w1, w2, w3), (c1, c2, c3) = _quartiles(wall), _quartiles(cpu)

    def ms(values) -> float:
        return round(1000 * statistics.median(values), 1)

    return fields | {
        "pairs": len(pairs),
        "dense_ms": ms([d[0] for d, _ in pairs]),
        "fact_ms": ms([f[0] for _, f in pairs]),
        "ratio": round(w2, 3),
        "ratio_q1": round(w1, 3),
        "ratio_q3": round(w3, 3),
        "cpu_ratio": round(c2, 3),
        "cpu_q1": round(c1, 3),
        "cpu_q3": round(c3, 3),
        "dense_fwd_bwd_ms": ms([d[2] for d, _ in pairs]),
        "fact_fwd_bwd_ms": ms([f[2] for _, f in pairs]),
        "dense_opt_ms": ms([d[3] for d, _ in pairs]),
        "fact_opt_ms": ms([f[3] for _, f in pairs]),
        # Fresh pages touched per step: glibc hands big freed blocks back to the OS, and the
        # factorized step's allocation pattern makes it do so between steps (see the README).
        "dense_faults": int(statistics.median([d[4] for d, _ in pairs])),
        "fact_faults": int(statistics.median([f[4] for _, f in pairs])),
    }


# -- the table -----------------------------------------------------------------------------------
def markdown(rows: Sequence[dict[str, str]]) -> str:
    """The README tables: the ratios (one line per case, step, ranks and size; one column per
    thread count) and where the time of the 2-thread training steps goes."""
    threads = sorted({int(r["threads"]) for r in rows}, reverse=True)
    keyed: dict[tuple[str, ...], dict[int, dict[str, str]]] = {}
    for r in rows:
        key = (r.get("run", ""), r["case"], r["step"], r["ranks"], r["px"], _malloc(r), r["pairs"])
        keyed.setdefault(key, {})[int(r["threads"])] = r
    head = ["run", "backbone", "step", "ranks", "px", "malloc", "pairs", "dense step"]
    head += [f"ratio {t} thr. [IQR]" for t in threads] + [f"CPU-time ratio {t} thr." for t in threads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 6 + "---:|" * (len(head) - 6)]
    for (run, case, step, ranks, px, malloc, n_pairs), by_threads in keyed.items():
        t_ref = max(by_threads)
        ref = by_threads[t_ref]
        cells = [run, case, step, ranks.replace("x", ", "), px, malloc, n_pairs]
        cells.append(f"{float(ref['dense_ms']) / 1000:.2f} s ({t_ref} thr.)")
        for t in threads:
            r = by_threads.get(t)
            cells.append(
                f"{float(r['ratio']):.3f} [{float(r['ratio_q1']):.2f}-{float(r['ratio_q3']):.2f}]" if r else ""
            )
        cells += [f"{float(by_threads[t]['cpu_ratio']):.3f}" if t in by_threads else "" for t in threads]
        lines.append("| " + " | ".join(cells) + " |")
    loads = [float(r["load1"]) for r in rows]
    lines += [
        "",
        f"Load average (1 min) during the rows: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs.",
        "",
    ]

    head = ["run", "backbone", "ranks", "px", "malloc", "dense fwd+bwd", "factorized fwd+bwd", "of it reconstruction"]
    head += ["AdamW dense", "AdamW factorized", "page faults dense / factorized"]
    lines += [
        f"Where the time of the {max(threads)}-thread training steps goes (medians over the pairs; the "
        "reconstruction is timed alone):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * 5 + "---:|" * (len(head) - 5),
    ]
    for r in rows:
        if r["step"] != "train" or int(r["threads"]) != max(threads):
            continue
        cells = [r.get("run", ""), r["case"], r["ranks"].replace("x", ", "), r["px"], _malloc(r)]
        cells += [f"{float(r[k]):.0f} ms" for k in ("dense_fwd_bwd_ms", "fact_fwd_bwd_ms", "recon_ms")]
        cells += [f"{float(r[k]):.0f} ms" for k in ("dense_opt_ms", "fact_opt_ms")]
        cells.append(f"{r.get('dense_faults', '')} / {r.get('fact_faults', '')}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _malloc(row: dict[str, str]) -> str:
    return "tuned" if row.get("glibc_tunables") else "default"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: Sequence[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        fields = list(dict.fromkeys(k for r in rows for k in r))  # every column, first-seen order
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="32 px, 2 threads, batch 64, 3 pairs (minutes)")
    mode.add_argument("--smoke", action="store_true", help="tiny models, 1 thread, 1 pair (seconds)")
    mode.add_argument("--table", type=Path, metavar="CSV", help="only print the Markdown table of a CSV")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=4, help="measured pairs per row at 32 px")
    parser.add_argument("--pairs-64", type=int, default=2, help="measured pairs per row at 64 px")
    parser.add_argument(
        "--all-ranks-64",
        action="store_true",
        help="all ranks at 64 px (default: the middle one; a ViT step is ~6x longer)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="uncounted pairs before each row")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="thread counts at 32 px")
    parser.add_argument("--threads-64", type=int, nargs="*", default=[2], help="thread counts at 64 px")
    parser.add_argument("--px", type=int, nargs="+", default=[32, 64], choices=[32, 64])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--no-mae", action="store_true", help="skip the MAE step")
    parser.add_argument("--csv", type=Path, default=None, help=f"output (default {FULL_CSV.relative_to(ROOT)})")
    parser.add_argument("--append", action="store_true", help="keep the rows already in --csv, add the new ones")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only print where the reconstruction's time goes (32 px, per thread count)",
    )
    parser.add_argument("--compile", action="store_true", help="with --profile: also time torch.compile of it")
    parser.add_argument(
        "--label",
        default=None,
        help="run label of the new rows (default: full, quick or smoke); with --table: print only that run's rows",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.pairs, args.threads, args.px = 64, 3, [2], [32]
    if args.smoke:
        args.batch, args.pairs, args.warmup, args.threads, args.px = 4, 1, 1, [1], [32]
    if args.label is None and args.table is None:
        args.label = "quick" if args.quick else "smoke" if args.smoke else "full"
    if args.csv is None:
        args.csv = SCRATCH_CSV if (args.quick or args.smoke) else FULL_CSV
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table is not None:
        rows = [r for r in read_csv(args.table) if args.label is None or r.get("run") == args.label]
        print(markdown(rows))
        return 0
    cases = _smoke_cases() if args.smoke else {k: CASES[k] for k in args.cases}
    if args.profile:
        extra = (" torch.compile (inductor) |", "---|") if args.compile else ("", "")
        print(f"| backbone | ranks | threads | GEMM | unstack copies | other | total |{extra[0]}")
        print(f"|---|---|---|---:|---:|---:|---:|{extra[1]}")
        for case in cases.values():
            for ranks in case.ranks:
                torch.manual_seed(0)
                fm = factorize(case.build(32), ranks=ranks).train()
                for t in args.threads:
                    torch.set_num_threads(t)
                    ms = reconstruction_profile(fm)
                    cells = [case.name, ", ".join(map(str, ranks)), str(t)]
                    cells += [f"{v:.0f} ms" for v in (*ms.values(), sum(ms.values()))]
                    if args.compile:
                        eager, comp, compile_s = compile_comparison(fm)
                        cells.append(
                            f"eager {eager:.0f} ms, torch.compile {comp:.0f} ms (compiled in {compile_s:.1f} s)"
                        )
                    print("| " + " | ".join(cells) + " |", flush=True)
        return 0
    command = "python experiments/bench_overhead.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(
        f"{command.strip()}\ntorch {torch.__version__}, {os.cpu_count()} CPUs, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY')}, GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}, "
        f"load average {os.getloadavg()}",
        flush=True,
    )
    start = time.perf_counter()
    kept: list[dict[str, object]] = list(read_csv(args.csv)) if args.append and args.csv.exists() else []
    rows: list[dict[str, object]] = []
    torch.manual_seed(0)
    for px in args.px:
        threads = args.threads if px == 32 else args.threads_64
        pairs = args.pairs if px == 32 else args.pairs_64
        if not threads:
            continue
        x = torch.randn(args.batch, 3, px, px)
        y = torch.randint(0, 10, (args.batch,))
        for case in cases.values():
            kinds = ["train"] + (["mae"] if case.mae and not args.no_mae else [])
            rank_list = case.ranks if px == 32 or args.all_ranks_64 else case.ranks[len(case.ranks) // 2 :][:1]
            for ranks in rank_list:
                torch.manual_seed(0)
                dense = case.build(px).train()
                fm = factorize(dense, ranks=ranks).train()
                for kind in kinds:
                    if kind == "train":
                        steps = classification_step(dense, x, y), classification_step(fm, x, y)
                    else:
                        steps = mae_step(dense, x), mae_step(fm, x)
                    for t in threads:
                        torch.set_num_threads(t)
                        load = _load()
                        measured = interleaved(*steps, pairs=pairs, warmup=args.warmup)
                        row = summarize(
                            measured,
                            run=args.label,
                            case=case.name,
                            step=kind,
                            ranks="x".join(map(str, ranks)),
                            px=px,
                            batch=args.batch,
                            threads=t,
                            omp_wait=os.environ.get("OMP_WAIT_POLICY", ""),
                            glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""),
                        )
                        row["recon_ms"] = round(reconstruction_ms(fm, repeats=3), 1) if kind == "train" else ""
                        row["load1"] = max(load, _load())
                        rows.append(row)
                        print(row, flush=True)
                        write_csv(args.csv, kept + rows)  # after every row: an interrupted run keeps its rows
    # MAE rows carry the reconstruction time of their train row.
    recon = {(r["case"], r["ranks"], r["px"], r["threads"]): r["recon_ms"] for r in rows if r["step"] == "train"}
    for r in rows:
        if r["step"] == "mae":
            r["recon_ms"] = recon.get((r["case"], r["ranks"], r["px"], r["threads"]), "")
    write_csv(args.csv, kept + rows)
    print(f"\nwrote {args.csv} in {time.perf_counter() - start:.0f} s; load average now {os.getloadavg()}\n")
    print(markdown([{k: str(v) for k, v in r.items()} for r in kept + rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
