"""Streaming data on this CPU: loader throughput, memory against folder size, loader against training.

Answers (issue 10, items 1 and 5):
1. how many images per second the streaming loader (``tucker_init.training.streaming.StreamingLoader``: PIL
   decode + timm MAE transform in DataLoader workers) delivers with 0 and with 2 workers;
2. whether the memory of a real ``tucker-init pretrain`` run on an image folder stays flat when the
   folder doubles (20,000 -> 40,000 files): peak RSS of the process tree (sampled from /proc, plus
   ``ru_maxrss`` from ``os.wait4``), with the in-memory ``load_dataset("image_folder")`` beside it
   for contrast;
3. whether the loader keeps up with training: its rate against the MAE training rate of the
   factorized ViT L6 w128 at 32 px (batch 64) measured in one process, interleaved (loader, training,
   loader, ...) so that load from other users hits both alike; and the rate of training fed by the
   streaming loader against training on batches already in memory.

The image folder is written once from real data: Fashion-MNIST (grey PNG, upscaled 28 -> 64 px) and
random 64 px crops of the bundled photos (RGB JPEG), 2:1; the 20,000-file folder is hard links to the
first half of the 40,000-file one. It is cached under ``--root`` and rebuilt only if missing.

Run:
    .venv/bin/python experiments/bench_data.py            # the full measurement (~10-15 min here)
    .venv/bin/python experiments/bench_data.py --quick    # 300 / 600 files, a few batches (seconds)

Writes docs/results/bench_data.csv (``--quick``: ROOT/bench_data_quick.csv) and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tucker_init.training.data import FASHION_MNIST_CLASSES, load_dataset  # noqa: E402
from tucker_init.training.streaming import FolderDataset, StreamingLoader  # noqa: E402

DEFAULT_ROOT = Path("/tmp/tucker_init_bench_data")
SIZE = 64  # pixels of the files on disk
MARK = ".complete"  # written last: a folder without it is rebuilt


# ----------------------------------------------------------------------------------------- the folder


def _write_folder(folder: Path, n: int) -> None:
    """``n`` files: 2/3 Fashion-MNIST (grey PNG), 1/3 crops of the bundled photos (RGB JPEG)."""
    from PIL import Image

    n_fashion = (2 * n) // 3
    n_photos = n - n_fashion
    fashion = load_dataset("fashion_mnist", "train")
    if n_fashion > len(fashion):
        raise ValueError(f"n={n} needs {n_fashion} Fashion-MNIST images, found {len(fashion)}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    names = [f"fmnist_{i}_{c.split('/')[0].replace(' ', '_').lower()}" for i, c in enumerate(FASHION_MNIST_CLASSES)]
    for name in names:
        (tmp / name).mkdir()
    for i in range(n_fashion):
        img = Image.fromarray(fashion.images[i, 0].numpy(), mode="L").resize((SIZE, SIZE), Image.BILINEAR)
        img.save(tmp / names[int(fashion.labels[i])] / f"{i:06d}.png")
    done = 0
    chunk = 0
    while done < n_photos:
        k = min(5000, n_photos - done)
        photos = load_dataset("photos", "train", n=k, size=SIZE, seed=chunk)
        for name in photos.classes:
            (tmp / f"photo_{name}").mkdir(exist_ok=True)
        for j in range(k):
            arr = photos.images[j].permute(1, 2, 0).numpy()
            cls = photos.classes[int(photos.labels[j])]
            Image.fromarray(arr).save(tmp / f"photo_{cls}" / f"{done + j:06d}.jpg", quality=90)
        done += k
        chunk += 1
    (tmp / MARK).write_text(f"{n}\n")
    os.replace(tmp, folder)


def _link_subset(source: Path, folder: Path, n: int) -> None:
    """``folder`` with the first ``n`` files of ``source`` in the same 2:1 split (hard links)."""
    n_fashion = (2 * n) // 3
    limit_photos = n - n_fashion
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    for cls in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        (tmp / cls.name).mkdir()
        limit = n_fashion if cls.name.startswith("fmnist_") else limit_photos
        for f in cls.iterdir():
            if int(f.stem) < limit:
                try:
                    os.link(f, tmp / cls.name / f.name)
                except OSError:
                    shutil.copy2(f, tmp / cls.name / f.name)
    (tmp / MARK).write_text(f"{n}\n")
    os.replace(tmp, folder)


def build_folders(root: Path, sizes: list[int]) -> dict[int, Path]:
    """One image folder per size under ``root`` (``root/n<size>``), built only if missing."""
    root.mkdir(parents=True, exist_ok=True)
    largest = max(sizes)
    folders = {n: root / f"n{n}" for n in sizes}
    big = folders[largest]
    if not (big / MARK).is_file():
        shutil.rmtree(big, ignore_errors=True)
        t = time.perf_counter()
        print(f"writing {largest} image files to {big} ...", flush=True)
        _write_folder(big, largest)
        print(f"  {time.perf_counter() - t:.0f} s", flush=True)
    for n, folder in folders.items():
        if n != largest and not (folder / MARK).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            _link_subset(big, folder, n)
    for n, folder in folders.items():
        count = sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        if count != n:
            raise RuntimeError(f"{folder} holds {count} image files, expected {n}: delete it to rebuild")
    return folders


# -------------------------------------------------------------------------------------------- helpers


def load1() -> float:
    return os.getloadavg()[0]


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _kib(pid: int, path: str, *keys: str) -> int:
    """Sum of the ``keys`` fields (kB) of ``/proc/<pid>/<path>``; 0 when the process is gone."""
    total = 0
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(keys):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


def run_measured(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``cmd``; peaks (MiB) sampled every 50 ms from /proc: the RSS summed over its process tree
    (an upper bound: pages a worker shares with its parent count twice), the USS summed over the tree
    (private pages only: a lower bound, and unlike PSS not moved by other users' processes mapping the
    same libraries), the main process's RSS; and ``ru_maxrss`` of the largest process of the tree
    (``os.wait4`` on it)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = {"tree_rss": 0, "tree_uss": 0, "main_rss": 0, "processes": 0}
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    t0 = time.perf_counter()
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        pids = _tree(proc.pid)
        peak["tree_rss"] = max(peak["tree_rss"], sum(_kib(p, "status", "VmRSS:") for p in pids))
        uss = sum(_kib(p, "smaps_rollup", "Private_Clean:", "Private_Dirty:") for p in pids)
        peak["tree_uss"] = max(peak["tree_uss"], uss)
        peak["main_rss"] = max(peak["main_rss"], _kib(proc.pid, "status", "VmRSS:"))
        peak["processes"] = max(peak["processes"], len(pids))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)
    if proc.returncode != 0:
        tail = b"".join(output).decode(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed with status {proc.returncode}:\n{tail}")
    return {
        "tree_rss_mib": peak["tree_rss"] / 1024,
        "tree_uss_mib": peak["tree_uss"] / 1024,
        "main_rss_mib": peak["main_rss"] / 1024,
        "maxrss_mib": usage.ru_maxrss / 1024,
        "processes": peak["processes"],
        "wall_s": wall,
    }


def _rate(loader_iter, batches: int) -> float:
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        x, _ = next(loader_iter)
        n += x.shape[0]
    return n / (time.perf_counter() - t)


def _mae_trainer(depth: int, width: int, image_size: int, ranks: tuple[int, int, int]):
    """The factorized ViT and MAE objective that ``tucker-init pretrain`` trains, with its step."""
    from tucker_init import factorize
    from tucker_init.objectives.mae import masked_model_for
    from tucker_init.pipeline import ModelSpec

    torch.manual_seed(0)
    model = ModelSpec("vit", depth=depth, width=width, img_size=image_size, patch_size=4).build()
    encoder = factorize(model, ranks=ranks, init="random", seed=0)
    objective = masked_model_for(encoder, mask_ratio=0.75)
    opt = torch.optim.AdamW(objective.parameters(), lr=1e-3)

    def step(x: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        objective(x).loss.backward()
        opt.step()

    return step


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="cache of the image folders")
    parser.add_argument("--quick", action="store_true", help="300 / 600 files, a few batches and steps")
    parser.add_argument("--out", type=Path, default=None, help="CSV (default docs/results/bench_data.csv)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; quick 1)")
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = [300, 600] if quick else [20000, 40000]
    batch = 32 if quick else 64
    rounds = args.rounds or (1 if quick else 5)
    loader_batches = 4 if quick else 20
    train_steps = 2 if quick else 6
    depth, width = (2, 64) if quick else (6, 128)
    ranks = (8, 16, 16) if quick else (36, 64, 64)  # the full run: the CLI's default ranks
    pre_steps = 2 if quick else 20
    out = args.out or (args.root / "bench_data_quick.csv" if quick else ROOT / "docs" / "results" / "bench_data.csv")
    command = " ".join(["python experiments/bench_data.py", *(argv if argv is not None else sys.argv[1:])])
    rows: list[dict[str, object]] = []

    def record(section: str, setting: str, value: float, unit: str, note: str = "") -> None:
        row = {"section": section, "setting": setting, "value": round(value, 2), "unit": unit}
        rows.append({**row, "load_1min": round(load1(), 2), "note": note})
        print(f"  {section:<10} {setting:<52} {value:>10.1f} {unit:<9} (load {load1():.2f}) {note}", flush=True)

    cores = len(os.sched_getaffinity(0))
    print(f"{command}\n{cores} cores, load average at start {os.getloadavg()}", flush=True)
    folders = build_folders(args.root, sizes)
    train_set = FolderDataset(folders[sizes[0]], "train", holdout=0.02)
    print(f"folder: {train_set}", flush=True)

    # 1 + 3. loader (0 and 2 workers) and MAE training, interleaved in this process.
    print("loader and training rates, interleaved:", flush=True)
    step = _mae_trainer(depth, width, 32, ranks)
    x_mem = torch.randn(batch, 3, 32, 32)
    loaders = {w: StreamingLoader(train_set, batch, image_size=32, transform="mae", workers=w) for w in (0, 2)}
    streams = {w: loaders[w].infinite() for w in (0, 2)}
    for w in (0, 2):  # start the workers, fill the prefetch queue
        _rate(streams[w], 2)
    for _ in range(3):  # the first steps are slow (allocator, einsum paths)
        step(x_mem)
    buffered = 2 * loaders[2].prefetch_factor  # batches the 2 workers hold ready after an idle spell
    rates: dict[str, list[float]] = {k: [] for k in ("loader_w0", "loader_w2", "train_memory", "train_streamed")}
    cpu_ms: list[float] = []
    for _ in range(rounds):
        cpu = time.process_time()
        rates["loader_w0"].append(_rate(streams[0], loader_batches))
        cpu_ms.append(1000 * (time.process_time() - cpu) / (batch * loader_batches))
        _rate(streams[2], buffered)  # drain, untimed: time production, not the queue
        rates["loader_w2"].append(_rate(streams[2], loader_batches))
        t = time.perf_counter()
        for _ in range(train_steps):
            step(x_mem)
        rates["train_memory"].append(batch * train_steps / (time.perf_counter() - t))
        _rate(streams[2], buffered)
        t = time.perf_counter()
        for _ in range(train_steps):
            x, _ = next(streams[2])
            step(x)
        rates["train_streamed"].append(batch * train_steps / (time.perf_counter() - t))
    for loader in loaders.values():
        loader.close()

    def summary(values: list[float]) -> tuple[float, str]:
        return statistics.median(values), f"median of {len(values)} rounds: {', '.join(f'{v:.1f}' for v in values)}"

    model = f"ViT L{depth} w{width} 32 px"
    for key, setting in (
        ("loader_w0", f"loader {batch}/batch, mae 32 px, 0 workers"),
        ("loader_w2", f"loader {batch}/batch, mae 32 px, 2 workers"),
        ("train_memory", f"{model} MAE, batches in memory"),
        ("train_streamed", f"{model} MAE, fed by the loader (2 workers)"),
    ):
        value, note = summary(rates[key])
        record("rate", setting, value, "images/s", note)
    value, note = summary(cpu_ms)
    record("rate", "loader CPU per image, 0 workers", value, "ms", note)
    pairs = (
        ("loader 2 workers / training in memory", "loader_w2", "train_memory"),
        ("loader 0 workers / training in memory", "loader_w0", "train_memory"),
        ("training fed by the loader / in memory", "train_streamed", "train_memory"),
    )
    for setting, num, den in pairs:  # per-round ratios: both sides measured seconds apart
        ratios = [a / b for a, b in zip(rates[num], rates[den], strict=True)]
        value, note = summary(ratios)
        record("ratio", setting, value, "x", note)

    # 2. memory of a real pretrain run against folder size, and the in-memory source for contrast.
    print("peak memory of `tucker-init pretrain` on the two folders:", flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["TUCKER_INIT_WORKERS"] = "2"
    measured: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    for _ in range(1 if quick else 2):
        for n, folder in folders.items():
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "tucker_init", "pretrain", "--data", "image_folder"]
                cmd += ["--data-root", str(folder), "--steps", str(pre_steps), "--batch-size", str(batch)]
                cmd += ["--depth", str(depth), "--width", str(width), "--img-size", "32", "--device", "cpu"]
                cmd += ["--ranks", *map(str, ranks), "--num-classes", "16", "--out", str(Path(tmp) / "run")]
                measured[n].append(run_measured(cmd, env))
    labels = {
        "tree_rss_mib": "tree RSS",
        "tree_uss_mib": "tree USS",
        "main_rss_mib": "main RSS",
        "maxrss_mib": "ru_maxrss",
    }
    for n in sizes:
        for key, label in labels.items():
            runs = [r[key] for r in measured[n]]
            note = f"runs: {', '.join(f'{v:.0f}' for v in runs)}"
            if key == "tree_rss_mib":
                note += f"; {int(measured[n][0]['processes'])} processes"
            record("memory", f"pretrain {pre_steps} steps, {n} files: {label}", min(runs), "MiB", note)
    for key, label in labels.items():
        a = min(r[key] for r in measured[sizes[0]])
        b = min(r[key] for r in measured[sizes[1]])
        record("memory", f"{sizes[1]} - {sizes[0]} files: {label}", b - a, "MiB", f"{100 * (b - a) / a:+.1f} %")
    print("in-memory load_dataset('image_folder') for contrast:", flush=True)
    for n, folder in {} if quick else folders.items():
        code = f"from tucker_init.training.data import load_dataset; load_dataset('image_folder', root={str(folder)!r})"
        rss = run_measured([sys.executable, "-c", code], env)["maxrss_mib"]
        record("contrast", f"in-memory load_dataset, {n} files: ru_maxrss", rss, "MiB", "decodes every image")

    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        f.write(f"# {command}\n")
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{'section':<10} {'setting':<52} {'value':>10} unit      load")
    for r in rows:
        print(f"{r['section']:<10} {r['setting']:<52} {r['value']:>10} {r['unit']:<9} {r['load_1min']}")
    print(f"load average at end {os.getloadavg()}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
