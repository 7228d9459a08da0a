"""Shared helpers for the experiment scripts in ``experiments/``.

- :func:`base_parser` / :func:`resolve_mode`: the common command line (``--quick``, ``--medium``, ``--smoke``,
  ``--seeds``, ``--out``, ``--cache``, ``--device``, ``--data``, ``--threads``, ``--tucker-scaling``).
- :func:`provenance`: the exact command that produced a result, written at the top of every
  Markdown file and in every PNG footer.
- :class:`SourceSpec` / :func:`ensure_source`: pre-trained sources (dense MAE models, Tucker and
  Kronecker templates) trained once and cached under ``results/cache/<key>/``, so several
  scripts (and re-runs) reuse them. The key spells out every setting that changes the weights.
- :data:`SOURCE_PRESETS`: the source settings of each mode, shared by the scripts so that they
  hit the same cache entries.
- :func:`finetune_classifier`: the library's fine-tuning recipe with a *fixed* test subset.
- :func:`estimate_seconds`: a measured (not guessed) run-time estimate.
- :func:`cached_run`: per-run JSON results, so an interrupted long run resumes.

CNN sources are pre-trained with 8-px masked patches at 32 px (16 per image), as
``pipeline.pretrain`` does since commit 361b321 (before it, the CNN objective used the total
stride, 32 px, which left one patch per image and failed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the library importable without installing it
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from backbones import get_adapter  # noqa: E402
from tucker_init.data import BatchLoader, load_dataset  # noqa: E402
from tucker_init.layout import build_layout  # noqa: E402
from tucker_init.mae import masked_model_for  # noqa: E402
from tucker_init.pipeline import SCALING_MODES, ModelSpec, make_loaders, pretrain  # noqa: E402
from tucker_init.train import (  # noqa: E402
    TrainResult,
    finetune,
    seed_everything,
)
from tucker_init.training.recipes import get_recipe  # noqa: E402

__all__ = [
    "CACHE_DIR",
    "CNN_PATCH_SIZE",
    "MASK_RATIO",
    "RESULTS_DIR",
    "ROOT",
    "SOURCE_PRESETS",
    "Source",
    "SourcePreset",
    "SourceSpec",
    "base_parser",
    "cached_run",
    "count_params",
    "ensure_source",
    "estimate_seconds",
    "finetune_classifier",
    "fixed_test_loader",
    "fmt_duration",
    "log",
    "max_shared_ranks",
    "parse_seeds",
    "provenance",
    "resolve_device",
    "resolve_mode",
    "seed_everything",
    "setup_torch",
    "template_params",
]

RESULTS_DIR = ROOT / "results"
CACHE_DIR = RESULTS_DIR / "cache"
MASK_RATIO = 0.75  # pipeline.pretrain's default, used for ViT and CNN sources alike
CNN_PATCH_SIZE = 8  # pipeline.pretrain's CNN patch at 32 px (img_size // 4); used by the estimate
MODES = ("smoke", "quick", "medium", "full")
_T0 = time.perf_counter()


# -- command line ----------------------------------------------------------------------------------
def base_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every experiment script takes; scripts add their own on top."""
    lines = (doc or "").strip().splitlines()
    parser = argparse.ArgumentParser(
        description=lines[0] if lines else None,
        epilog="\n".join(lines[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="minutes-long CPU setting (fewer sizes, 1 seed)")
    speed.add_argument("--smoke", action="store_true", help="seconds-long setting on tiny data (for the tests)")
    speed.add_argument(
        "--medium",
        action="store_true",
        help="one to two hours on 2 CPU cores: the quick source recipe pre-trained ~7x longer, 3 seeds",
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help="number of seeds (e.g. 3 = seeds 0,1,2) or a comma list (e.g. 0,4); default 3 (medium, full), 1 (quick, "
        "smoke)",
    )
    parser.add_argument("--out", default=None, help="results folder (default results/<script>)")
    parser.add_argument(
        "--cache", default=None, help=f"pre-trained source cache (default {CACHE_DIR.relative_to(ROOT)})"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--data", default=None, help="data set (default fashion_mnist; smoke: digits)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument(
        "--tucker-scaling",
        choices=SCALING_MODES,
        default="off",
        help="width-wise stochastic scaling of the ViT Tucker template's pre-training (default off: in "
        "stochastic_scaling.py prefix masks and rank dropout did not raise fine-tuned accuracy at any width)",
    )
    return parser


def resolve_mode(args: argparse.Namespace) -> str:
    """``"smoke"``, ``"quick"``, ``"medium"`` or ``"full"`` from the parsed flags."""
    if args.smoke:
        return "smoke"
    if args.quick:
        return "quick"
    return "medium" if args.medium else "full"


def parse_seeds(text: str | None, mode: str) -> list[int]:
    """``"3"`` -> ``[0, 1, 2]``; ``"0,4"`` -> ``[0, 4]``; ``None`` -> 3 seeds (medium, full) or 1."""
    if text is None:
        return [0, 1, 2] if mode in ("medium", "full") else [0]
    text = str(text).strip()
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()] if "," in text else list(range(int(text)))
    except ValueError:
        raise SystemExit(f"--seeds must be a count (e.g. 3) or a comma list (e.g. 0,4), found {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise SystemExit(f"--seeds needs at least one seed >= 0, found {text!r}")
    return seeds


def provenance(script: str | Path, argv: Sequence[str] | None) -> str:
    """The exact command line, e.g. ``.venv/bin/python experiments/init_methods.py --quick``.

    ``argv`` is what ``main(argv)`` received (``None``: the process's own ``sys.argv[1:]``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    exe = Path(sys.executable)
    try:
        python = str(exe.relative_to(ROOT))  # e.g. .venv/bin/python
    except ValueError:
        python = "python"
    try:
        script_text = str(Path(script).resolve().relative_to(ROOT))
    except ValueError:
        script_text = str(script)
    return shlex.join([python, script_text, *args])


def setup_torch(threads: int) -> None:
    """Apply ``--threads`` (on a shared machine, 1 thread per process avoids oversubscription)."""
    if threads > 0:
        torch.set_num_threads(threads)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def log(message: str) -> None:
    """Progress line with the time since the script started."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", flush=True)


def fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- pre-trained sources ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourcePreset:
    """How sources are pre-trained in one mode (shared by all scripts, so caches match)."""

    data: str
    vit_source: tuple[int, int]  # (depth, width) of the ViT the templates / dense source are made on
    vit_tucker_ranks: tuple[int, int, int]
    vit_kron_ranks: tuple[int, int, int]  # (k, a, b): k templates of a x b
    resnet_source_depth: int  # ResNet templates are made at this depth, one per width (see init_methods)
    resnet_kron_ranks: tuple[int, int, int]
    steps: int
    batch_size: int
    lr: float = 1.5e-3
    train_subset: int | None = None
    seed: int = 0


SOURCE_PRESETS: dict[str, SourcePreset] = {
    "smoke": SourcePreset(
        data="digits",
        vit_source=(2, 64),
        vit_tucker_ranks=(12, 32, 32),
        vit_kron_ranks=(8, 32, 32),
        resnet_source_depth=2,
        resnet_kron_ranks=(4, 8, 8),
        steps=2,
        batch_size=16,
        train_subset=256,
    ),
    "quick": SourcePreset(
        data="fashion_mnist",
        vit_source=(6, 128),
        vit_tucker_ranks=(36, 64, 64),
        vit_kron_ranks=(64, 32, 32),
        resnet_source_depth=2,
        resnet_kron_ranks=(8, 8, 8),
        steps=150,
        batch_size=64,
    ),
    "full": SourcePreset(
        data="fashion_mnist",
        vit_source=(12, 192),
        vit_tucker_ranks=(72, 96, 96),
        vit_kron_ranks=(64, 32, 32),
        resnet_source_depth=2,
        resnet_kron_ranks=(8, 8, 8),
        steps=2000,
        batch_size=128,
    ),
}
# The quick sources pre-trained as long as the demo's template (1000 MAE steps), where the
# template first beat random init on ViTs.
SOURCE_PRESETS["medium"] = replace(SOURCE_PRESETS["quick"], steps=1000)


def max_shared_ranks(spec: ModelSpec) -> tuple[int, int, int]:
    """The largest ranks a shared Tucker core can have on ``spec`` (mode sizes of its smallest group).

    Used for ResNet templates, whose stages give groups of different sizes.
    """
    model = spec.build()
    layout = build_layout(model, get_adapter(model, None))
    r1, r2, r3 = (min(g.shape[m] for g in layout.groups) for m in range(3))
    return r1, r2, r3


@dataclass(frozen=True)
class SourceSpec:
    """One pre-trained source: ``kind`` is ``"dense"`` (an MAE-trained model of ``model``'s size),
    ``"tucker"`` or ``"kronecker"`` (a template made on ``model``); all with the same budget."""

    kind: str
    model: ModelSpec
    steps: int
    batch_size: int
    lr: float
    data: str
    seed: int = 0
    ranks: tuple[int, int, int] | None = None
    scaling: str = "off"  # width-wise stochastic scaling of Tucker templates: "prefix" | "rank" | "off"
    train_subset: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("dense", "tucker", "kronecker"):
            raise ValueError(f"kind must be dense, tucker or kronecker, found {self.kind!r}")
        if self.kind != "dense" and self.ranks is None:
            raise ValueError(f"a {self.kind} source needs ranks")

    @property
    def filename(self) -> str:
        return "dense.safetensors" if self.kind == "dense" else "template.safetensors"

    def key(self) -> str:
        """Readable cache folder name plus a hash of every field (so no two settings collide)."""
        digest = hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        ranks = "" if self.ranks is None else "-r" + "x".join(map(str, self.ranks))
        scaling = f"-{self.scaling}" if self.kind == "tucker" else ""
        return f"{self.kind}-{self.model.name}{ranks}{scaling}-mae{self.steps}x{self.batch_size}-{self.data}-{digest}"

    def describe(self) -> str:
        what = {"dense": "dense MAE model", "tucker": "Tucker template", "kronecker": "Kronecker template"}[self.kind]
        extra = "" if self.ranks is None else f", ranks {self.ranks}"
        if self.kind == "tucker":
            extra += f", width scaling {self.scaling}"
        return f"{what} on {self.model.name}{extra}"


@dataclass
class Source:
    """A cached source on disk and what its manifest says."""

    spec: SourceSpec
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def _logged_losses(path: Path) -> list[float]:
    """Training losses of the whole run from its ``metrics.jsonl`` (which, unlike the returned
    history, spans every invocation of a resumed run)."""
    if not path.is_file():
        return []
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [float(r["loss"]) for r in records if r.get("kind") == "train" and r.get("loss") is not None]


def ensure_source(src: SourceSpec, cache_dir: Path, device: str = "auto") -> Source:
    """The cached source, pre-training it first when it is not in ``cache_dir`` yet.

    A ``source.json`` manifest, written last, marks a finished entry; an interrupted
    pre-training resumes from its checkpoint.
    """
    folder = Path(cache_dir) / src.key()
    manifest = folder / "source.json"
    if manifest.is_file() and (folder / src.filename).is_file():
        meta = json.loads(manifest.read_text())
        log(f"cached  {src.describe()} ({folder})")
        return Source(src, folder / src.filename, meta)
    log(f"pre-train {src.describe()}: MAE, {src.steps} steps x batch {src.batch_size} on {src.data}")
    start = time.perf_counter()
    result = pretrain(
        src.model,
        src.data,
        folder,
        ranks=src.ranks if src.ranks is not None else (36, 64, 64),  # ignored for dense sources
        method="kronecker" if src.kind == "kronecker" else "tucker",
        scaling=src.scaling,
        dense=src.kind == "dense",
        steps=src.steps,
        batch_size=src.batch_size,
        lr=src.lr,
        mask_ratio=MASK_RATIO,
        seed=src.seed,
        device=device,
        resume=(folder / "last.pt").is_file(),  # continue an interrupted pre-training
        train_subset=src.train_subset,
    )
    path, train_result = result.path, result.train
    losses = _logged_losses(folder / "metrics.jsonl") or [
        h["loss"] for h in train_result.history if h.get("loss") is not None
    ]
    meta = {
        "spec": {**asdict(src), "model": asdict(src.model)},
        "key": src.key(),
        "describe": src.describe(),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        # The whole run's time, also when it was resumed (the timer here sees only this invocation).
        "pretrain_s": max(float(train_result.elapsed_s), 0.0) or time.perf_counter() - start,
        "file_bytes": path.stat().st_size,
    }
    (folder / "last.pt").unlink(missing_ok=True)  # the optimizer state is not needed once finished
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, manifest)
    log(f"  done in {fmt_duration(meta['pretrain_s'])}; MAE loss {meta['first_loss']} -> {meta['final_loss']}")
    return Source(src, path, meta)


def template_params(path: Path) -> dict[str, int]:
    """Numbers of template (core) and scaler parameters in a template file."""
    from tucker_init.io import load_template

    wt = load_template(path)
    core = sum(v.numel() for v in wt.template.values())
    scalers = sum(v.numel() for group in wt.scalers for v in group.values())
    return {"template": int(core), "scalers": int(scalers)}


# -- fine-tuning ------------------------------------------------------------------------------------
def fixed_test_loader(data: str, test_subset: int | None, batch_size: int = 256) -> BatchLoader:
    """A test loader over the test split, or a seeded subset of it that does not depend on the
    run's seed.

    (``pipeline.make_loaders`` draws its test subset with the run's seed, so runs with other
    seeds would be scored on other images; here every run sees the same ones.)
    """
    test_set = load_dataset(data, "test")
    if test_subset and test_subset < len(test_set):
        test_set = test_set.subset(test_subset, seed=1)
    return BatchLoader(test_set, min(batch_size, len(test_set)), image_size=32, shuffle=False, drop_last=False)


def finetune_classifier(
    model: nn.Module,
    data: str,
    test_loader: Any,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str = "auto",
    eval_every: int = 0,
    train_subset: int | None = None,
) -> TrainResult:
    """The ``small_finetune`` recipe (AdamW, 10 % warm-up + cosine, label smoothing 0.1) at ``lr``,
    scored on ``test_loader`` (a :func:`fixed_test_loader`)."""
    train_loader, _ = make_loaders(data, batch_size, seed=seed, train_subset=train_subset)
    config = get_recipe("small_finetune").train_config(
        steps,
        batch_size,
        lr=lr,
        eval_every=eval_every,
        seed=seed,
        device=device,
        log_every=max(1, min(50, steps // 10)),
    )
    return finetune(model, train_loader, test_loader, config)


def cached_run(path: Path, settings: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``'s JSON result, stored at ``path``; reused while ``settings`` are unchanged."""
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("settings") == settings:
            return {**stored["result"], "reused": True}
    result = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"settings": settings, "result": result}, indent=1))
    os.replace(tmp, path)
    return result


# -- run-time estimate ------------------------------------------------------------------------------
def _step_seconds(spec: ModelSpec, batch_size: int, kind: str, device: torch.device) -> float:
    """Seconds of one optimizer step (``kind`` ``"ft"``: classification, ``"mae"``: masked
    modeling on the dense model) after one warm-up step."""
    torch.manual_seed(0)
    model = spec.build().to(device)
    if kind == "mae":
        kwargs = {"patch_size": CNN_PATCH_SIZE} if spec.family != "vit" else {}
        module: nn.Module = masked_model_for(model, mask_ratio=MASK_RATIO, **kwargs).to(device)
    else:
        module = model
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 3, spec.img_size, spec.img_size, device=device)
    y = torch.randint(0, spec.num_classes, (batch_size,), device=device)
    elapsed = 0.0
    for i in range(2):
        start = time.perf_counter()
        loss = module(x).loss if kind == "mae" else nn.functional.cross_entropy(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start if i == 1 else elapsed
    return elapsed


def estimate_seconds(jobs: Sequence[tuple[ModelSpec, str, int, int]], device: str = "auto") -> float:
    """Estimated seconds for ``jobs`` = ``(spec, kind, steps, batch_size)``, ``kind`` one of
    ``"ft"`` (training steps), ``"mae"`` (pre-training steps, factorized ones taken as dense)
    or ``"eval"`` (``steps`` images scored; a forward is taken as 1/3 of a training step).

    Each distinct (spec, kind, batch) is timed once on this machine, so the figure reflects its
    current load.
    """
    dev = resolve_device(device)
    timings: dict[tuple[ModelSpec, str, int], float] = {}
    total = 0.0
    for spec, kind, steps, batch in jobs:
        if steps <= 0:
            continue
        measure_kind = "ft" if kind == "eval" else kind
        measure_batch = 64 if kind == "eval" else batch
        key = (spec, measure_kind, measure_batch)
        if key not in timings:
            timings[key] = _step_seconds(spec, measure_batch, measure_kind, dev)
        if kind == "eval":
            total += timings[key] / 3 * steps / measure_batch
        else:
            total += timings[key] * steps
    return total
