"""Width-wise stochastic scaling ablation: does masking the width scalers during pre-training
(SWEET, DESIGN.md 1.3) make a template a better initializer for widths it was not trained at?

Three Tucker templates are pre-trained from the same source ViT (same ranks, same MAE budget,
same seed), differing only in the scaling:

- ``off``: no masks (the control);
- ``prefix``: keep the first d' of the d rows of U and V for a random d' (simulates narrower models);
- ``rank``: dropout over the r2 / r3 columns of U and V.

Each template initializes targets of the template's depth at several widths (``depth="interpolate"``,
``width="slice"``, the same rules for every scaling). Widths:

- *seen*: the template's own width (the only width whose rows were all trained);
- *unseen, narrower*: fewer rows of U, V are kept (``prefix`` has simulated such widths during
  pre-training, the other two have not);
- *unseen, wider*: all template rows plus random new rows (none has seen these).

Every target is fine-tuned with the same budget next to a randomly initialized twin (timm's own
init, same seed). Reported per (scaling, width): the linear-probe accuracy of the initialized
encoder before any fine-tuning (a cheap zero-shot quality measure), and top-1 after fine-tuning,
mean ± std over seeds.

Run (from the repository root):

    python -m experiments.stochastic_scaling --quick   # ~5-7 min on a 2-core CPU (4.8 min measured), 1 seed
    python -m experiments.stochastic_scaling           # full: 3 seeds, ~2.5-3 h on CPU (estimate printed)
    python -m experiments.stochastic_scaling --smoke   # seconds; for the tests only

Outputs under ``results/stochastic_scaling/<mode>/``: ``stochastic_scaling.md`` (command line,
settings, table, conclusion), ``stochastic_scaling.csv`` (the table), ``runs.csv`` / ``runs.md``
(every run), ``accuracy_by_width.png``, ``probe_by_width.png``, ``curves_w<W>.png``. The templates
go to the shared source cache (``--cache``), finished runs to ``runs/``, so an interrupted run picks
up where it stopped.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis import aggregate, plot_accuracy_vs_size, plot_accuracy_vs_steps, write_table
from experiments.harness.cache import cached_run, settings_of
from experiments.harness.cli import Context, entry_point, resolve_setting
from experiments.harness.data import Splits, load_splits
from experiments.harness.estimate import Job, Progress, estimate_seconds, fmt_duration, log
from experiments.harness.measure import block_norm_ratio, count_params, linear_probe, noise_margin, verdict
from experiments.harness.provenance import fmt, md_table, mean_std, report_header, write_report
from experiments.harness.runs import init_target
from experiments.harness.settings import BUDGETS, AblationSetting
from experiments.harness.sources import Source, SourceSpec, ensure_source, source_job
from tucker_init import WidthScaling
from tucker_init.pipeline import ModelSpec

NAME = "stochastic_scaling"
SCALINGS = ("off", "prefix", "rank")
BASELINE = "random"
INITS = (*SCALINGS, BASELINE)


# -- settings --------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Setting(AblationSetting):
    """The ablation's setting: targets of the source's depth at ``widths``; the source's width is
    the template's (the *seen* width)."""

    widths: tuple[int, ...]
    ranks: tuple[int, int, int]


SETTINGS: dict[str, Setting] = {
    "smoke": Setting(**BUDGETS["smoke"], widths=(64, 128, 192), ranks=(4, 8, 8)),
    "quick": Setting(**BUDGETS["quick"], widths=(64, 128, 192), ranks=(24, 64, 64)),
    # One more (wider) width than quick.
    "full": Setting(**BUDGETS["full"], widths=(64, 128, 192, 256), ranks=(24, 64, 64)),
}


def seen_label(width: int, template_width: int) -> str:
    """Where a target width stands relative to the template's width."""
    if width == template_width:
        return "seen"
    return "unseen (narrower)" if width < template_width else "unseen (wider)"


def template_source(setting: Setting, scaling: str, seed: int) -> SourceSpec:
    """The template of one scaling and seed (a shared cache entry)."""
    return setting.source_spec("tucker", seed, ranks=setting.ranks, scaling=scaling)


# -- plan -> run ---------------------------------------------------------------------------------------
def target_jobs(setting: Setting, width: int) -> list[Job]:
    """Fine-tuning (with its evaluations) and the linear probe of one target."""
    spec = setting.source.with_size(setting.depth, width)
    n_test = setting.test_subset or 10_000
    return [
        Job(spec, "ft", setting.finetune_steps, setting.batch_size),
        Job(spec, "eval", n_test * (setting.eval_points + 1) + setting.probe_train + n_test),
    ]


def announce(setting: Setting, context: Context) -> Progress:
    """Print the plan and its measured estimate; the progress of the run."""
    jobs = [source_job(template_source(setting, s, seed)) for seed in setting.seeds for s in SCALINGS]
    jobs += [j for _ in setting.seeds for w in setting.widths for _ in INITS for j in target_jobs(setting, w)]
    total = estimate_seconds(jobs, context.device)
    log(
        f"{NAME} ({setting.name}): {len(SCALINGS)} templates x {len(setting.seeds)} seed(s), {len(setting.widths)} "
        f"widths x {len(INITS)} inits fine-tuned; estimated ~{fmt_duration(total)} on this machine (cached "
        f"stages are skipped). Output: {context.out}"
    )
    return Progress(total)


def run_target(
    setting: Setting,
    splits: Splits,
    probe: Any,
    spec: ModelSpec,
    init: str,
    template: Path | None,
    seed: int,
    device: str,
) -> dict[str, Any]:
    """Initialize one target, probe it, fine-tune it."""
    method = "random" if init == BASELINE else "tucker"
    model, _ = init_target(spec, method, template, seed, seed_method=method == "tucker")
    ratio = block_norm_ratio(model, init_target(spec, "random", None, seed)[0])
    probe_top1 = linear_probe(model, probe, splits.test, setting.img_size)
    result = setting.finetune(model, splits, seed, device, curve=True)
    assert result.final_eval is not None
    top1 = result.final_eval["top1"]
    return {
        "norm_ratio": ratio,
        "probe_top1": probe_top1,
        "top1": top1,
        "curve": result.curve("top1"),
        "seconds": result.elapsed_s,
    }


def pretrain_templates(setting: Setting, seed: int, context: Context, progress: Progress) -> dict[str, Source]:
    """The seed's three templates, from the cache or pre-trained now."""
    templates = {}
    for scaling in SCALINGS:
        src = template_source(setting, scaling, seed)
        progress.stage(f"seed {seed}: template, scaling={scaling} ({setting.pretrain_steps} MAE steps)")
        templates[scaling] = ensure_source(src, context.cache, context.device)
        meta = templates[scaling].meta
        log(f"    MAE loss {meta['train_loss']:.4f}, held-out {meta['mae_heldout_loss']:.4f}")
        if not templates[scaling].reused:
            progress.advance(estimate_seconds([source_job(src)], context.device))
    return templates


def run(setting: Setting, context: Context, progress: Progress) -> tuple[list[dict[str, Any]], dict, dict]:
    """Every (seed, width, init) run; also the first seed's curves and template manifests."""
    splits = load_splits(setting.data, train_subset=setting.train_subset, test_subset=setting.test_subset)
    probe = splits.probe(setting.probe_train)
    runs: list[dict[str, Any]] = []
    curves: dict[int, dict[str, list]] = {w: {} for w in setting.widths}
    first: dict[str, dict[str, Any]] = {}
    for seed in setting.seeds:
        templates = pretrain_templates(setting, seed, context, progress)
        for scaling, source in templates.items():
            first.setdefault(scaling, source.meta)  # the first seed's numbers go into the report
        for width in setting.widths:
            spec = setting.source.with_size(setting.depth, width)
            for init in INITS:
                which = seen_label(width, setting.width)
                progress.stage(f"seed {seed}: w{width} ({which}), init {init}")
                template = templates[init].path if init in templates else None
                key = templates[init].spec.key() if init in templates else None
                result = cached_run(
                    context.out / "runs" / f"seed{seed}" / f"w{width}_{init}.json",
                    {**settings_of(setting), "target_width": width, "init": init, "seed": seed, "source": key},
                    lambda s=spec, i=init, t=template, sd=seed: run_target(
                        setting, splits, probe, s, i, t, sd, context.device
                    ),
                )
                if not result.get("reused"):
                    progress.advance(estimate_seconds(target_jobs(setting, width), context.device))
                log(
                    f"    block-weight norm / timm init {result['norm_ratio']:.2f}, probe {result['probe_top1']:.1f}"
                    f"  ->  fine-tuned top1 {result['top1']:.2f}"
                )
                runs.append(
                    {
                        "seed": seed,
                        "scaling": init,
                        "width": width,
                        "which": which,
                        "params": count_params(spec.build()),
                        "norm_ratio": result["norm_ratio"],
                        "probe_top1": result["probe_top1"],
                        "top1": result["top1"],
                        "finetune_s": result["seconds"],
                    }
                )
                if seed == setting.seeds[0]:
                    curves[width][init] = result["curve"]
    return runs, curves, first


# -- summarize ---------------------------------------------------------------------------------------------
def _by(runs: list[dict[str, Any]], value: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["scaling"], r["width"]): r for r in aggregate(runs, ["scaling", "width"], value)}


def summarize(runs: list[dict[str, Any]], setting: Setting, n_test: int) -> list[dict[str, Any]]:
    """The (scaling, width) table: mean ± std over seeds, deltas and noise margins."""
    top, probe, norms = _by(runs, "top1"), _by(runs, "probe_top1"), _by(runs, "norm_ratio")
    rows = []
    for width in setting.widths:
        base = top[(BASELINE, width)]
        for init in INITS:
            t, p = top[(init, width)], probe[(init, width)]
            row = {
                "scaling": init,
                "width": width,
                "which": seen_label(width, setting.width),
                "n": t["n"],
                "norm_ratio": norms[(init, width)]["norm_ratio_mean"],
                "top1_mean": t["top1_mean"],
                "top1_std": t["top1_std"],
                "probe_top1_mean": p["probe_top1_mean"],
                "probe_top1_std": p["probe_top1_std"],
                "delta_vs_random": None if init == BASELINE else t["top1_mean"] - base["top1_mean"],
                "delta_vs_off": None,
                "margin": None,
            }
            if init in ("prefix", "rank"):
                off = top[("off", width)]
                row["delta_vs_off"] = t["top1_mean"] - off["top1_mean"]
                row["margin"] = noise_margin(t, off, n_test)
            rows.append(row)
    return rows


def width_lines(runs: list[dict[str, Any]], setting: Setting, n_test: int) -> list[str]:
    """Per width: each template vs random init, and prefix / rank vs off."""
    top, probe = _by(runs, "top1"), _by(runs, "probe_top1")
    lines = []
    for width in setting.widths:
        base = top[(BASELINE, width)]
        parts = []
        for scaling in SCALINGS:
            t = top[(scaling, width)]
            delta, margin = t["top1_mean"] - base["top1_mean"], noise_margin(t, base, n_test)
            parts.append(f"{scaling} {delta:+.1f} ({verdict(delta, margin)}, ±{margin:.1f})")
        which = seen_label(width, setting.width)
        lines.append(f"- **w{width}, {which}**: template vs random init after fine-tuning: " + "; ".join(parts) + ".")
        for scaling in ("prefix", "rank"):
            t, off = top[(scaling, width)], top[("off", width)]
            delta, margin = t["top1_mean"] - off["top1_mean"], noise_margin(t, off, n_test)
            lines.append(
                f"  - {scaling} vs off: {delta:+.1f} points ({verdict(delta, margin)} at ±{margin:.1f}); "
                f"linear probe before fine-tuning {probe[(scaling, width)]['probe_top1_mean']:.1f} vs "
                f"{probe[('off', width)]['probe_top1_mean']:.1f} (off) and "
                f"{probe[(BASELINE, width)]['probe_top1_mean']:.1f} (random)."
            )
    return lines


def no_help_lines(runs: list[dict[str, Any]], setting: Setting, n_test: int) -> list[str]:
    """Where the template, and where stochastic scaling, does not help, said plainly."""
    top = _by(runs, "top1")

    def delta_margin(a: tuple[str, int], b: tuple[str, int]) -> tuple[float, float]:
        return top[a]["top1_mean"] - top[b]["top1_mean"], noise_margin(top[a], top[b], n_test)

    worse, tie, no_gain = [], [], []
    for w in setting.widths:
        for s in SCALINGS:
            delta, margin = delta_margin((s, w), (BASELINE, w))
            if delta < -margin:
                worse.append(f"w{w}/{s}")
            elif delta <= margin:
                tie.append(f"w{w}/{s}")
        for s in ("prefix", "rank"):
            delta, margin = delta_margin((s, w), ("off", w))
            if delta <= margin:
                no_gain.append(f"{s} at w{w}")
    parts = [
        f"clearly worse than random init for {', '.join(worse)}" if worse else "",
        f"not clearly different from random init for {', '.join(tie)}" if tie else "",
    ]
    template = (
        "**Where the template does not help:** after fine-tuning, the template init is "
        + "; ".join(p for p in parts if p)
        + " (width/scaling)."
        if worse or tie
        else "**Where the template does not help:** nowhere here: every (width, scaling) beats random init."
    )
    scaling = "**Where stochastic scaling does not help:** " + (
        "not clearly better than scaling off for " + ", ".join(no_gain) + "."
        if no_gain
        else "prefix and rank beat scaling off at every width by more than the noise margin."
    )
    return [template, scaling]


def conclusions(runs: list[dict[str, Any]], rows: list[dict[str, Any]], setting: Setting, n_test: int) -> list[str]:
    """The plain-language conclusions drawn from the table."""
    lines = [*width_lines(runs, setting, n_test), ""]
    template, scaling = no_help_lines(runs, setting, n_test)
    ratios = [r["norm_ratio"] for r in rows if r["scaling"] in SCALINGS]
    base_top = next(r["top1_mean"] for r in rows if (r["scaling"], r["width"]) == (BASELINE, setting.width))
    context = (
        f"**Context.** The block matrices of template-initialized targets have {min(ratios):.2f}-{max(ratios):.2f}x "
        "the Frobenius norm of timm's init (`norm_ratio`): pre-training shrank the low-rank template's weights. "
        "Smaller weights are one plausible reason for slower early fine-tuning (not tested here). "
        if max(ratios) < 0.8
        else f"**Context.** Template-initialized block matrices have {min(ratios):.2f}-{max(ratios):.2f}x the "
        "Frobenius norm of timm's init (`norm_ratio`). "
    )
    lines += [
        template,
        context + f"After {setting.finetune_steps} fine-tuning steps the random-init twin at w{setting.width} "
        f"is at {base_top:.1f}% top-1: these numbers compare how fast each init starts, not where it ends.",
        scaling,
    ]
    if max(r["n"] for r in rows) < 2:
        lines.append(
            "With a single seed the margin is only the test-set sampling error; seed-to-seed variation of "
            "pre-training and fine-tuning is not in it. Treat sub-2-point differences as unresolved and use "
            "the full setting (3 seeds) before drawing conclusions."
        )
    return lines


# -- report ------------------------------------------------------------------------------------------------
def _table(rows: list[dict[str, Any]]) -> list[str]:
    """The results table in Markdown."""
    header = (
        "scaling | width | which | n | norm_ratio | probe top-1 (before fine-tuning) |"
        " top-1 after fine-tuning | vs random | vs off (± margin)"
    )
    cells = [
        [
            r["scaling"],
            r["width"],
            r["which"],
            r["n"],
            f"{r['norm_ratio']:.2f}",
            mean_std(r, "probe_top1", 1),
            mean_std(r, "top1"),
            fmt(r["delta_vs_random"], "+.2f"),
            "" if r["delta_vs_off"] is None else f"{r['delta_vs_off']:+.2f} (± {r['margin']:.2f})",
        ]
        for r in rows
    ]
    return md_table(header, cells)


def _how(setting: Setting) -> str:
    """How the numbers were made."""
    defaults = inspect.signature(WidthScaling).parameters
    images = f", {setting.pretrain_subset} images" if setting.pretrain_subset else ""
    return f"""**How.** One ViT template per scaling: depth {setting.depth}, width {setting.width},
ranks {setting.ranks}, {setting.img_size}x{setting.img_size} images, patch {setting.patch_size},
MAE (mask 0.75, decoder {setting.decoder}) for {setting.pretrain_steps} steps of batch
{setting.batch_size} on `{setting.data}` (train split{images}). Rank-dropout p = {defaults["p"].default};
prefix keeps at least {defaults["min_fraction"].default:.0%} of the rows. Targets: depth {setting.depth},
widths {list(setting.widths)} (`depth="interpolate"`, `width="slice"`); *seen* = the template's width
{setting.width}, *unseen* = narrower (fewer rows kept; only prefix simulated these) or wider (random
extra rows). Every target, and a random-init twin (`random`, timm's init with the same seed), is fine-tuned
for {setting.finetune_steps} steps (batch {setting.batch_size}, AdamW lr {setting.finetune_lr}, label
smoothing 0.1) on {setting.train_subset or "all"} training images and scored on
{setting.test_subset or "all"} test images. `probe_top1` = logistic regression on mean-pooled frozen
features of the initialized encoder before fine-tuning ({setting.probe_train} training images).
Seeds {list(setting.seeds)} (template pre-training and fine-tuning both use the seed).
`margin` = one standard error of the difference (seed spread, at least the binomial test-set error).
`norm_ratio` = Frobenius norm of the initialized block matrices (qkv, proj, fc1, fc2) over that of timm's init."""


def report(context: Context, setting: Setting, templates: dict, rows: list, lines: list[str], elapsed: float) -> Path:
    """The Markdown report (it replaces the plain table ``write_table`` put at ``{NAME}.md``)."""
    title = "Width-wise stochastic scaling: off / prefix / rank"
    header = [
        *report_header(title, context.command, setting.name, elapsed / 60),
        "**Question.** Does masking the width scalers during MAE pre-training (prefix masks or rank dropout)",
        "make the template a better initializer at widths other than the one it was pre-trained at?",
        "",
        _how(setting),
    ]
    pre = [
        "| scaling | final MAE train loss | held-out MAE loss (template width, no masks) |",
        "|---|---|---|",
        *(f"| {s} | {m['train_loss']:.4f} | {m['mae_heldout_loss']:.4f} |" for s, m in templates.items()),
    ]
    sections = [("Templates", pre), ("Results (top-1 %, mean ± std over seeds)", _table(rows)), ("Conclusion", lines)]
    footer = "Plots: `accuracy_by_width.png`, `probe_by_width.png`, `curves_w<W>.png`; every run: `runs.csv`."
    return write_report(context.out / f"{NAME}.md", header, sections, footer)


def plot(context: Context, setting: Setting, runs: list[dict[str, Any]], curves: dict[int, dict[str, list]]) -> None:
    """Accuracy and probe by width, and the first seed's curves per width."""
    size_rows = [{"method": r["scaling"], "size": f"w{r['width']} {r['which']}", **r} for r in runs]
    out, command = context.out, context.command
    title = f"Top-1 after {setting.finetune_steps} fine-tuning steps, by target width and template scaling"
    plot_accuracy_vs_size(size_rows, out / "accuracy_by_width.png", command, title=title)
    title = "Linear probe of the initialized encoder (before fine-tuning)"
    plot_accuracy_vs_size(size_rows, out / "probe_by_width.png", command, value="probe_top1", title=title)
    for width, by_init in curves.items():
        which = seen_label(width, setting.width)
        title = f"w{width} ({which}): top-1 during fine-tuning, seed {setting.seeds[0]}"
        plot_accuracy_vs_steps(by_init, out / f"curves_w{width}.png", command, title=title)


def print_table(rows: list[dict[str, Any]], lines: list[str]) -> None:
    print("\n" + f"{'scaling':<8}{'width':>6}  {'which':<18}{'probe':>12}{'top1':>16}{'vs random':>11}")
    for r in rows:
        delta = "" if r["delta_vs_random"] is None else f"{r['delta_vs_random']:+.2f}"
        print(
            f"{r['scaling']:<8}{r['width']:>6}  {r['which']:<18}{r['probe_top1_mean']:>6.1f} ± "
            f"{r['probe_top1_std']:<4.1f}{r['top1_mean']:>9.2f} ± {r['top1_std']:<4.2f}{delta:>11}"
        )
    print("\n" + "\n".join(lines))


# -- main -------------------------------------------------------------------------------------------------
def experiment(context: Context) -> int:
    """Plan, run, summarize, report (see the module docstring)."""
    setting = resolve_setting(SETTINGS, context)
    progress = announce(setting, context)
    runs, curves, templates = run(setting, context, progress)
    n_test = len(load_splits(setting.data, test_subset=setting.test_subset).test)
    rows = summarize(runs, setting, n_test)
    lines = conclusions(runs, rows, setting, n_test)
    progress.stage("writing tables and plots")
    write_table(runs, context.out / "runs", context.command)
    write_table(rows, context.out / NAME, context.command)
    path = report(context, setting, templates, rows, lines, progress.elapsed)
    plot(context, setting, runs, curves)
    print_table(rows, lines)
    log(f"{NAME} done in {fmt_duration(progress.elapsed)}; report: {path}")
    return 0


main = entry_point(NAME, __doc__, SETTINGS, experiment)


if __name__ == "__main__":
    sys.exit(main())
