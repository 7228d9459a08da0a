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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the library importable without installing it
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from analysis import aggregate, plot_accuracy_vs_size, plot_accuracy_vs_steps, write_table  # noqa: E402
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
    noise_margin,
    resolve_setting,
    run_main,
    settings_hash,
    step_seconds,
    subset,
    train_mae,
    verdict,
)
from tucker_init.data import ImageDataset  # noqa: E402
from tucker_init.factorized import factorize  # noqa: E402
from tucker_init.io import save_template  # noqa: E402
from tucker_init.pipeline import ModelSpec  # noqa: E402
from tucker_init.stochastic import WidthScaling  # noqa: E402

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


# -- data ----------------------------------------------------------------------------------------------
def load_data(setting: Setting) -> tuple[ImageDataset, ImageDataset, ImageDataset, ImageDataset]:
    """``(pretrain, train, test, probe_train)`` subsets; the subsets are fixed (seed 0) across seeds."""
    splits = load_splits(setting)
    return splits.pretrain, splits.train, splits.test, subset(splits.full_train, setting.probe_train, 3)


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
    info = train_mae(fm, data, setting, spec.img_size, seed, device, hook)
    save_template(path, fm)
    return info


# -- analysis ---------------------------------------------------------------------------------------------
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
        "the Frobenius norm of timm's init (`norm_ratio`): pre-training shrank the low-rank template's weights. "
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
    return make_parser(__doc__, NAME).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the experiment; ``argv`` as on the command line (``None``: ``sys.argv[1:]``). Returns 0."""
    return run_main(argv, parse_args, run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """The experiment itself (see the module docstring)."""
    setting = resolve_setting(SETTINGS, args)
    out = args.out or ROOT / "results" / NAME / setting.name
    cache = out / "cache" / settings_hash(setting)
    command = command_string(NAME, argv)

    template_spec = ModelSpec("vit", setting.depth, setting.template_width, 10, setting.img_size, setting.patch_size)
    tokens = (setting.img_size // setting.patch_size) ** 2 + 1
    cost_pre = setting.pretrain_steps * step_seconds(
        setting.template_width, setting.depth, tokens, setting.batch_size, "mae"
    )
    cost_ft = {
        w: setting.finetune_steps * step_seconds(w, setting.depth, tokens, setting.batch_size) for w in setting.widths
    }
    per_seed = len(MODES) * cost_pre + (len(MODES) + 1) * sum(cost_ft.values())
    progress = Progress(NAME, per_seed * len(setting.seeds))
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

            info = cached_weights(paths[mode], run_pretrain)
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
                    result = finetune_classifier(
                        model, train_set, test_set, setting, seed, args.device, eval_points=setting.eval_points
                    )
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
