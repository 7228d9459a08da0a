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

    .venv/bin/python experiments/mae_vs_supervised.py --quick   # ~4-5 min (estimate) on a 2-core CPU, 1 seed
    .venv/bin/python experiments/mae_vs_supervised.py           # full: 3 seeds, larger target, ~2-2.5 h on CPU
    .venv/bin/python experiments/mae_vs_supervised.py --smoke   # seconds; for the tests only

Outputs under ``results/mae_vs_supervised/<setting>/``: ``mae_vs_supervised.md`` (command line,
settings, table, conclusion), ``mae_vs_supervised.csv`` (the table), ``runs.csv`` (every run),
``classification.png``, ``segmentation.png``, ``segmentation_examples.png``. Finished stages are cached
under ``cache/<settings hash>/`` (the hash covers the settings, not the code: delete ``cache/`` after
changing the script).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the library importable without installing it
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from analysis import aggregate, write_table  # noqa: E402
from analysis.report import new_figure, save_figure  # noqa: E402
from experiments._ablation import (  # noqa: E402
    Progress,
    block_norm_ratio,
    build_target,
    cached,
    cached_weights,
    command_string,
    finetune_classifier,
    git_revision,
    linear_probe,
    load_splits,
    make_parser,
    masked_model,
    noise_margin,
    pretrain_config,
    resolve_setting,
    run_main,
    settings_hash,
    step_seconds,
    subset,
    verdict,
)
from tucker_init.data import BatchLoader, ImageDataset, load_dataset  # noqa: E402
from tucker_init.factorized import factorize  # noqa: E402
from tucker_init.io import save_template  # noqa: E402
from tucker_init.mae import unpatchify  # noqa: E402
from tucker_init.pipeline import ModelSpec  # noqa: E402
from tucker_init.stochastic import WidthScaling  # noqa: E402
from tucker_init.train import (  # noqa: E402
    classification_loss,
    evaluate,
    masked_image_loss,
    train,
)
from tucker_init.training.recipes import get_recipe  # noqa: E402

NAME = "mae_vs_supervised"
OBJECTIVES = ("mae", "supervised")
INITS = ("random", *OBJECTIVES)


# -- settings --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """Everything that decides the numbers of a run (hashed into the cache folder name)."""

    name: str
    data: str
    img_size: int
    patch_size: int
    depth: int  # template source size
    width: int
    target: tuple[int, int]  # (depth, width) of the target both templates initialize
    ranks: tuple[int, int, int]
    scaling: str
    pretrain_steps: int
    pretrain_subset: int | None
    finetune_steps: int
    train_subset: int | None
    test_subset: int | None
    probe_train: int
    seg_train: int  # composite images for the segmentation task
    seg_test: int
    seg_steps: int
    batch_size: int
    pretrain_lr: float
    finetune_lr: float
    probe_lr: float  # decoder-only segmentation probe
    decoder: tuple[int, int, int]  # MAE decoder (dim, depth, heads): light, the encoder is what we keep
    seeds: tuple[int, ...]


_COMMON = dict(
    data="fashion_mnist",
    img_size=16,
    patch_size=4,
    depth=4,
    width=128,
    ranks=(24, 64, 64),
    scaling="off",  # pipeline.pretrain's default: prefix and rank lost 4-5 points in stochastic_scaling.py
    batch_size=64,
    pretrain_lr=1.5e-3,
    finetune_lr=1e-3,
    probe_lr=5e-3,
    decoder=(64, 1, 2),
)


def _setting(**changes: Any) -> Setting:
    return Setting(**{**_COMMON, **changes})


SETTINGS: dict[str, Setting] = {
    "smoke": _setting(
        name="smoke",
        data="digits",
        depth=1,
        width=64,
        target=(1, 64),
        ranks=(4, 16, 16),
        batch_size=16,
        decoder=(32, 1, 2),
        pretrain_steps=2,
        pretrain_subset=128,
        finetune_steps=2,
        train_subset=128,
        test_subset=64,
        probe_train=64,
        seg_train=64,
        seg_test=32,
        seg_steps=2,
        seeds=(0,),
    ),
    # Minutes on 2 CPU cores: one seed, short budgets; differences of a point or two are noise.
    "quick": _setting(
        name="quick",
        target=(4, 128),
        pretrain_steps=400,
        pretrain_subset=20000,
        finetune_steps=150,
        train_subset=10000,
        test_subset=1000,
        probe_train=1500,
        seg_train=4000,
        seg_test=1000,
        seg_steps=150,
        seeds=(0,),
    ),
    # Hours on 2 CPU cores: a deeper and wider target than the template, 3 seeds, all data.
    "full": _setting(
        name="full",
        target=(6, 192),
        pretrain_steps=3000,
        pretrain_subset=None,
        finetune_steps=600,
        train_subset=None,
        test_subset=None,
        probe_train=5000,
        seg_train=20000,
        seg_test=2000,
        seg_steps=600,
        seeds=(0, 1, 2),
    ),
}


# -- data ----------------------------------------------------------------------------------------------
def load_data(setting: Setting) -> tuple[ImageDataset, ImageDataset, ImageDataset, ImageDataset, ImageDataset]:
    """``(pretrain, train, test, probe_train, items_test)``; subsets fixed (seed 0) across seeds."""
    splits = load_splits(setting)
    probe = subset(splits.full_train, setting.probe_train, 3)
    return splits.pretrain, splits.train, splits.test, probe, splits.full_test


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


# -- stages --------------------------------------------------------------------------------------------
def pretrain_template(
    spec: ModelSpec,
    data: ImageDataset,
    test: ImageDataset,
    path: Path,
    setting: Setting,
    objective: str,
    seed: int,
    device: str,
) -> dict[str, Any]:
    """Pre-train a Tucker template (HOSVD of timm's init) with MAE or with labels; same budget either way.

    Written against the library's pieces rather than ``pipeline.pretrain``, which has no supervised
    objective and does not expose the MAE decoder size (the default decoder costs ~3x the small encoder).
    """
    torch.manual_seed(seed)
    fm = factorize(spec.build(), ranks=setting.ranks, method="tucker", init="random", seed=seed)  # as pipeline.pretrain
    hook = WidthScaling(setting.scaling, seed=seed).attach(fm) if setting.scaling != "off" else None
    if objective == "mae":
        model: nn.Module = masked_model(fm, setting.decoder)
        loss_fn = masked_image_loss
    else:
        model, loss_fn = fm, classification_loss(0.1)
    loader = BatchLoader(data, setting.batch_size, image_size=spec.img_size, augment=True, seed=seed)
    config = pretrain_config(setting, seed, device)
    result = train(model, loader, loss_fn, config, before_step=hook.set_step if hook else None)
    model.cpu().eval()
    info: dict[str, Any] = {"pretrain_loss": result.loss, "seconds": result.elapsed_s}
    if objective == "supervised":  # how well the labelled template itself classifies (its own head)
        test_loader = BatchLoader(test, min(256, len(test)), image_size=spec.img_size, shuffle=False, drop_last=False)
        info["own_top1"] = evaluate(fm, test_loader)["top1"]
    save_template(path, fm)
    return info


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


# -- main -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seg-steps", type=int, help="override the segmentation training steps")

    parser = make_parser(
        __doc__,
        NAME,
        data_help="override the classification / item data set (fashion_mnist, digits, ...)",
        pretrain_help="override the pre-training steps (both objectives)",
        finetune_help="override the classification fine-tuning steps",
        extra=extra,
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the experiment; ``argv`` as on the command line (``None``: ``sys.argv[1:]``). Returns 0."""
    return run_main(argv, parse_args, run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """The experiment itself (see the module docstring)."""
    setting = resolve_setting(SETTINGS, args, seg_steps=args.seg_steps)
    out = args.out or ROOT / "results" / NAME / setting.name
    cache = out / "cache" / settings_hash(setting)
    command = command_string(NAME, argv)
    source = ModelSpec("vit", setting.depth, setting.width, 10, setting.img_size, setting.patch_size)
    target = source.with_size(*setting.target)
    tokens = (setting.img_size // setting.patch_size) ** 2 + 1

    b = setting.batch_size
    cost_pre = {
        "mae": setting.pretrain_steps * step_seconds(setting.width, setting.depth, tokens, b, "mae"),
        "supervised": setting.pretrain_steps * step_seconds(setting.width, setting.depth, tokens, b),
    }
    cost_target = (setting.finetune_steps + setting.seg_steps) * step_seconds(
        target.width, target.depth, tokens, b
    ) + setting.seg_steps * step_seconds(target.width, target.depth, tokens, b, "frozen")
    progress = Progress(NAME, len(setting.seeds) * (sum(cost_pre.values()) + len(INITS) * cost_target))
    print(
        f"[{NAME}] setting {setting.name}: templates {list(OBJECTIVES)} from {source.name}, target {target.name}, "
        f"{len(setting.seeds)} seed(s); estimated ~{progress.total / 60:.0f} min with 1 CPU thread (much less "
        f"on a GPU). Output: {out}",
        flush=True,
    )
    pre_set, train_set, test_set, probe_set, items_test = load_data(setting)
    progress.stage(
        f"building the segmentation task: {setting.seg_train} + {setting.seg_test} {setting.data} items pasted "
        "onto crops of real photos"
    )
    seg_train = make_segmentation_set(train_set, "train", setting.seg_train, setting.img_size, seed=0)
    seg_test = make_segmentation_set(items_test, "test", setting.seg_test, setting.img_size, seed=0)
    background_share = 1.0 - float(seg_test.masks.float().mean())

    runs: list[dict[str, Any]] = []
    pre_info: dict[str, dict[str, Any]] = {}
    examples: dict[str, np.ndarray] = {}  # seed-0 predicted masks of the first test composites, per init
    for seed in setting.seeds:
        paths = {obj: cache / f"seed{seed}" / f"template_{obj}.safetensors" for obj in OBJECTIVES}
        for obj in OBJECTIVES:
            progress.stage(f"seed {seed}: pre-train the {obj} template ({setting.pretrain_steps} steps)")
            path = paths[obj]

            def run_pretrain(obj: str = obj, path: Path = path, seed: int = seed) -> dict[str, Any]:
                return pretrain_template(source, pre_set, test_set, path, setting, obj, seed, args.device)

            info = cached_weights(path, run_pretrain)
            pre_info.setdefault(obj, info)
            progress.advance(cost_pre[obj])
            extra = f", own top-1 {info['own_top1']:.2f}" if "own_top1" in info else ""
            print(f"    final loss {info['pretrain_loss']:.4f}{extra}", flush=True)

        for init in INITS:
            template = paths.get(init)
            progress.stage(f"seed {seed}: {target.name} from {init}: probe, fine-tune, segmentation")

            def run_cls(init: str = init, template: Path | None = template, seed: int = seed) -> dict[str, Any]:
                model = build_target(target, init, template, seed, reset_head=True)
                ratio = block_norm_ratio(model, build_target(target, "random", None, seed))
                probe = linear_probe(model, probe_set, test_set, setting.img_size)
                result = finetune_classifier(model, train_set, test_set, setting, seed, args.device)
                return {"norm_ratio": ratio, "probe_top1": probe, **result}

            def run_seg(
                init: str = init, template: Path | None = template, seed: int = seed, frozen: bool = False
            ) -> dict[str, Any]:
                model = build_target(target, init, template, seed, reset_head=True)
                return train_segmenter(model, seg_train, seg_test, setting, seed, args.device, frozen)

            cls = cached(cache / f"seed{seed}" / f"{init}_classification.json", run_cls)
            seg = cached(cache / f"seed{seed}" / f"{init}_seg.json", run_seg)
            seg_frozen = cached(cache / f"seed{seed}" / f"{init}_seg_frozen.json", lambda r=run_seg: r(frozen=True))
            if seed == setting.seeds[0]:
                examples[init] = np.asarray(seg["examples"], dtype=bool)
            progress.advance(cost_target)
            print(
                f"    block-weight norm / timm init {cls['norm_ratio']:.2f}, probe {cls['probe_top1']:.1f}, "
                f"fine-tuned top-1 {cls['top1']:.2f}; segmentation mIoU "
                f"{seg['miou']:.1f} (frozen encoder {seg_frozen['miou']:.1f}), pixel acc {seg['pixel_acc']:.1f}",
                flush=True,
            )
            runs.append(
                {
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
                    "seg_frozen_miou": seg_frozen["miou"],
                    "seg_frozen_miou_se": seg_frozen["miou_se"],
                }
            )

    progress.stage("writing tables and plots")
    rows, stats = summarize(runs)
    write_table(runs, out / "runs", command)
    write_table(rows, out / NAME, command)
    elapsed = time.perf_counter() - progress.start
    lines = conclusions(stats, len(test_set), background_share, len(setting.seeds))
    table = [
        "| init | n | norm_ratio | " + " | ".join(label for _, label in METRICS) + " |",
        "|---|---|---|" + "---|" * len(METRICS),
    ]
    for r in rows:
        cells = [f"{r[f'{k}_mean']:.2f} ± {r[f'{k}_std']:.2f}" for k, _ in METRICS]
        table.append(f"| {r['init']} | {r['n']} | {r['norm_ratio']:.2f} | " + " | ".join(cells) + " |")
    own = pre_info["supervised"].get("own_top1")
    report = f"""# MAE template vs a template trained with labels

Produced by: `{command}`

Commit `{git_revision()}`, torch {torch.__version__} ({torch.get_num_threads()} CPU thread(s)), setting
`{setting.name}`, {elapsed / 60:.1f} min.

**Question.** Is a template pre-trained with masked image modeling (SWEET) a better initializer than one
pre-trained with labels (same budget), on classification and on a task that is not classification?

**How.** Source ViT {source.name} ({setting.img_size}x{setting.img_size} images, patch {setting.patch_size}),
Tucker ranks {setting.ranks}, width scaling `{setting.scaling}`; both templates trained {setting.pretrain_steps}
steps, batch {setting.batch_size}, AdamW lr {setting.pretrain_lr}, on the same {setting.pretrain_subset or "all"}
`{setting.data}` training images (MAE: mask 0.75, decoder {setting.decoder}, labels unused; supervised:
cross-entropy with label smoothing 0.1, its own top-1 on the test images {own if own is None else f"{own:.2f}"}).
Final losses: MAE {pre_info["mae"]["pretrain_loss"]:.4f}, supervised {pre_info["supervised"]["pretrain_loss"]:.4f}.
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
fc2) over that of timm's init. Seeds {list(setting.seeds)}.

## Results (mean ± std over seeds)

{chr(10).join(table)}

## Conclusion

{chr(10).join(lines)}

Plots: `classification.png`, `segmentation.png`, `segmentation_examples.png`; every run: `runs.csv`.
"""
    (out / f"{NAME}.md").write_text(report)
    stem = f"target {target.name}, {len(setting.seeds)} seed(s)"
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
        f"{100 * background_share:.0f}%, mIoU {50 * background_share:.0f}%)",
        ylabel="% (mean ± std over seeds)",
    )
    plot_examples(examples, seg_test, out / "segmentation_examples.png", command)

    print("\n" + "\n".join(table))
    print("\n" + "\n".join(lines))
    print(f"\n[{NAME}] done in {elapsed / 60:.1f} min; report: {out / (NAME + '.md')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
