"""Pre-trained sources (dense MAE models, Tucker and Kronecker templates), trained once and cached
under ``<cache>/<key>/`` (default ``results/cache/``), so every script and every re-run reuses them.
The key spells out every setting that changes the weights, so two scripts that ask for the same
source (e.g. the 24x64x64 template of ``stochastic_scaling``, ``rank_sweep`` and
``mae_vs_supervised`` --quick) share one entry.

Sources are pre-trained by ``pipeline.pretrain``, except where it cannot make them yet: a lighter
MAE decoder than the library's default (``decoder=``, the ablations' (64, 1, 2): the default costs
~3x the small encoder on a CPU) and the labelled objective (``objective="supervised"``).
:func:`_pretrain_light` does those from the same library pieces; once ``pipeline.pretrain`` takes a
decoder and an objective it can go.

CNN sources are pre-trained with 8-px masked patches at 32 px (16 per image), as
``pipeline.pretrain`` does since commit 361b321.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from backbones import get_adapter
from tucker_init import (
    ImageDataset,
    WidthScaling,
    build_layout,
    factorize,
    load_template,
    masked_model_for,
    save_template,
)
from tucker_init.pipeline import ModelSpec, make_train_loader, pretrain, save_model
from tucker_init.training import TrainResult, classification_loss, masked_image_loss, train
from tucker_init.training.recipes import get_recipe

from .data import PRETRAIN_SUBSET_SEED, fixed_test_loader, load_split, subset
from .estimate import Job, fmt_duration, log

__all__ = [
    "MASK_RATIO",
    "SOURCE_PRESETS",
    "Source",
    "SourcePreset",
    "SourceSpec",
    "ensure_source",
    "max_shared_ranks",
    "source_job",
    "template_params",
]

MASK_RATIO = 0.75  # pipeline.pretrain's default, used for ViT and CNN sources alike
OBJECTIVES = ("mae", "supervised")


@dataclass(frozen=True)
class SourceSpec:
    """One pre-trained source: ``kind`` is ``"dense"`` (a model of ``model``'s size) or
    ``"tucker"`` / ``"kronecker"`` (a template made on ``model``).

    ``train_subset`` images of ``data``'s training split (drawn with PRETRAIN_SUBSET_SEED, the same
    for every source seed); ``objective`` ``"mae"`` or ``"supervised"`` (labels, label smoothing
    0.1); ``decoder`` the MAE decoder (dim, depth, heads), ``None`` for the library's default.
    """

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
    objective: str = "mae"
    decoder: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("dense", "tucker", "kronecker"):
            raise ValueError(f"kind must be dense, tucker or kronecker, found {self.kind!r}")
        if self.kind != "dense" and self.ranks is None:
            raise ValueError(f"a {self.kind} source needs ranks")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {list(OBJECTIVES)}, found {self.objective!r}")

    @property
    def filename(self) -> str:
        return "dense.safetensors" if self.kind == "dense" else "template.safetensors"

    @property
    def light(self) -> bool:
        """Made by :func:`_pretrain_light` (what ``pipeline.pretrain`` cannot make yet)."""
        return self.decoder is not None or self.objective != "mae"

    def key(self) -> str:
        """Readable cache folder name plus a hash of every field (so no two settings collide)."""
        fields = asdict(self)
        for name, default in (("objective", "mae"), ("decoder", None)):
            if fields[name] == default:  # keys made before these fields existed stay the same
                del fields[name]
        digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]
        ranks = "" if self.ranks is None else "-r" + "x".join(map(str, self.ranks))
        scaling = f"-{self.scaling}" if self.kind == "tucker" else ""
        decoder = "" if self.decoder is None else "-dec" + "x".join(map(str, self.decoder))
        budget = f"{'sup' if self.objective == 'supervised' else 'mae'}{self.steps}x{self.batch_size}"
        return f"{self.kind}-{self.model.name}{ranks}{scaling}{decoder}-{budget}-{self.data}-{digest}"

    def describe(self) -> str:
        what = {"dense": "dense MAE model", "tucker": "Tucker template", "kronecker": "Kronecker template"}[self.kind]
        if self.objective == "supervised":
            what = what.replace("MAE ", "") + " (labelled)"
        extra = "" if self.ranks is None else f", ranks {self.ranks}"
        if self.kind == "tucker":
            extra += f", width scaling {self.scaling}"
        return f"{what} on {self.model.name}{extra}"


@dataclass(frozen=True)
class SourcePreset:
    """How ``init_methods`` and ``convergence`` pre-train their sources in one mode (shared, so the
    two scripts hit the same cache entries)."""

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
    scaling: str = "off"  # of the ViT Tucker template

    def source(
        self, kind: str, model: ModelSpec, ranks: tuple[int, int, int] | None = None, scaling: str = "off"
    ) -> SourceSpec:
        """The :class:`SourceSpec` of ``kind`` on ``model`` with this preset's budget and seed."""
        budget = {"batch_size": self.batch_size, "lr": self.lr, "data": self.data, "train_subset": self.train_subset}
        return SourceSpec(kind, model, steps=self.steps, **budget, seed=self.seed, ranks=ranks, scaling=scaling)


SOURCE_PRESETS: dict[str, SourcePreset] = {
    "smoke": SourcePreset("digits", (2, 64), (12, 32, 32), (8, 32, 32), 2, (4, 8, 8), 2, 16, train_subset=256),
    "quick": SourcePreset("fashion_mnist", (6, 128), (36, 64, 64), (64, 32, 32), 2, (8, 8, 8), 150, 64),
    "full": SourcePreset("fashion_mnist", (12, 192), (72, 96, 96), (64, 32, 32), 2, (8, 8, 8), 2000, 128),
}
# The quick sources pre-trained as long as the demo's template (1000 MAE steps), where the
# template first beat random init on ViTs.
SOURCE_PRESETS["medium"] = replace(SOURCE_PRESETS["quick"], steps=1000)


def source_job(src: SourceSpec) -> Job:
    """The estimate's job for pre-training ``src``."""
    if src.objective == "supervised":
        return Job(src.model, "ft", src.steps, src.batch_size)
    return Job(src.model, "mae", src.steps, src.batch_size, src.decoder)


@dataclass
class Source:
    """A cached source on disk and what its manifest says (``train_loss``: mean of the last logged
    window; ``first_loss`` / ``final_loss``: first and last logged; ``mae_heldout_loss`` for light
    MAE sources; ``pretrain_s``)."""

    spec: SourceSpec
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    reused: bool = False  # found in the cache (not pre-trained by this invocation)


def _logged_losses(path: Path) -> list[float]:
    """Training losses of the whole run from its ``metrics.jsonl`` (which, unlike the returned
    history, spans every invocation of a resumed run)."""
    if not path.is_file():
        return []
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [float(r["loss"]) for r in records if r.get("kind") == "train" and r.get("loss") is not None]


@torch.no_grad()
def mae_loss(mae: nn.Module, data: ImageDataset, img_size: int, seed: int, n: int = 512) -> float:
    """Masked-patch MSE on ``n`` un-augmented images with fixed masks (lower = better reconstruction)."""
    held_out = data.subset(min(n, len(data)), seed=seed + 7)
    gen = torch.Generator().manual_seed(seed)
    losses = [float(mae(x, generator=gen).loss) * len(x) for x, _ in fixed_test_loader(held_out, img_size, 128)]
    return sum(losses) / len(held_out)


Made = tuple[Path, TrainResult, dict[str, Any]]  # the file, the training result, extra manifest fields


def _pretrain_light(src: SourceSpec, images: ImageDataset, folder: Path, device: str) -> Made:
    """``pipeline.pretrain`` with a given MAE decoder or the labelled objective (see the module
    docstring): the same steps (RMS-matched random template, width scaling hook, small_pretrain
    recipe, loader, log interval) from the library's pieces. Light MAE sources also get a held-out
    MAE loss (the decoder, which is not saved, is needed for it)."""
    torch.manual_seed(src.seed)
    model = src.model.build()
    encoder = model
    if src.kind != "dense":
        encoder = factorize(model, ranks=src.ranks, method=src.kind, init="random", seed=src.seed)
    hook = None
    if src.kind == "tucker" and src.scaling != "off":
        hook = WidthScaling(src.scaling, seed=src.seed).attach(encoder)
    if src.objective == "mae":
        assert src.decoder is not None  # a light MAE source is one with its own decoder
        dim, depth, heads = src.decoder
        objective = masked_model_for(
            encoder, mask_ratio=MASK_RATIO, decoder_dim=dim, decoder_depth=depth, decoder_heads=heads
        )
        loss_fn = masked_image_loss
    else:
        objective, loss_fn = encoder, classification_loss(0.1)
    loader = make_train_loader(images, src.batch_size, image_size=src.model.img_size, seed=src.seed)
    config = get_recipe("small_pretrain").train_config(
        src.steps, src.batch_size, lr=src.lr, seed=src.seed, device=device, log_every=max(1, min(50, src.steps // 20))
    )
    result = train(objective, loader, loss_fn, config, before_step=hook.set_step if hook else None)
    objective.cpu().eval()  # eval: the scaling hook is off, the template is scored as it will be used
    extra = {}
    if src.objective == "mae":
        extra["mae_heldout_loss"] = mae_loss(objective, images, src.model.img_size, src.seed)
    folder.mkdir(parents=True, exist_ok=True)
    if src.kind == "dense":
        return save_model(folder / src.filename, model, src.model, {"steps": result.step}), result, extra
    return save_template(folder / src.filename, encoder), result, extra


def _pretrain(src: SourceSpec, images: ImageDataset, folder: Path, device: str) -> Made:
    """``src`` pre-trained by ``pipeline.pretrain`` (resuming an interrupted run) or, where it
    cannot make it, by :func:`_pretrain_light`."""
    if src.light:
        return _pretrain_light(src, images, folder, device)
    result = pretrain(
        src.model,
        images,
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
    )
    return result.path, result.train, {}


def ensure_source(src: SourceSpec, cache_dir: Path, device: str = "auto") -> Source:
    """The cached source, pre-training it first when it is not in ``cache_dir`` yet.

    A ``source.json`` manifest, written last, marks a finished entry.
    """
    folder = Path(cache_dir) / src.key()
    manifest = folder / "source.json"
    if manifest.is_file() and (folder / src.filename).is_file():
        log(f"cached  {src.describe()} ({folder})")
        return Source(src, folder / src.filename, json.loads(manifest.read_text()), reused=True)
    what = "labels" if src.objective == "supervised" else "MAE"
    log(f"pre-train {src.describe()}: {what}, {src.steps} steps x batch {src.batch_size} on {src.data}")
    start = time.perf_counter()
    images = subset(load_split(src.data, "train"), src.train_subset, PRETRAIN_SUBSET_SEED)
    path, result, extra = _pretrain(src, images, folder, device)
    losses = _logged_losses(folder / "metrics.jsonl") or [h["loss"] for h in result.history if "loss" in h]
    meta = {
        "spec": {**asdict(src), "model": asdict(src.model)},
        "key": src.key(),
        "describe": src.describe(),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_loss": result.loss,
        **extra,
        # The whole run's time, also when it was resumed (the timer here sees only this invocation).
        "pretrain_s": max(float(result.elapsed_s), 0.0) or time.perf_counter() - start,
        "file_bytes": path.stat().st_size,
    }
    (folder / "last.pt").unlink(missing_ok=True)  # the optimizer state is not needed once finished
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, manifest)
    log(f"  done in {fmt_duration(meta['pretrain_s'])}; loss {meta['first_loss']} -> {meta['final_loss']}")
    return Source(src, path, meta)


def max_shared_ranks(spec: ModelSpec) -> tuple[int, int, int]:
    """The largest ranks a shared Tucker core can have on ``spec`` (mode sizes of its smallest group).

    Used for ResNet templates, whose stages give groups of different sizes.
    """
    model = spec.build()
    layout = build_layout(model, get_adapter(model, None))
    r1, r2, r3 = (min(g.shape[m] for g in layout.groups) for m in range(3))
    return r1, r2, r3


def template_params(path: Path) -> dict[str, int]:
    """Numbers of template (core) and scaler parameters in a template file."""
    wt = load_template(path)
    core = sum(v.numel() for v in wt.template.values())
    scalers = sum(v.numel() for group in wt.scalers for v in group.values())
    return {"template": int(core), "scalers": int(scalers)}
