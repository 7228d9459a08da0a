"""MAE template vs a template trained with labels: which makes the better initializer, for
classification and for a task that is not classification?

Two Tucker templates are pre-trained from the same source ViT (same ranks, width scaling, steps,
batch, learning rate, seed and images):

- ``mae``: masked image modeling (SWEET's objective; labels unused);
- ``supervised``: cross-entropy of the factorized model's own classifier on the labels (WAVE-like).

Each initializes the same target (``depth="interpolate"``, ``width="slice"``); its classifier head is
then reset to timm's init, so the labelled template cannot hand over its trained classifier (its
backbone still saw the labels). A randomly initialized twin (timm's init, same seed) is the
reference on both tasks:

(a) **classification** on the same data set: linear probe of the frozen initialized encoder, then
    top-1 after fine-tuning everything. The labelled template was trained on these very labels,
    which favours it: treat this column as its best case.
(b) **segmentation** built from real images: a Fashion-MNIST item (grey, randomly tinted, scaled and
    placed) is pasted onto a random crop of a natural photo (``load_dataset("photos")``); the
    per-pixel target is the item's mask (its pixels above a threshold). A light per-patch linear
    decoder maps each ViT patch token to the p x p mask logits of its patch. Reported: mIoU
    (item / background) and pixel accuracy, after fine-tuning everything and with the encoder frozen
    (decoder only: how usable the initialized features are as they are).

Run (from the repository root):

    python -m experiments.mae_vs_supervised --quick   # ~4-5 min (estimate) on a 2-core CPU, 1 seed
    python -m experiments.mae_vs_supervised           # full: 3 seeds, larger target, ~2-2.5 h on CPU
    python -m experiments.mae_vs_supervised --smoke   # seconds; for the tests only

Outputs under ``results/mae_vs_supervised/<mode>/``: ``mae_vs_supervised.md`` (command line,
settings, table, conclusion), ``mae_vs_supervised.csv`` (the table), ``runs.csv`` (every run),
``classification.png``, ``segmentation.png``, ``segmentation_examples.png``. The templates go to the
shared source cache (``--cache``), finished runs to ``runs/`` (keyed by the settings, not the code:
delete ``runs/`` after changing the script).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis import aggregate, write_table
from analysis.report import new_figure, save_figure
from experiments.harness.cache import cached_run, settings_of
from experiments.harness.cli import Context, entry_point, resolve_setting
from experiments.harness.data import Splits, fixed_test_loader, load_splits
from experiments.harness.estimate import Job, Progress, estimate_seconds, fmt_duration, log
from experiments.harness.measure import block_norm_ratio, linear_probe, noise_margin, verdict
from experiments.harness.provenance import md_table, mean_std, report_header, write_report
from experiments.harness.runs import init_target
from experiments.harness.settings import BUDGETS, AblationSetting
from experiments.harness.sources import Source, SourceSpec, ensure_source, source_job
from tucker_init import ImageDataset, load_dataset, load_template, to_factorized
from tucker_init.objectives.mae import unpatchify
from tucker_init.pipeline import ModelSpec
from tucker_init.training import evaluate, train
from tucker_init.training.recipes import get_recipe

NAME = "mae_vs_supervised"
OBJECTIVES = ("mae", "supervised")
INITS = ("random", *OBJECTIVES)


# -- settings --------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Setting(AblationSetting):
    """The comparison's setting: the target both templates initialize, their ranks, and the
    segmentation task."""

    target: tuple[int, int]  # (depth, width)
    ranks: tuple[int, int, int] = (24, 64, 64)
    seg_train: int  # composite images for the segmentation task
    seg_test: int
    seg_steps: int
    probe_lr: float = 5e-3  # decoder-only segmentation probe


SETTINGS: dict[str, Setting] = {
    "smoke": Setting(
        **BUDGETS["smoke"], width=64, target=(1, 64), ranks=(4, 16, 16), seg_train=64, seg_test=32, seg_steps=2
    ),
    "quick": Setting(**BUDGETS["quick"], target=(4, 128), seg_train=4000, seg_test=1000, seg_steps=150),
    # A deeper and wider target than the template.
    "full": Setting(**BUDGETS["full"], target=(6, 192), seg_train=20000, seg_test=2000, seg_steps=600),
}


# -- data: the segmentation task ----------------------------------------------------------------
@dataclass
class SegmentationSet:
    """Composite images ``(N, 3, H, W)`` uint8 and item masks ``(N, H, W)`` bool."""

    images: Tensor
    masks: Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def make_segmentation_set(items: ImageDataset, split: str, n: int, size: int, seed: int) -> SegmentationSet:
    """Paste one item (e.g. a Fashion-MNIST garment) onto each of ``n`` random crops of real photos.

    The item is scaled to 45-90% of the image side, tinted with a random colour and placed at a random
    position; its mask is its own pixels above 20% intensity (so the label comes from the item's
    pixels, not from its bounding box). Train and test use different crops (the photos loader's
    split) and, when ``items`` differ, different items; the photos themselves are the same six.
    """
    photos = load_dataset("photos", split, n=n, size=size, seed=seed)
    g = torch.Generator().manual_seed(seed * 7919 + (0 if split == "train" else 1))
    pick = torch.randint(len(items), (n,), generator=g)
    sides = torch.randint(max(2, round(0.45 * size)), max(3, round(0.9 * size)) + 1, (n,), generator=g)
    tints = 0.3 + 0.7 * torch.rand(n, 3, generator=g)
    u = torch.rand(n, 2, generator=g)
    images = photos.images.float() / 255.0
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for side in sides.unique().tolist():  # one resize per item size, not per image
        idx = (sides == side).nonzero().flatten()
        item = items.images[pick[idx]].float() / 255.0
        item = item.mean(1, keepdim=True)  # grey
        item = F.interpolate(item, size=(side, side), mode="bilinear", antialias=True, align_corners=False)[:, 0]
        for k, i in enumerate(idx.tolist()):
            y0 = int(u[i, 0] * (size - side + 1))
            x0 = int(u[i, 1] * (size - side + 1))
            m = item[k] > 0.2
            patch = images[i, :, y0 : y0 + side, x0 : x0 + side]
            patch[:, m] = item[k][m][None] * tints[i][:, None]
            masks[i, y0 : y0 + side, x0 : x0 + side] = m
    return SegmentationSet((images * 255).round().clamp(0, 255).to(torch.uint8), masks)


class SegLoader:
    """Seeded batches ``(x normalized like BatchLoader, mask float (B, 1, H, W))``; random horizontal flips
    for training. Each iteration is one epoch (the library's ``train`` re-iterates it)."""

    def __init__(self, data: SegmentationSet, batch_size: int, *, train: bool, seed: int = 0) -> None:
        self.data, self.batch_size, self.train, self.seed, self.epoch = data, batch_size, train, seed, 0

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.train else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(len(self.data), generator=g) if self.train else torch.arange(len(self.data))
        self.epoch += 1
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = (self.data.images[idx].float() / 255.0 - 0.5) / 0.5
            y = self.data.masks[idx].float()[:, None]
            if self.train:
                flip = torch.rand(len(idx), generator=g) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                y = torch.where(flip[:, None, None, None], y.flip(-1), y)
            yield x, y


class PatchSegmenter(nn.Module):
    """ViT encoder + a per-patch linear decoder: each patch token -> the p x p mask logits of its patch."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.encoder = vit
        self.patch = tuple(vit.patch_embed.patch_size)
        self.grid = tuple(vit.patch_embed.grid_size)
        self.decoder = nn.Linear(vit.embed_dim, self.patch[0] * self.patch[1])

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.encoder.forward_features(x)[:, self.encoder.num_prefix_tokens :]  # (B, N, D)
        return unpatchify(self.decoder(tokens), self.patch, self.grid, 1)  # (B, 1, H, W)


def seg_loss(model: nn.Module, batch: Any) -> Tensor:
    x, y = batch
    return F.binary_cross_entropy_with_logits(model(x).float(), y)


@torch.no_grad()
def seg_metrics(model: nn.Module, data: SegmentationSet, chunks: int = 10) -> dict[str, float]:
    """mIoU (mean of item and background IoU, percent), item IoU, pixel accuracy, and the standard error
    of the mIoU and of the pixel accuracy over ``chunks`` slices of the test set (the test-sampling noise of
    a single run)."""
    model.eval()
    counts = []  # per image: true positives, false positives, false negatives, true negatives
    for x, y in SegLoader(data, 256, train=False):
        pred, truth = model(x) > 0, y > 0.5
        counts.append(
            torch.stack([(pred & truth), (pred & ~truth), (~pred & truth), (~pred & ~truth)], dim=1).flatten(2).sum(-1)
        )
    c = torch.cat(counts).double()  # (N, 4)

    def miou(t: Tensor) -> tuple[float, float, float]:
        tp, fp, fn, tn = t.sum(0).tolist()
        item, background = tp / max(tp + fp + fn, 1), tn / max(tn + fn + fp, 1)
        return 100 * (item + background) / 2, 100 * item, 100 * (tp + tn) / max(tp + fp + fn + tn, 1)

    m, item, acc = miou(c)
    parts = np.array([miou(part) for part in c.chunk(chunks) if len(part)])  # (chunks, 3)
    se = parts.std(0, ddof=1) / math.sqrt(len(parts)) if len(parts) > 1 else np.zeros(3)
    return {"miou": m, "item_iou": item, "pixel_acc": acc, "miou_se": float(se[0]), "pixel_acc_se": float(se[2])}


def train_segmenter(
    vit: nn.Module,
    train_set: SegmentationSet,
    test_set: SegmentationSet,
    setting: Setting,
    seed: int,
    device: str,
    frozen: bool,
) -> dict[str, Any]:
    """Train the per-patch decoder (and the encoder unless ``frozen``) with per-pixel BCE; test metrics."""
    torch.manual_seed(seed)
    model = PatchSegmenter(vit)
    if frozen:
        model.encoder.requires_grad_(False)
    steps = setting.seg_steps
    config = get_recipe("small_finetune").train_config(
        steps,
        setting.batch_size,
        lr=setting.probe_lr if frozen else setting.finetune_lr,
        label_smoothing=0.0,
        seed=seed,
        device=device,
        log_every=max(1, steps // 5),
    )
    result = train(model, SegLoader(train_set, setting.batch_size, train=True, seed=seed), seg_loss, config)
    model.cpu().eval()
    with torch.no_grad():  # a few predicted masks for the example figure
        x, _ = next(iter(SegLoader(SegmentationSet(test_set.images[:6], test_set.masks[:6]), 6, train=False)))
        examples = (model(x)[:, 0] > 0).int().tolist()
    return {**seg_metrics(model, test_set), "seconds": result.elapsed_s, "examples": examples}


# -- plan -> run ---------------------------------------------------------------------------------------
def template_source(setting: Setting, objective: str, seed: int) -> SourceSpec:
    """The template of one objective and seed (the MAE one is a shared cache entry)."""
    return setting.source_spec("tucker", seed, ranks=setting.ranks, scaling=setting.scaling, objective=objective)


def target_jobs(setting: Setting, target: ModelSpec) -> list[Job]:
    """Probe, fine-tuning and the two segmentation trainings of one init."""
    n_test, b = setting.test_subset or 10_000, setting.batch_size
    return [
        Job(target, "eval", setting.probe_train + 2 * n_test),
        Job(target, "ft", setting.finetune_steps + setting.seg_steps, b),
        Job(target, "eval", setting.seg_steps * b + 2 * setting.seg_test),  # frozen encoder: forward only
    ]


def announce(setting: Setting, target: ModelSpec, context: Context) -> Progress:
    """Print the plan and its measured estimate; the progress of the run."""
    jobs = [source_job(template_source(setting, o, seed)) for seed in setting.seeds for o in OBJECTIVES]
    jobs += [j for _ in setting.seeds for _ in INITS for j in target_jobs(setting, target)]
    total = estimate_seconds(jobs, context.device)
    log(
        f"{NAME} ({setting.name}): templates {list(OBJECTIVES)} from {setting.source.name}, target {target.name}, "
        f"{len(setting.seeds)} seed(s); estimated ~{fmt_duration(total)} on this machine (cached stages are "
        f"skipped). Output: {context.out}"
    )
    return Progress(total)


@dataclass(frozen=True)
class Task:
    """The data every run of one invocation shares."""

    splits: Splits
    probe: ImageDataset
    seg_train: SegmentationSet
    seg_test: SegmentationSet

    @property
    def background_share(self) -> float:
        """Pixel accuracy of predicting 'background' everywhere."""
        return 1.0 - float(self.seg_test.masks.float().mean())


def make_task(setting: Setting, progress: Progress) -> Task:
    """Classification splits, probe images and the segmentation composites."""
    splits = load_splits(setting.data, train_subset=setting.train_subset, test_subset=setting.test_subset)
    progress.stage(
        f"building the segmentation task: {setting.seg_train} + {setting.seg_test} {setting.data} items pasted "
        "onto crops of real photos"
    )
    seg_train = make_segmentation_set(splits.train, "train", setting.seg_train, setting.img_size, seed=0)
    seg_test = make_segmentation_set(splits.full_test, "test", setting.seg_test, setting.img_size, seed=0)
    return Task(splits, splits.probe(setting.probe_train), seg_train, seg_test)


def own_top1(source: Source, task: Task) -> float:
    """How well the labelled template itself classifies the test images (its own head)."""
    model = to_factorized(load_template(source.path), source.spec.model.build()).eval()
    return float(evaluate(model, fixed_test_loader(task.splits.test, source.spec.model.img_size))["top1"])


def pretrain_templates(setting: Setting, seed: int, task: Task, context: Context, progress: Progress):
    """The seed's two templates, from the cache or pre-trained now."""
    made: dict[str, Source] = {}
    for objective in OBJECTIVES:
        src = template_source(setting, objective, seed)
        progress.stage(f"seed {seed}: pre-train the {objective} template ({setting.pretrain_steps} steps)")
        made[objective] = ensure_source(src, context.cache, context.device)
        extra = ""
        if objective == "supervised":
            made[objective].meta["own_top1"] = own_top1(made[objective], task)
            extra = f", own top-1 {made[objective].meta['own_top1']:.2f}"
        log(f"    final loss {made[objective].meta['train_loss']:.4f}{extra}")
        if not made[objective].reused:
            progress.advance(estimate_seconds([source_job(src)], context.device))
    return made


def build(setting: Setting, target: ModelSpec, init: str, template: Path | None, seed: int) -> nn.Module:
    """The target from ``init``, its classifier head at timm's init."""
    method = "random" if init == "random" else "tucker"
    return init_target(target, method, template, seed, seed_method=method == "tucker", reset_head=True)[0]


def run_classification(
    setting: Setting, task: Task, target: ModelSpec, init: str, template: Path | None, seed: int, device: str
) -> dict[str, Any]:
    """Weight-norm ratio, linear probe and fine-tuned top-1 of one init."""
    model = build(setting, target, init, template, seed)
    ratio = block_norm_ratio(model, init_target(target, "random", None, seed)[0])
    probe = linear_probe(model, task.probe, task.splits.test, setting.img_size)
    result = setting.finetune(model, task.splits, seed, device)
    assert result.final_eval is not None
    return {"norm_ratio": ratio, "probe_top1": probe, "top1": result.final_eval["top1"], "seconds": result.elapsed_s}


def run_init(
    setting: Setting, task: Task, target: ModelSpec, init: str, source: Source | None, seed: int, context: Context
) -> tuple[dict, dict, dict]:
    """Classification, segmentation and frozen-encoder segmentation of one init (each cached)."""
    template = source.path if source else None
    folder = context.out / "runs" / f"seed{seed}"
    settings = {**settings_of(setting), "init": init, "seed": seed, "source": source.spec.key() if source else None}

    def seg(frozen: bool) -> dict[str, Any]:
        model = build(setting, target, init, template, seed)
        return train_segmenter(model, task.seg_train, task.seg_test, setting, seed, context.device, frozen)

    cls = cached_run(
        folder / f"{init}_classification.json",
        settings,
        lambda: run_classification(setting, task, target, init, template, seed, context.device),
    )
    segmented = cached_run(folder / f"{init}_seg.json", settings, lambda: seg(False))
    frozen = cached_run(folder / f"{init}_seg_frozen.json", settings, lambda: seg(True))
    return cls, segmented, frozen


def run_row(seed: int, init: str, cls: dict, seg: dict, frozen: dict) -> dict[str, Any]:
    """One line of ``runs.csv``."""
    return {
        "seed": seed,
        "init": init,
        "norm_ratio": cls["norm_ratio"],
        "probe_top1": cls["probe_top1"],
        "top1": cls["top1"],
        "seg_miou": seg["miou"],
        "seg_miou_se": seg["miou_se"],
        "seg_item_iou": seg["item_iou"],
        "seg_pixel_acc": seg["pixel_acc"],
        "seg_pixel_acc_se": seg["pixel_acc_se"],
        "seg_frozen_miou": frozen["miou"],
        "seg_frozen_miou_se": frozen["miou_se"],
    }


def run(setting: Setting, target: ModelSpec, task: Task, context: Context, progress: Progress):
    """Every (seed, init) run; the first seed's template manifests and predicted example masks."""
    runs: list[dict[str, Any]] = []
    first: dict[str, dict[str, Any]] = {}
    examples: dict[str, np.ndarray] = {}  # seed-0 predicted masks of the first test composites, per init
    for seed in setting.seeds:
        made = pretrain_templates(setting, seed, task, context, progress)
        for objective, source in made.items():
            first.setdefault(objective, source.meta)
        for init in INITS:
            progress.stage(f"seed {seed}: {target.name} from {init}: probe, fine-tune, segmentation")
            cls, seg, frozen = run_init(setting, task, target, init, made.get(init), seed, context)
            if not (cls.get("reused") and seg.get("reused") and frozen.get("reused")):
                progress.advance(estimate_seconds(target_jobs(setting, target), context.device))
            if seed == setting.seeds[0]:
                examples[init] = np.asarray(seg["examples"], dtype=bool)
            log(
                f"    block-weight norm / timm init {cls['norm_ratio']:.2f}, probe {cls['probe_top1']:.1f}, "
                f"fine-tuned top-1 {cls['top1']:.2f}; segmentation mIoU "
                f"{seg['miou']:.1f} (frozen encoder {frozen['miou']:.1f}), pixel acc {seg['pixel_acc']:.1f}"
            )
            runs.append(run_row(seed, init, cls, seg, frozen))
    return runs, first, examples


# -- report ------------------------------------------------------------------------------------------------
def compare(a: float, b: float, margin: float) -> str:
    """``a - b`` with its verdict against ``margin``."""
    d = a - b
    return f"{d:+.2f} ({verdict(d, margin)}, ±{margin:.2f})"


def margin_seg(a: dict[str, Any], b: dict[str, Any], key: str) -> float:
    """One standard error of a difference of two mean segmentation scores: seed spread, never below the
    test-chunk standard error (``{key}_se_mean``)."""
    chunks = math.sqrt(a[f"{key}_se_mean"] ** 2 + b[f"{key}_se_mean"] ** 2)
    seeds = math.sqrt(a[f"{key}_std"] ** 2 / a["n"] + b[f"{key}_std"] ** 2 / b["n"])
    return max(chunks, seeds)


METRICS = (
    ("probe_top1", "classification: linear probe top-1 (frozen init)"),
    ("top1", "classification: top-1 after fine-tuning"),
    ("seg_frozen_miou", "segmentation: mIoU, encoder frozen (decoder only)"),
    ("seg_miou", "segmentation: mIoU after fine-tuning"),
    ("seg_pixel_acc", "segmentation: pixel accuracy after fine-tuning"),
)


def summarize(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """One row per init (the table) and per-init statistics: mean / std over seeds of every metric, and
    the mean over seeds of the mIoU test-chunk standard errors (``seg_miou_se_mean``: the noise floor)."""
    keys = [k for k, _ in METRICS] + [
        "seg_miou_se",
        "seg_frozen_miou_se",
        "seg_pixel_acc_se",
        "seg_item_iou",
        "norm_ratio",
    ]
    stats: dict[str, dict[str, Any]] = {init: {"init": init} for init in INITS}
    for key in keys:
        for r in aggregate(runs, ["init"], key):
            stats[r["init"]].update({f"{key}_mean": r[f"{key}_mean"], f"{key}_std": r[f"{key}_std"], "n": r["n"]})
    rows = []
    for init in INITS:
        s = stats[init]
        row = {"init": init, "n": s["n"], "norm_ratio": s["norm_ratio_mean"]}
        for key, _ in METRICS:
            row[f"{key}_mean"], row[f"{key}_std"] = s[f"{key}_mean"], s[f"{key}_std"]
        row["seg_item_iou_mean"] = s["seg_item_iou_mean"]
        rows.append(row)
    return rows, stats


def conclusions(stats: dict[str, dict[str, Any]], n_test: int, background_share: float, seeds: int) -> list[str]:
    """Plain-language comparison, including where the templates do not help."""

    def margin(key: str, a: str, b: str) -> float:
        if key.startswith("seg_"):
            return margin_seg(stats[a], stats[b], key)
        return noise_margin(stats[a], stats[b], n_test, key)

    lines = []
    no_help: dict[str, list[str]] = {init: [] for init in OBJECTIVES}
    for key, label in METRICS:
        v = {i: stats[i][f"{key}_mean"] for i in INITS}
        parts = [
            f"mae {compare(v['mae'], v['random'], margin(key, 'mae', 'random'))} vs random",
            f"supervised {compare(v['supervised'], v['random'], margin(key, 'supervised', 'random'))} vs random",
            f"mae vs supervised {compare(v['mae'], v['supervised'], margin(key, 'mae', 'supervised'))}",
        ]
        lines.append(
            f"- **{label}**: random {v['random']:.2f}, mae {v['mae']:.2f}, supervised {v['supervised']:.2f}; "
            + "; ".join(parts)
            + "."
        )
        for init in OBJECTIVES:
            if v[init] - v["random"] <= margin(key, init, "random"):
                no_help[init].append(label)
    lines.append(
        f"- Block-matrix norm of the initialized target over timm's init (`norm_ratio`): mae "
        f"{stats['mae']['norm_ratio_mean']:.2f}, supervised {stats['supervised']['norm_ratio_mean']:.2f}. Well "
        "below 1 means the low-rank template hands over smaller weights than a random init, one plausible "
        "reason for slower early fine-tuning."
    )
    lines.append(
        f"- Segmentation reference: predicting 'background' everywhere gives pixel accuracy "
        f"{100 * background_share:.1f}% and mIoU {50 * background_share:.1f}%."
    )
    lines.append("")
    lines.append(
        "**Where the template does not help:** "
        + (
            " ".join(
                f"The {init} template is not clearly better than random init on: {'; '.join(measures)}."
                for init, measures in no_help.items()
                if measures
            )
            if any(no_help.values())
            else "both templates beat random init on every measure by more than the noise margin."
        )
    )
    lines.append(
        "Caveat: the labelled template was trained on the classification task's own labels, so its "
        "classification numbers are a best case for it; the segmentation task (new images, new output) is the "
        "fairer test of how general each template is."
    )
    if seeds < 2:
        lines.append(
            "One seed: the margins are only test-sampling errors (binomial for top-1, spread over 10 test "
            "slices for mIoU), not seed-to-seed variation. Treat small differences as unresolved; the full "
            "setting runs 3 seeds."
        )
    return lines


def plot_bars(
    runs: list[dict[str, Any]], metrics: tuple[tuple[str, str], ...], path: Path, command: str, title: str, ylabel: str
) -> None:
    """Grouped bars: one group per metric, one bar per init, error bars = std over seeds."""
    fig, axes = new_figure((8.0, 4.5))
    ax = axes[0, 0]
    x = np.arange(len(metrics))
    width = 0.8 / len(INITS)
    for j, init in enumerate(INITS):
        values = [[r[key] for r in runs if r["init"] == init] for key, _ in metrics]
        means = [float(np.mean(v)) for v in values]
        stds = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values]
        bars = ax.bar(x + (j - (len(INITS) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=init)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, [label for _, label in metrics])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylim(
        0, 1.18 * max(max(float(np.mean([r[k] for r in runs if r["init"] == i])) for i in INITS) for k, _ in metrics)
    )
    ax.legend(title="init", fontsize=8, loc="upper left", ncol=len(INITS))  # in the head-room above the bars
    save_figure(fig, path, command)


def plot_examples(predictions: dict[str, np.ndarray], data: SegmentationSet, path: Path, command: str) -> None:
    """The first test composites, their true masks and each init's prediction after fine-tuning."""
    k = min(len(p) for p in predictions.values())
    fig, axes = new_figure((1.6 * k, 1.7 * (2 + len(predictions))), nrows=2 + len(predictions), ncols=k)
    rows = [("image", data.images[:k].permute(0, 2, 3, 1).numpy()), ("true mask", data.masks[:k].numpy())]
    rows += [(f"{init} (fine-tuned)", pred[:k]) for init, pred in predictions.items()]
    for r, (label, arrays) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(arrays[c], cmap=None if arrays[c].ndim == 3 else "gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle("Segmentation test examples: image, true item mask, predictions", fontsize=9)
    save_figure(fig, path, command)


def results_table(rows: list[dict[str, Any]]) -> list[str]:
    """The results table in Markdown."""
    header = ["init", "n", "norm_ratio", *(label for _, label in METRICS)]
    cells = [
        [
            r["init"],
            r["n"],
            f"{r['norm_ratio']:.2f}",
            *(mean_std(r, k) for k, _ in METRICS),
        ]
        for r in rows
    ]
    return md_table(header, cells)


def _how(setting: Setting, target: ModelSpec, templates: dict[str, dict[str, Any]]) -> str:
    """How the numbers were made."""
    own = templates["supervised"].get("own_top1")
    return f"""**How.** Source ViT {setting.source.name} ({setting.img_size}x{setting.img_size} images, patch
{setting.patch_size}), Tucker ranks {setting.ranks}, width scaling `{setting.scaling}`; both templates trained
{setting.pretrain_steps} steps, batch {setting.batch_size}, AdamW lr {setting.pretrain_lr}, on the same
{setting.pretrain_subset or "all"} `{setting.data}` training images (MAE: mask 0.75, decoder {setting.decoder},
labels unused; supervised: cross-entropy with label smoothing 0.1, its own top-1 on the test images
{own if own is None else f"{own:.2f}"}).
Final losses: MAE {templates["mae"]["train_loss"]:.4f}, supervised {templates["supervised"]["train_loss"]:.4f}.
Both initialize target {target.name} (`depth="interpolate"`, `width="slice"`, classifier head reset to timm's
init); `random` = timm's init with the same seed.
Classification: logistic-regression probe on mean-pooled frozen features ({setting.probe_train} images), then
{setting.finetune_steps} fine-tuning steps (AdamW lr {setting.finetune_lr}) on {setting.train_subset or "all"}
images, top-1 on {setting.test_subset or "all"} test images.
Segmentation: {setting.seg_train} training / {setting.seg_test} test composites (a `{setting.data}` item,
grey x random tint, 45-90% of the side, pasted onto a random crop of one of the bundled natural photos; mask =
item pixels above 20% intensity; test items come from the test split); a per-patch linear decoder on the
ViT's patch tokens, per-pixel BCE, {setting.seg_steps} steps, either fine-tuning everything (lr
{setting.finetune_lr}) or with the encoder frozen (decoder only, lr {setting.probe_lr}). mIoU = mean of the
item and background IoU. `norm_ratio` = Frobenius norm of the initialized block matrices (qkv, proj, fc1,
fc2) over that of timm's init. Seeds {list(setting.seeds)}."""


def report(
    context: Context, setting: Setting, target: ModelSpec, templates: dict, rows: list, lines: list[str], elapsed: float
) -> Path:
    """The Markdown report: command, how, table, conclusion."""
    header = [
        *report_header("MAE template vs a template trained with labels", context.command, setting.name, elapsed / 60),
        "**Question.** Is a template pre-trained with masked image modeling (SWEET) a better initializer than one",
        "pre-trained with labels (same budget), on classification and on a task that is not classification?",
        "",
        _how(setting, target, templates),
    ]
    sections = [("Results (mean ± std over seeds)", results_table(rows)), ("Conclusion", lines)]
    footer = "Plots: `classification.png`, `segmentation.png`, `segmentation_examples.png`; every run: `runs.csv`."
    return write_report(context.out / f"{NAME}.md", header, sections, footer)


def plot(context: Context, setting: Setting, target: ModelSpec, runs: list, task: Task, examples: dict) -> None:
    """Classification and segmentation bars, and example masks."""
    stem = f"target {target.name}, {len(setting.seeds)} seed(s)"
    out, command, share = context.out, context.command, task.background_share
    plot_bars(
        runs,
        (("probe_top1", "linear probe (encoder frozen)"), ("top1", "fine-tuned")),
        out / "classification.png",
        command,
        title=f"Classification on {setting.data}, {stem}",
        ylabel="top-1 % (mean ± std over seeds)",
    )
    plot_bars(
        runs,
        (
            ("seg_frozen_miou", "mIoU, encoder frozen"),
            ("seg_miou", "mIoU, fine-tuned"),
            ("seg_pixel_acc", "pixel acc., fine-tuned"),
        ),
        out / "segmentation.png",
        command,
        title=f"Segmentation of items pasted on real photos, {stem}\n(all-background prediction: pixel acc. "
        f"{100 * share:.0f}%, mIoU {50 * share:.0f}%)",
        ylabel="% (mean ± std over seeds)",
    )
    plot_examples(examples, task.seg_test, out / "segmentation_examples.png", command)


# -- main -------------------------------------------------------------------------------------------------
def options(parser: Any) -> None:
    """The script's own options."""
    parser.add_argument("--seg-steps", type=int, help="override the segmentation training steps")


def experiment(context: Context) -> int:
    """Plan, run, summarize, report (see the module docstring)."""
    setting = resolve_setting(SETTINGS, context, seg_steps=context.args.seg_steps)
    target = setting.source.with_size(*setting.target)
    progress = announce(setting, target, context)
    task = make_task(setting, progress)
    runs, templates, examples = run(setting, target, task, context, progress)
    rows, stats = summarize(runs)
    lines = conclusions(stats, len(task.splits.test), task.background_share, len(setting.seeds))
    progress.stage("writing tables and plots")
    write_table(runs, context.out / "runs", context.command)
    write_table(rows, context.out / NAME, context.command)
    path = report(context, setting, target, templates, rows, lines, progress.elapsed)
    plot(context, setting, target, runs, task, examples)
    print("\n" + "\n".join(results_table(rows)) + "\n\n" + "\n".join(lines))
    log(f"{NAME} done in {fmt_duration(progress.elapsed)}; report: {path}")
    return 0


main = entry_point(
    NAME,
    __doc__,
    SETTINGS,
    experiment,
    extra=options,
    data_help="override the classification / item data set (fashion_mnist, digits, ...)",
    pretrain_help="override the pre-training steps (both objectives)",
    finetune_help="override the classification fine-tuning steps",
)


if __name__ == "__main__":
    sys.exit(main())
