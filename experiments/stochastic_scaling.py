"""Width-wise stochastic scaling ablation: does masking the width scalers during pre-training
(SWEET, DESIGN.md 1.3) make a template a better initializer for widths it was not trained at?

Three Tucker templates are pre-trained from the same source ViT (same ranks, same MAE budget,
same seed), differing only in the scaling mode:

- ``off``: no masks (the control);
- ``prefix``: keep the first d' of the d rows of U and V for a random d' (simulates narrower models);
- ``rank``: dropout over the r2 / r3 columns of U and V.

Each template initializes targets of the template's depth at several widths (``depth="interpolate"``,
``width="slice"``, the same rules for every mode). Widths:

- *seen*: the template's own width (the only width whose rows were all trained);
- *unseen, narrower*: fewer rows of U, V are kept (``prefix`` mode has simulated such widths during
  pre-training, the other two have not);
- *unseen, wider*: all template rows plus random new rows (no mode has seen these).

Every target is fine-tuned with the same budget next to a randomly initialized twin (timm's own
init, same seed). Reported per (mode, width): the linear-probe accuracy of the initialized encoder
before any fine-tuning (a cheap zero-shot quality measure), and top-1 after fine-tuning,
mean ± std over seeds.

Run (from the repository root):

    .venv/bin/python experiments/stochastic_scaling.py --quick   # ~5-7 min on a 2-core CPU (4.8 min measured), 1 seed
    .venv/bin/python experiments/stochastic_scaling.py           # full: 3 seeds, ~2.5-3 h on CPU (estimate printed)
    .venv/bin/python experiments/stochastic_scaling.py --smoke   # seconds; for the tests only

Outputs under ``results/stochastic_scaling/<setting>/``: ``stochastic_scaling.md`` (command line,
settings, table, conclusion), ``stochastic_scaling.csv`` (the table), ``runs.csv`` / ``runs.md``
(every run), ``accuracy_by_width.png``, ``probe_by_width.png``, ``curves_w<W>.png``. Finished
stages are cached under ``cache/<settings hash>/``, so an interrupted run picks up where it stopped
(the hash covers the settings, not the code: delete ``cache/`` after changing the script).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the library importable without installing it
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from analysis import aggregate, plot_accuracy_vs_size, plot_accuracy_vs_steps, write_table  # noqa: E402
from tucker_init.data import BatchLoader, ImageDataset, load_dataset  # noqa: E402
from tucker_init.factorized import factorize  # noqa: E402
from tucker_init.initialize import initialize  # noqa: E402
from tucker_init.io import save_template  # noqa: E402
from tucker_init.mae import masked_model_for  # noqa: E402
from tucker_init.pipeline import ModelSpec  # noqa: E402
from tucker_init.stochastic import WidthScaling  # noqa: E402
from tucker_init.train import TrainConfig, finetune, masked_image_loss, train  # noqa: E402

NAME = "stochastic_scaling"
MODES = ("off", "prefix", "rank")
BASELINE = "random"


# -- settings --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """Everything that decides the numbers of a run (hashed into the cache folder name)."""

    name: str
    data: str
    img_size: int
    patch_size: int
    depth: int  # template depth; every target keeps it (only the width changes)
    template_width: int
    widths: tuple[int, ...]
    ranks: tuple[int, int, int]
    pretrain_steps: int
    pretrain_subset: int | None
    finetune_steps: int
    train_subset: int | None
    test_subset: int | None
    probe_train: int
    batch_size: int
    pretrain_lr: float
    finetune_lr: float
    decoder: tuple[int, int, int]  # MAE decoder (dim, depth, heads): light, the encoder is what we keep
    rank_p: float  # drop probability of the "rank" mode
    min_fraction: float  # smallest kept fraction of d in the "prefix" mode
    eval_points: int
    seeds: tuple[int, ...]


_COMMON = dict(
    img_size=16,
    patch_size=4,
    template_width=128,
    batch_size=64,
    pretrain_lr=1.5e-3,
    finetune_lr=1e-3,
    decoder=(64, 1, 2),
    rank_p=0.25,
    min_fraction=0.25,
)


def _setting(**changes: Any) -> Setting:
    return Setting(**{**_COMMON, **changes})


SETTINGS: dict[str, Setting] = {
    # Seconds: only checks that the plumbing works and the files appear.
    "smoke": _setting(
        batch_size=16,
        decoder=(32, 1, 2),
        name="smoke",
        data="digits",
        depth=1,
        widths=(64, 128, 192),
        ranks=(4, 8, 8),
        pretrain_steps=2,
        pretrain_subset=128,
        finetune_steps=2,
        train_subset=128,
        test_subset=64,
        probe_train=64,
        eval_points=1,
        seeds=(0,),
    ),
    # Minutes on 2 CPU cores: one seed, short budgets; differences of a point or two are noise.
    "quick": _setting(
        name="quick",
        data="fashion_mnist",
        depth=4,
        widths=(64, 128, 192),
        ranks=(24, 64, 64),
        pretrain_steps=400,
        pretrain_subset=20000,
        finetune_steps=150,
        train_subset=10000,
        test_subset=1000,
        probe_train=1500,
        eval_points=4,
        seeds=(0,),
    ),
    # Hours on 2 CPU cores (minutes on a GPU): 3 seeds, whole data set, one more (wider) width.
    "full": _setting(
        name="full",
        data="fashion_mnist",
        depth=4,
        widths=(64, 128, 192, 256),
        ranks=(24, 64, 64),
        pretrain_steps=3000,
        pretrain_subset=None,
        finetune_steps=600,
        train_subset=None,
        test_subset=None,
        probe_train=5000,
        eval_points=6,
        seeds=(0, 1, 2),
    ),
}


def seen_label(width: int, template_width: int) -> str:
    """Where a target width stands relative to the template's width."""
    if width == template_width:
        return "seen"
    return "unseen (narrower)" if width < template_width else "unseen (wider)"


# -- small helpers (kept here: experiments/_common.py is another developer's file) ------------------
def command_string(argv: list[str]) -> str:
    """The exact command that reproduces this run."""
    return shlex.join(["python", f"experiments/{NAME}.py", *argv])


def git_revision() -> str:
    """Short commit of the repository, ``-dirty`` when the working tree has changes; "unknown" without git."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def settings_hash(setting: Setting) -> str:
    return hashlib.sha1(json.dumps(dataclasses.asdict(setting), sort_keys=True).encode()).hexdigest()[:10]


def cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()`` once: its JSON result is stored at ``path`` and read back on later runs."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)  # atomic: a half-written file never counts as done
    return result


class Progress:
    """Prints each stage with elapsed time and an ETA from a cost model of the remaining work."""

    def __init__(self, total_cost: float) -> None:
        self.total = max(total_cost, 1e-9)
        self.done = 0.0
        self.start = time.perf_counter()

    def stage(self, text: str) -> None:
        elapsed = time.perf_counter() - self.start
        frac = self.done / self.total
        eta = f", ~{elapsed / frac * max(1 - frac, 0) / 60:.1f} min left" if 0.02 < frac < 1 else ""
        print(f"[{NAME} {elapsed / 60:5.1f} min{eta}] {text}", flush=True)

    def advance(self, cost: float) -> None:
        self.done += cost


def step_seconds(width: int, depth: int, tokens: int, batch: int, kind: str = "train") -> float:
    """Rough seconds per optimizer step with 1 CPU thread on the (shared) machine this was calibrated on
    (a block has 12 d x d slices; ~40 GFLOP/s effective, plus a fixed overhead). Only used for estimates."""
    if kind == "mae":  # the encoder sees a quarter of the tokens; the light decoder costs about as much
        tokens = max(1, tokens // 4) * 2
    flops = 6 * 12 * width * width * depth * tokens * batch
    return 0.02 + flops / 4e10


# -- data ----------------------------------------------------------------------------------------------
def load_data(setting: Setting) -> tuple[ImageDataset, ImageDataset, ImageDataset, ImageDataset]:
    """``(pretrain, train, test, probe_train)`` subsets; the subsets are fixed (seed 0) across seeds."""
    full_train, full_test = load_dataset(setting.data, "train"), load_dataset(setting.data, "test")

    def sub(ds: ImageDataset, n: int | None, seed: int) -> ImageDataset:
        return ds.subset(min(n, len(ds)), seed=seed) if n else ds

    return (
        sub(full_train, setting.pretrain_subset, 0),
        sub(full_train, setting.train_subset, 1),
        sub(full_test, setting.test_subset, 2),
        sub(full_train, setting.probe_train, 3),
    )


# -- stages --------------------------------------------------------------------------------------------
def pretrain_template(
    spec: ModelSpec, data: ImageDataset, path: Path, setting: Setting, scaling: str, seed: int, device: str
) -> dict[str, Any]:
    """MAE pre-training of a Tucker template (HOSVD of timm's init at ``setting.ranks``) with the given
    width-scaling mode; writes ``path`` and returns the final train loss and a held-out MAE loss.

    Written against the library's pieces rather than ``pipeline.pretrain`` because that one does not
    expose the MAE decoder size, and the default decoder costs ~3x the small encoder on a CPU.
    """
    torch.manual_seed(seed)
    fm = factorize(spec.build(), ranks=setting.ranks, method="tucker", init="random", seed=seed)  # as pipeline.pretrain
    hook = None
    if scaling != "off":
        hook = WidthScaling(scaling, p=setting.rank_p, min_fraction=setting.min_fraction, seed=seed).attach(fm)
    dim, depth, heads = setting.decoder
    mae = masked_model_for(fm, mask_ratio=0.75, decoder_dim=dim, decoder_depth=depth, decoder_heads=heads)
    loader = BatchLoader(data, setting.batch_size, image_size=spec.img_size, augment=True, seed=seed)
    steps = setting.pretrain_steps
    config = TrainConfig(
        steps=steps,
        batch_size=setting.batch_size,
        lr=setting.pretrain_lr,
        warmup_steps=max(1, steps // 10),
        weight_decay=0.05,
        seed=seed,
        device=device,
        log_every=max(1, steps // 5),
    )
    result = train(mae, loader, masked_image_loss, config, before_step=hook.set_step if hook else None)
    mae.cpu().eval()  # eval: the scaling hook is off, the template is scored as it will be used
    held_out = mae_loss(mae, data, spec.img_size, seed)
    save_template(path, fm)
    return {"pretrain_loss": result.loss, "mae_heldout_loss": held_out, "seconds": result.elapsed_s}


@torch.no_grad()
def mae_loss(mae: nn.Module, data: ImageDataset, img_size: int, seed: int, n: int = 512) -> float:
    """Masked-patch MSE on ``n`` un-augmented images with fixed masks (lower = better reconstruction)."""
    subset = data.subset(min(n, len(data)), seed=seed + 7)
    loader = BatchLoader(subset, min(128, len(subset)), image_size=img_size, shuffle=False, drop_last=False)
    gen = torch.Generator().manual_seed(seed)
    losses = [float(mae(x, generator=gen).loss) * len(x) for x, _ in loader]
    return sum(losses) / len(subset)


def build_target(spec: ModelSpec, init: str, template: Path | None, seed: int) -> nn.Module:
    """A target of ``spec``: timm's init (``init == "random"``) or initialized from ``template``."""
    torch.manual_seed(seed)  # the same timm init under every method: fresh channels match the twin
    model = spec.build()
    if init != BASELINE:
        initialize(model, template, depth="interpolate", width="slice", seed=seed)
    return model


@torch.no_grad()
def pooled_features(model: nn.Module, data: ImageDataset, img_size: int) -> Tensor:
    """Mean of the patch tokens after the final norm (the usual MAE linear-probe feature), float64."""
    model.eval()
    loader = BatchLoader(data, min(256, len(data)), image_size=img_size, shuffle=False, drop_last=False)
    feats = [model.forward_features(x)[:, model.num_prefix_tokens :].mean(1) for x, _ in loader]
    return torch.cat(feats).double()


def linear_probe(model: nn.Module, train_set: ImageDataset, test_set: ImageDataset, img_size: int) -> float:
    """Top-1 (percent) of a multinomial logistic regression on standardized frozen features of the
    initialized encoder: full-batch L-BFGS with the L2 penalty of scikit-learn's default (C = 1), in
    torch because scikit-learn's solver took ~20 s per probe on the shared CPU."""
    x_train, x_test = pooled_features(model, train_set, img_size), pooled_features(model, test_set, img_size)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_train, y_test = train_set.labels, test_set.labels
    classes = int(max(y_train.max(), y_test.max())) + 1
    weight = torch.zeros(x_train.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x_train @ weight + bias, y_train) + 0.5 * weight.pow(2).sum() / len(x_train)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return 100.0 * float(((x_test @ weight + bias).argmax(1) == y_test).double().mean())


def block_norm_ratio(model: nn.Module, reference: nn.Module) -> float:
    """Frobenius norm of the block matrices (qkv, proj, fc1, fc2: the templated weights) of ``model``
    over those of ``reference`` (the same architecture at timm's init). A low-rank template reconstructs
    smaller weights than timm's init, which slows early fine-tuning."""
    ref = dict(reference.named_parameters())

    def total(params: dict[str, Tensor]) -> float:
        return sum(
            float(v.detach().double().pow(2).sum())
            for k, v in params.items()
            if k.startswith("blocks.") and v.ndim == 2
        )

    return math.sqrt(total(dict(model.named_parameters())) / total(ref))


def finetune_classifier(
    model: nn.Module, train_set: ImageDataset, test_set: ImageDataset, setting: Setting, seed: int, device: str
) -> dict[str, Any]:
    """Fine-tune all weights (AdamW, warm-up + cosine, label smoothing 0.1); top-1 on ``test_set``.

    The loaders are built here from data sets loaded once per script (``pipeline.finetune_model`` loads
    a named data set again on every call, ~3 s for Fashion-MNIST) and keep the test subset fixed.
    """
    steps = setting.finetune_steps
    train_loader = BatchLoader(train_set, setting.batch_size, image_size=setting.img_size, augment=True, seed=seed)
    test_loader = BatchLoader(
        test_set, min(256, len(test_set)), image_size=setting.img_size, shuffle=False, drop_last=False
    )
    config = TrainConfig(
        steps=steps,
        batch_size=setting.batch_size,
        lr=setting.finetune_lr,
        warmup_steps=max(1, steps // 10),
        label_smoothing=0.1,
        eval_every=max(1, steps // setting.eval_points),
        seed=seed,
        device=device,
        log_every=max(1, steps // 5),
    )
    result = finetune(model, train_loader, test_loader, config)
    return {"top1": result.final_eval["top1"], "curve": result.curve("top1"), "seconds": result.elapsed_s}


# -- analysis ---------------------------------------------------------------------------------------------
def noise_margin(a: dict[str, Any], b: dict[str, Any], n_test: int) -> float:
    """One standard error of the difference of two mean accuracies (points): from the spread over
    seeds when there are several, never below the binomial error of two accuracies on ``n_test``
    test images (the only noise estimate a single seed has)."""
    p = min(max((a["top1_mean"] + b["top1_mean"]) / 200.0, 0.01), 0.99)
    binomial = 100.0 * math.sqrt(2 * p * (1 - p) / n_test)
    seeds = math.sqrt(a["top1_std"] ** 2 / a["n"] + b["top1_std"] ** 2 / b["n"])
    return max(binomial, seeds)


def verdict(delta: float, margin: float) -> str:
    if abs(delta) <= margin:
        return "no clear difference"
    return "better" if delta > 0 else "worse"


def summarize(runs: list[dict[str, Any]], setting: Setting, n_test: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The (mode, width) table and the plain-language conclusions drawn from it."""
    top = {(r["mode"], r["width"]): r for r in aggregate(runs, ["mode", "width"], "top1")}
    probe = {(r["mode"], r["width"]): r for r in aggregate(runs, ["mode", "width"], "probe_top1")}
    norms = {(r["mode"], r["width"]): r["norm_ratio_mean"] for r in aggregate(runs, ["mode", "width"], "norm_ratio")}
    rows = []
    for width in setting.widths:
        base = top[(BASELINE, width)]
        for mode in (*MODES, BASELINE):
            t, p = top[(mode, width)], probe[(mode, width)]
            row = {
                "mode": mode,
                "width": width,
                "which": seen_label(width, setting.template_width),
                "n": t["n"],
                "norm_ratio": norms[(mode, width)],
                "top1_mean": t["top1_mean"],
                "top1_std": t["top1_std"],
                "probe_top1_mean": p["probe_top1_mean"],
                "probe_top1_std": p["probe_top1_std"],
                "delta_vs_random": None if mode == BASELINE else t["top1_mean"] - base["top1_mean"],
                "delta_vs_off": None,
                "margin": None,
            }
            if mode in ("prefix", "rank"):
                off = top[("off", width)]
                row["delta_vs_off"] = t["top1_mean"] - off["top1_mean"]
                row["margin"] = noise_margin(t, off, n_test)
            rows.append(row)

    lines = []
    for width in setting.widths:
        which = seen_label(width, setting.template_width)
        base = top[(BASELINE, width)]
        parts = []
        for mode in MODES:
            t = top[(mode, width)]
            delta, margin = t["top1_mean"] - base["top1_mean"], noise_margin(t, base, n_test)
            parts.append(f"{mode} {delta:+.1f} ({verdict(delta, margin)}, ±{margin:.1f})")
        lines.append(f"- **w{width}, {which}**: template vs random init after fine-tuning: " + "; ".join(parts) + ".")
        for mode in ("prefix", "rank"):
            t, off = top[(mode, width)], top[("off", width)]
            delta, margin = t["top1_mean"] - off["top1_mean"], noise_margin(t, off, n_test)
            lines.append(
                f"  - {mode} vs off: {delta:+.1f} points ({verdict(delta, margin)} at ±{margin:.1f}); "
                f"linear probe before fine-tuning {probe[(mode, width)]['probe_top1_mean']:.1f} vs "
                f"{probe[('off', width)]['probe_top1_mean']:.1f} (off) and "
                f"{probe[(BASELINE, width)]['probe_top1_mean']:.1f} (random)."
            )

    # Where the template does not help, said plainly: clearly worse, or no clear difference.
    worse, tie = [], []
    for w in setting.widths:
        for m in MODES:
            delta = top[(m, w)]["top1_mean"] - top[(BASELINE, w)]["top1_mean"]
            margin = noise_margin(top[(m, w)], top[(BASELINE, w)], n_test)
            if delta < -margin:
                worse.append(f"w{w}/{m}")
            elif delta <= margin:
                tie.append(f"w{w}/{m}")
    lines.append("")
    if worse or tie:
        text = "**Where the template does not help:** after fine-tuning, the template init is "
        text += "; ".join(
            part
            for part in (
                f"clearly worse than random init for {', '.join(worse)}" if worse else "",
                f"not clearly different from random init for {', '.join(tie)}" if tie else "",
            )
            if part
        )
        lines.append(text + " (width/mode).")
    else:
        lines.append("**Where the template does not help:** nowhere here: every (width, mode) beats random init.")
    no_gain = [
        f"{m} at w{w}"
        for w in setting.widths
        for m in ("prefix", "rank")
        if top[(m, w)]["top1_mean"] - top[("off", w)]["top1_mean"] <= noise_margin(top[(m, w)], top[("off", w)], n_test)
    ]
    ratios = [norms[(m, w)] for w in setting.widths for m in MODES]
    base_top = top[(BASELINE, setting.template_width)]["top1_mean"]
    context = (
        f"**Context.** The block matrices of template-initialized targets have {min(ratios):.2f}-{max(ratios):.2f}x "
        "the Frobenius norm of timm's init (`norm_ratio`): the low-rank template started as a truncated HOSVD of "
        "timm's random weights, which keeps only part of their energy, and pre-training did not restore it. "
        "Smaller weights are one plausible reason for slower early fine-tuning (not tested here). "
        if max(ratios) < 0.8
        else f"**Context.** Template-initialized block matrices have {min(ratios):.2f}-{max(ratios):.2f}x the "
        "Frobenius norm of timm's init (`norm_ratio`). "
    )
    lines.append(
        context + f"After {setting.finetune_steps} fine-tuning steps the random-init twin at w{setting.template_width} "
        f"is at {base_top:.1f}% top-1: these numbers compare how fast each init starts, not where it ends."
    )
    lines.append(
        "**Where stochastic scaling does not help:** "
        + (
            "not clearly better than scaling off for " + ", ".join(no_gain) + "."
            if no_gain
            else "prefix and rank beat scaling off at every width by more than the noise margin."
        )
    )
    if max(r["n"] for r in rows) < 2:
        lines.append(
            "With a single seed the margin is only the test-set sampling error; seed-to-seed variation of "
            "pre-training and fine-tuning is not in it. Treat sub-2-point differences as unresolved and use "
            "the full setting (3 seeds) before drawing conclusions."
        )
    return rows, lines


def write_report(
    out: Path,
    command: str,
    setting: Setting,
    templates: dict[str, dict[str, Any]],
    rows: list[dict[str, Any]],
    lines: list[str],
    elapsed_s: float,
) -> Path:
    """The Markdown report (it replaces the plain table ``write_table`` put at ``{NAME}.md``): command at the
    top, how the numbers were made, the table, the conclusion."""
    table_md = [
        "| mode | width | which | n | norm_ratio | probe top-1 (before fine-tuning) | top-1 after fine-tuning | "
        "vs random | vs off (± margin) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs_random = "" if r["delta_vs_random"] is None else f"{r['delta_vs_random']:+.2f}"
        vs_off = "" if r["delta_vs_off"] is None else f"{r['delta_vs_off']:+.2f} (± {r['margin']:.2f})"
        table_md.append(
            f"| {r['mode']} | {r['width']} | {r['which']} | {r['n']} | {r['norm_ratio']:.2f} | "
            f"{r['probe_top1_mean']:.1f} ± "
            f"{r['probe_top1_std']:.1f} | {r['top1_mean']:.2f} ± {r['top1_std']:.2f} | {vs_random} | {vs_off} |"
        )
    pre = "\n".join(
        f"| {mode} | {info['pretrain_loss']:.4f} | {info['mae_heldout_loss']:.4f} |" for mode, info in templates.items()
    )
    text = f"""# Width-wise stochastic scaling: off / prefix / rank

Produced by: `{command}`

Commit `{git_revision()}`, torch {torch.__version__} ({torch.get_num_threads()} CPU thread(s)), setting `{
        setting.name
    }`, {elapsed_s / 60:.1f} min.

**Question.** Does masking the width scalers during MAE pre-training (prefix masks or rank dropout)
make the template a better initializer at widths other than the one it was pre-trained at?

**How.** One ViT template per mode: depth {setting.depth}, width {setting.template_width},
ranks {setting.ranks}, {setting.img_size}x{setting.img_size} images, patch {setting.patch_size},
MAE (mask 0.75, decoder {setting.decoder}) for {setting.pretrain_steps} steps of batch
{setting.batch_size} on `{setting.data}` (train split{
        ", " + str(setting.pretrain_subset) + " images" if setting.pretrain_subset else ""
    }). Rank-dropout p = {setting.rank_p}; prefix keeps at least
{setting.min_fraction:.0%} of the rows. Targets: depth {setting.depth}, widths {list(setting.widths)}
(`depth="interpolate"`, `width="slice"`); *seen* = the template's width {setting.template_width}, *unseen*
= narrower (fewer rows kept; only prefix simulated these) or wider (random extra rows). Every target,
and a random-init twin (`random`, timm's init with the same seed), is fine-tuned for
{setting.finetune_steps} steps (batch {setting.batch_size}, AdamW lr {setting.finetune_lr}, label
smoothing 0.1) on {setting.train_subset or "all"} training images and scored on
{setting.test_subset or "all"} test images. `probe_top1` = logistic regression on mean-pooled frozen
features of the initialized encoder before fine-tuning ({setting.probe_train} training images).
Seeds {list(setting.seeds)} (template pre-training and fine-tuning both use the seed).
`margin` = one standard error of the difference (seed spread, at least the binomial test-set error).
`norm_ratio` = Frobenius norm of the initialized block matrices (qkv, proj, fc1, fc2) over that of timm's init.

## Templates

| mode | final MAE train loss | held-out MAE loss (template width, no masks) |
|---|---|---|
{pre}

## Results (top-1 %, mean ± std over seeds)

{chr(10).join(table_md)}

## Conclusion

{chr(10).join(lines)}

Plots: `accuracy_by_width.png`, `probe_by_width.png`, `curves_w<W>.png`; every run: `runs.csv`.
"""
    path = out / f"{NAME}.md"
    path.write_text(text)
    return path


# -- main -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="minutes on 2 CPU cores, 1 seed")
    size.add_argument("--smoke", action="store_true", help="seconds, tiny data: for the tests")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the setting's seeds")
    parser.add_argument("--data", help="override the data set (fashion_mnist, digits, mnist, ...)")
    parser.add_argument("--pretrain-steps", type=int, help="override the MAE steps")
    parser.add_argument("--finetune-steps", type=int, help="override the fine-tuning steps")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: these models are too small to gain from more, and on a shared "
        "2-core machine 2 threads ran ~5x slower than 1); 0 = torch's default",
    )
    parser.add_argument("--out", type=Path, help=f"output folder (default results/{NAME}/<setting>)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the experiment; ``argv`` as on the command line (``None``: ``sys.argv[1:]``). Returns 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return run(args, argv)
    finally:
        torch.set_num_threads(threads)  # process-wide setting: leave it as found (tests call main())


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """The experiment itself (see the module docstring)."""
    setting = SETTINGS["smoke" if args.smoke else "quick" if args.quick else "full"]
    overrides = {
        "seeds": tuple(args.seeds) if args.seeds else None,
        "data": args.data,
        "pretrain_steps": args.pretrain_steps,
        "finetune_steps": args.finetune_steps,
    }
    setting = dataclasses.replace(setting, **{k: v for k, v in overrides.items() if v is not None})
    out = args.out or ROOT / "results" / NAME / setting.name
    cache = out / "cache" / settings_hash(setting)
    command = command_string(argv)

    template_spec = ModelSpec("vit", setting.depth, setting.template_width, 10, setting.img_size, setting.patch_size)
    tokens = (setting.img_size // setting.patch_size) ** 2 + 1
    cost_pre = setting.pretrain_steps * step_seconds(
        setting.template_width, setting.depth, tokens, setting.batch_size, "mae"
    )
    cost_ft = {
        w: setting.finetune_steps * step_seconds(w, setting.depth, tokens, setting.batch_size) for w in setting.widths
    }
    per_seed = len(MODES) * cost_pre + (len(MODES) + 1) * sum(cost_ft.values())
    progress = Progress(per_seed * len(setting.seeds))
    print(
        f"[{NAME}] setting {setting.name}: {len(MODES)} templates x {len(setting.seeds)} seed(s), "
        f"{len(setting.widths)} widths x {len(MODES) + 1} inits fine-tuned; estimated "
        f"~{progress.total / 60:.0f} min with 1 CPU thread (much less on a GPU). Output: {out}",
        flush=True,
    )

    pre_set, train_set, test_set, probe_set = load_data(setting)
    runs: list[dict[str, Any]] = []
    curves: dict[int, dict[str, list]] = {w: {} for w in setting.widths}
    templates: dict[str, dict[str, Any]] = {}
    for seed in setting.seeds:
        paths: dict[str, Path] = {}
        for mode in MODES:
            paths[mode] = cache / f"seed{seed}" / f"template_{mode}.safetensors"
            progress.stage(f"seed {seed}: pre-train template, scaling={mode} ({setting.pretrain_steps} MAE steps)")

            def run_pretrain(mode: str = mode, seed: int = seed, path: Path = paths[mode]) -> dict[str, Any]:
                return pretrain_template(template_spec, pre_set, path, setting, mode, seed, args.device)

            info = cached(paths[mode].with_suffix(".json"), run_pretrain)
            if not paths[mode].is_file():  # the JSON survived but the template did not: redo it
                paths[mode].with_suffix(".json").unlink()
                info = cached(paths[mode].with_suffix(".json"), run_pretrain)
            templates.setdefault(mode, info)  # the first seed's numbers go into the report
            progress.advance(cost_pre)
            print(f"    MAE loss {info['pretrain_loss']:.4f}, held-out {info['mae_heldout_loss']:.4f}", flush=True)
        for width in setting.widths:
            spec = template_spec.with_size(setting.depth, width)
            for init in (*MODES, BASELINE):
                progress.stage(f"seed {seed}: w{width} ({seen_label(width, setting.template_width)}), init {init}")

                template = paths.get(init)

                def run_target(
                    init: str = init, spec: ModelSpec = spec, seed: int = seed, template: Path | None = template
                ) -> dict[str, Any]:
                    model = build_target(spec, init, template, seed)
                    ratio = block_norm_ratio(model, build_target(spec, BASELINE, None, seed))
                    probe = linear_probe(model, probe_set, test_set, setting.img_size)
                    result = finetune_classifier(model, train_set, test_set, setting, seed, args.device)
                    return {"norm_ratio": ratio, "probe_top1": probe, **result}

                result = cached(cache / f"seed{seed}" / f"w{width}_{init}.json", run_target)
                progress.advance(cost_ft[width])
                print(
                    f"    block-weight norm / timm init {result['norm_ratio']:.2f}, probe {result['probe_top1']:.1f}"
                    f"  ->  fine-tuned top1 {result['top1']:.2f}",
                    flush=True,
                )
                runs.append(
                    {
                        "seed": seed,
                        "mode": init,
                        "width": width,
                        "which": seen_label(width, setting.template_width),
                        "params": sum(p.numel() for p in spec.build().parameters()),
                        "norm_ratio": result["norm_ratio"],
                        "probe_top1": result["probe_top1"],
                        "top1": result["top1"],
                        "finetune_s": result["seconds"],
                    }
                )
                if seed == setting.seeds[0]:
                    curves[width][init] = result["curve"]

    elapsed = time.perf_counter() - progress.start
    progress.stage("writing tables and plots")
    write_table(runs, out / "runs", command)
    rows, lines = summarize(runs, setting, len(test_set))
    write_table(rows, out / NAME, command)
    report = write_report(out, command, setting, templates, rows, lines, elapsed)
    size_rows = [{"method": r["mode"], "size": f"w{r['width']} {r['which']}", **r} for r in runs]
    plot_accuracy_vs_size(
        size_rows,
        out / "accuracy_by_width.png",
        command,
        title=f"Top-1 after {setting.finetune_steps} fine-tuning steps, by target width and template scaling mode",
    )
    plot_accuracy_vs_size(
        size_rows,
        out / "probe_by_width.png",
        command,
        value="probe_top1",
        title="Linear probe of the initialized encoder (before fine-tuning)",
    )
    for width, by_init in curves.items():
        plot_accuracy_vs_steps(
            by_init,
            out / f"curves_w{width}.png",
            command,
            title=f"w{width} ({seen_label(width, setting.template_width)}): top-1 during fine-tuning, seed "
            f"{setting.seeds[0]}",
        )

    header = f"{'mode':<8}{'width':>6}  {'which':<18}{'probe':>12}{'top1':>16}{'vs random':>11}"
    print("\n" + header)
    for r in rows:
        delta = "" if r["delta_vs_random"] is None else f"{r['delta_vs_random']:+.2f}"
        print(
            f"{r['mode']:<8}{r['width']:>6}  {r['which']:<18}"
            f"{r['probe_top1_mean']:>6.1f} ± {r['probe_top1_std']:<4.1f}"
            f"{r['top1_mean']:>9.2f} ± {r['top1_std']:<4.2f}{delta:>11}"
        )
    print("\n" + "\n".join(lines))
    print(f"\n[{NAME}] done in {elapsed / 60:.1f} min; report: {report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
