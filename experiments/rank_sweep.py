"""Rank sweep: how sensitive is a Tucker weight template to its ranks (r1, r2, r3), and can a rank
be chosen automatically? (The open question of the SWEET analysis in ../shared/seeds/.)

Three measurements on one ViT:

1. **Reconstruction error over a grid of ranks** (``analysis.rank_grid_errors``): relative error
   ``||W - W_hat|| / ||W||`` of a rank-(r1, r2, r3) HOSVD of the block weights of (a) a dense ViT
   pre-trained with MAE and (b) the same ViT at timm's random init (the weights every template
   starts from), with the parameter count of template + scalers.
2. **Downstream accuracy at a few ranks**: for each, a template is pre-trained with MAE (same
   budget as the dense model), initializes the target(s) and is fine-tuned; references are
   random init and, for a target of the dense model's own size, the dense MAE model itself
   (direct pre-training with the same budget).
3. **Choosing a rank**: ``analysis.suggest_rank`` for a parameter budget (by reconstruction error
   over the grid, and by accuracy over the fine-tuned ranks), and the ranks that keep 90% / 99% of
   the energy of each mode of the trained dense weights (``analysis.ranks_for_energy``).

Run (from the repository root):

    python -m experiments.rank_sweep --quick   # ~5 min (estimate) on a 2-core CPU: 4 ranks, 1 target, 1 seed
    python -m experiments.rank_sweep           # full: 6 ranks, 2 targets, 3 seeds, ~4 h on CPU
    python -m experiments.rank_sweep --smoke   # seconds; for the tests only

Outputs under ``results/rank_sweep/<mode>/``: ``rank_sweep.md`` (command line, settings, tables,
conclusion), ``rank_sweep.csv`` (downstream table), ``rank_grid.csv`` / ``.md`` (the error grid),
``runs.csv`` (every fine-tuning run), ``rank_sensitivity_<target>.png``, ``spectra.png``. The dense
model and the templates go to the shared source cache (``--cache``), finished runs to ``runs/``
(keyed by the settings, not the code: delete ``runs/`` after changing the script).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from analysis import (
    aggregate,
    dense_spectra,
    plot_rank_sensitivity,
    plot_spectra,
    rank_grid_errors,
    ranks_for_energy,
    suggest_rank,
    template_spectra,
    write_table,
)
from experiments.harness.cache import cached_run, settings_of
from experiments.harness.cli import Context, add_scaling_option, entry_point, resolve_setting
from experiments.harness.data import Splits, load_splits
from experiments.harness.estimate import Job, Progress, estimate_seconds, fmt_duration, log
from experiments.harness.measure import block_norm_ratio, noise_margin
from experiments.harness.provenance import fmt, md_table, mean_std, report_header, write_report
from experiments.harness.runs import init_target
from experiments.harness.settings import BUDGETS, AblationSetting
from experiments.harness.sources import Source, SourceSpec, ensure_source, source_job
from tucker_init import load_template
from tucker_init.pipeline import ModelSpec, load_model

NAME = "rank_sweep"
Ranks = tuple[int, int, int]


# -- settings --------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Setting(AblationSetting):
    """The sweep's setting: a reconstruction grid, the ranks that are pre-trained and fine-tuned,
    and the targets."""

    grid_r1: tuple[int, ...] = (4, 8, 16, 24, 32, 48)  # every r1 with every r2 = r3 (clipped to the tensor)
    grid_r23: tuple[int, ...] = (8, 16, 32, 48, 64, 96, 128)
    ranks: tuple[Ranks, ...]  # ranks whose templates are pre-trained and fine-tuned
    targets: tuple[tuple[int, int], ...]  # (depth, width) of the fine-tuned targets


SETTINGS: dict[str, Setting] = {
    "smoke": Setting(
        **BUDGETS["smoke"],
        width=64,
        grid_r1=(2, 4, 12),
        grid_r23=(8, 16, 64),
        ranks=((2, 8, 8), (4, 16, 16)),
        targets=((1, 64),),
    ),
    "quick": Setting(
        **BUDGETS["quick"], ranks=((4, 16, 16), (12, 32, 32), (24, 64, 64), (48, 128, 128)), targets=((4, 128),)
    ),
    # More ranks (incl. asymmetric ones) and a larger target than quick.
    "full": Setting(
        **BUDGETS["full"],
        ranks=((4, 16, 16), (12, 32, 32), (24, 64, 64), (24, 32, 96), (48, 64, 64), (48, 128, 128)),
        targets=((4, 128), (6, 192)),
    ),
}


def rank_name(ranks: Ranks) -> str:
    return "x".join(str(r) for r in ranks)


# -- plan -> run ---------------------------------------------------------------------------------------
def sources(setting: Setting, seed: int) -> dict[str, SourceSpec]:
    """The seed's dense MAE model (``"dense"``) and one template per rank (by rank name)."""
    found = {"dense": setting.source_spec("dense", seed)}
    for r in setting.ranks:
        found[rank_name(r)] = setting.source_spec("tucker", seed, ranks=r, scaling=setting.scaling)
    return found


def inits_of(setting: Setting, spec: ModelSpec) -> list[str]:
    """Random init, every rank, and the dense model where the target has its size."""
    return ["random", *(rank_name(r) for r in setting.ranks), *(["dense"] if spec == setting.source else [])]


def target_job(setting: Setting, spec: ModelSpec) -> list[Job]:
    """Fine-tuning one target, with its evaluations."""
    n_test = setting.test_subset or 10_000
    return [
        Job(spec, "ft", setting.finetune_steps, setting.batch_size),
        Job(spec, "eval", n_test * (setting.eval_points + 1)),
    ]


def announce(setting: Setting, targets: list[ModelSpec], context: Context) -> Progress:
    """Print the plan and its measured estimate; the progress of the run."""
    jobs = [source_job(src) for seed in setting.seeds for src in sources(setting, seed).values()]
    jobs += [j for _ in setting.seeds for t in targets for _ in inits_of(setting, t) for j in target_job(setting, t)]
    total = estimate_seconds(jobs, context.device)
    log(
        f"{NAME} ({setting.name}): {len(setting.ranks)} ranks x {len(setting.seeds)} seed(s), targets "
        f"{[t.name for t in targets]}; estimated ~{fmt_duration(total)} on this machine (cached stages are "
        f"skipped). Output: {context.out}"
    )
    return Progress(total)


def run_target(
    setting: Setting, splits: Splits, spec: ModelSpec, init: str, source: Path | None, seed: int, device: str
) -> dict[str, Any]:
    """Initialize one target (random, a template, or the dense model) and fine-tune it."""
    if init == "dense":
        model, _ = init_target(spec, "pretrained", load_model(source)[0], seed)
    else:
        method = "random" if init == "random" else "tucker"
        model, _ = init_target(spec, method, source, seed, seed_method=method == "tucker")
    ratio = block_norm_ratio(model, init_target(spec, "random", None, seed)[0])
    result = setting.finetune(model, splits, seed, device, curve=True)
    assert result.final_eval is not None
    return {"norm_ratio": ratio, "top1": result.final_eval["top1"], "seconds": result.elapsed_s}


def pretrain_sources(setting: Setting, seed: int, context: Context, progress: Progress) -> dict[str, Source]:
    """The seed's dense model and templates, from the cache or pre-trained now."""
    made = {}
    for key, src in sources(setting, seed).items():
        what = "dense ViT" if key == "dense" else f"template {key}"
        progress.stage(f"seed {seed}: MAE pre-training of the {what} ({setting.pretrain_steps} steps)")
        made[key] = ensure_source(src, context.cache, context.device)
        log(f"    MAE loss {made[key].meta['train_loss']:.4f}, held-out {made[key].meta['mae_heldout_loss']:.4f}")
        if not made[key].reused:
            progress.advance(estimate_seconds([source_job(src)], context.device))
    return made


def run(setting: Setting, targets: list[ModelSpec], context: Context, progress: Progress):
    """Every (seed, target, init) run; the sources of every seed."""
    splits = load_splits(setting.data, train_subset=setting.train_subset, test_subset=setting.test_subset)
    runs: list[dict[str, Any]] = []
    made: dict[int, dict[str, Source]] = {}
    for seed in setting.seeds:
        made[seed] = pretrain_sources(setting, seed, context, progress)
        for spec in targets:
            for init in inits_of(setting, spec):
                progress.stage(
                    f"seed {seed}: target {spec.name}, init {init}: fine-tune {setting.finetune_steps} steps"
                )
                source = made[seed].get(init)
                result = cached_run(
                    context.out / "runs" / f"seed{seed}" / f"{spec.name}_{init}.json",
                    {
                        **settings_of(setting),
                        "target": spec.name,
                        "init": init,
                        "seed": seed,
                        "source": source.spec.key() if source else None,
                    },
                    lambda s=spec, i=init, p=(source.path if source else None), sd=seed: run_target(
                        setting, splits, s, i, p, sd, context.device
                    ),
                )
                if not result.get("reused"):
                    progress.advance(estimate_seconds(target_job(setting, spec), context.device))
                log(f"    block-weight norm / timm init {result['norm_ratio']:.2f}, top1 {result['top1']:.2f}")
                runs.append(
                    {
                        "seed": seed,
                        "target": spec.name,
                        "init": init,
                        "norm_ratio": result["norm_ratio"],
                        "top1": result["top1"],
                    }
                )
    return runs, made, len(splits.test)


# -- summarize ---------------------------------------------------------------------------------------------
def grid_ranks(setting: Setting) -> list[Ranks]:
    """The reconstruction grid: r1 x (r2 = r3), clipped to the unified tensor (S*L, d, d), plus the
    fine-tuned ranks."""
    max_r1 = 12 * setting.depth  # a ViT block gives S = 12 slices
    grid = {(r1, r, r) for r1 in setting.grid_r1 for r in setting.grid_r23 if r1 <= max_r1 and r <= setting.width}
    grid |= set(setting.ranks)
    return sorted(grid, key=lambda r: (r[0] * r[1] * r[2], r))


def reconstruction(setting: Setting, dense_path: Path, seed: int) -> tuple[list[dict[str, Any]], Any, Any]:
    """The HOSVD error grid of the dense MAE model and of timm's init (the very weights the seed's
    templates were factorized from); the spectra of both."""
    dense_model, _ = load_model(dense_path)
    torch.manual_seed(seed)
    init_model = setting.source.build()
    ranks_list = grid_ranks(setting)
    grid = rank_grid_errors(dense_model, ranks_list)
    for row, at_init in zip(grid, rank_grid_errors(init_model, ranks_list), strict=True):
        row["rel_error_init"] = at_init["rel_error"]
    return grid, dense_spectra(dense_model), dense_spectra(init_model)


def table_row(
    spec: ModelSpec,
    init: str,
    a: dict,
    norm: float,
    base: dict,
    dense: dict | None,
    g: dict | None,
    infos: list[dict[str, Any]],
) -> dict[str, Any]:
    """One (target, init) row of the downstream table."""
    return {
        "target": spec.name,
        "init": {"random": "random", "dense": "dense MAE"}.get(init, f"tucker {init}"),
        **{k: g[k] if g else None for k in ("ranks", "r1", "r2", "r3", "params", "compression")},
        "rel_error": g["rel_error"] if g else None,
        "rel_error_init": g["rel_error_init"] if g else None,
        "mae_heldout_loss": sum(i["mae_heldout_loss"] for i in infos) / len(infos) if infos else None,
        "norm_ratio": norm,
        "n": a["n"],
        "top1_mean": a["top1_mean"],
        "top1_std": a["top1_std"],
        "delta_vs_random": None if init == "random" else a["top1_mean"] - base["top1_mean"],
        "delta_vs_dense": None if dense is None or init in ("random", "dense") else a["top1_mean"] - dense["top1_mean"],
    }


def summarize(setting: Setting, targets: list[ModelSpec], runs: list, grid: list, made: dict) -> list[dict[str, Any]]:
    """The downstream table: one row per (target, init), mean ± std over seeds."""
    by_grid = {r["ranks"]: r for r in grid}
    agg = {(r["target"], r["init"]): r for r in aggregate(runs, ["target", "init"], "top1")}
    norms = {(r["target"], r["init"]): r["norm_ratio_mean"] for r in aggregate(runs, ["target", "init"], "norm_ratio")}
    table: list[dict[str, Any]] = []
    for spec in targets:
        base, dense = agg[(spec.name, "random")], agg.get((spec.name, "dense"))
        for init in ("random", "dense", *(rank_name(r) for r in setting.ranks)):
            if (spec.name, init) not in agg:
                continue
            infos = [made[s][init].meta for s in setting.seeds] if init != "random" else []
            a, norm = agg[(spec.name, init)], norms[(spec.name, init)]
            table.append(table_row(spec, init, a, norm, base, dense, by_grid.get(init), infos))
    return table


def reconstruction_lines(setting: Setting, grid: list, energy: dict[str, Ranks], budget: int) -> list[str]:
    """What the error grid and the spectra say."""
    by_error = suggest_rank(grid, budget)
    trained = {r["ranks"]: r for r in grid}
    tuned = [trained[rank_name(r)] for r in setting.ranks]
    gap = sum(r["rel_error_init"] - r["rel_error"] for r in tuned) / len(tuned)
    return [
        f"- **Reconstruction.** Within a budget of {budget:,} template + scaler parameters, the rank with the "
        f"lowest HOSVD error of the MAE-trained dense weights is {by_error['ranks']} "
        f"(error {by_error['rel_error']:.3f}, {int(by_error['params']):,} parameters, "
        f"{by_error['compression']:.1f}x fewer than the {int(by_error['dense_params']):,} dense weights).",
        "  Error of the trained weights vs timm's init at the fine-tuned ranks: "
        + ", ".join(f"{r['ranks']} {r['rel_error']:.3f} vs {r['rel_error_init']:.3f}" for r in tuned)
        + ". "
        + (
            "Training added low-rank structure (lower error than at init)."
            if gap > 0.01
            else "Training with this budget did not make the weights noticeably more low-rank than timm's init, "
            "so the reconstruction error says little about which rank transfers best."
        ),
        "- **Automatic rank from the spectra** of the trained dense weights: "
        + "; ".join(f"{k} energy -> {v}" for k, v in energy.items())
        + ".",
    ]


def target_lines(target: str, table: list[dict[str, Any]], budget: int, n_test: int) -> list[str]:
    """What the downstream numbers of one target say, including where the template does not help."""
    rows = [r for r in table if r["target"] == target]
    tucker = [r for r in rows if r["init"].startswith("tucker")]
    base = next(r for r in rows if r["init"] == "random")
    best, worst = max(tucker, key=lambda r: r["top1_mean"]), min(tucker, key=lambda r: r["top1_mean"])
    spread, margin = best["top1_mean"] - worst["top1_mean"], noise_margin(best, worst, n_test)
    lines = [
        f"- **Downstream, target {target}.** Top-1 over the fine-tuned ranks runs from {worst['top1_mean']:.2f} "
        f"({worst['ranks']}) to {best['top1_mean']:.2f} ({best['ranks']}), a spread of {spread:.2f} points "
        f"against a noise margin of ±{margin:.2f}: "
        + (
            "within the noise, so at this budget the rank barely matters downstream."
            if spread <= margin
            else f"larger than the noise, so the rank matters; best {best['ranks']}."
        )
    ]
    fits = [r for r in tucker if int(r["params"]) <= budget]
    if fits:
        pick = suggest_rank(fits, budget, by="top1")
        lines.append(f"  By accuracy, the best fine-tuned rank within the budget is {pick['ranks']}.")
    no_help = [
        f"{r['ranks']} ({r['top1_mean'] - base['top1_mean']:+.2f})"
        for r in tucker
        if r["top1_mean"] - base["top1_mean"] <= noise_margin(r, base, n_test)
    ]
    lines.append(
        "  **Where the template does not help:** "
        + (
            "not clearly better than random init at ranks " + ", ".join(no_help) + "."
            if no_help
            else "every fine-tuned rank beats random init by more than the noise margin."
        )
    )
    dense = next((r for r in rows if r["init"] == "dense MAE"), None)
    if dense is not None:
        behind = [r["ranks"] for r in tucker if dense["top1_mean"] - r["top1_mean"] > noise_margin(r, dense, n_test)]
        lines.append(
            f"  Direct dense MAE pre-training of this very size (same budget) reaches {dense['top1_mean']:.2f}; "
            + (
                "the template is clearly behind it at ranks " + ", ".join(behind) + "."
                if behind
                else "no template rank is clearly behind it."
            )
            + " (A template's point is to serve other sizes, which the dense model cannot do directly.)"
        )
    return lines


def closing_lines(setting: Setting, grid: list, table: list[dict[str, Any]]) -> list[str]:
    """Weight scale, error vs accuracy, and the one-seed caveat (first target)."""
    trained = {r["ranks"]: r for r in grid}
    first = [r for r in table if r["init"].startswith("tucker") and r["target"] == table[0]["target"]]
    lines = [
        "- **Weight scale.** Block-matrix norm of the initialized target over timm's init, by rank: "
        + ", ".join(f"{r['ranks']} {r['norm_ratio']:.2f}" for r in first)
        + ". Templates start RMS-matched to timm's init (a truncated HOSVD of it would keep only part of its "
        "energy); where the ratio is well below 1 the template hands over smaller weights than a random "
        "init, one plausible reason for slower early fine-tuning (not tested here).",
        "- Does lower reconstruction error predict accuracy? Compare `rel_error` with `top1_mean` in the table: "
        + ", ".join(f"{r['ranks']} {trained[r['ranks']]['rel_error']:.3f} / {r['top1_mean']:.1f}" for r in first)
        + ".",
    ]
    if len(setting.seeds) < 2:
        lines.append(
            "- One seed: the margin is only the test-set sampling error, not seed-to-seed variation. "
            "Treat sub-2-point differences as unresolved; the full setting runs 3 seeds."
        )
    return lines


def conclusions(setting: Setting, grid: list, table: list, energy: dict, budget: int, n_test: int) -> list[str]:
    """Plain-language conclusions, including where the template does not help."""
    lines = reconstruction_lines(setting, grid, energy, budget)
    for target in dict.fromkeys(r["target"] for r in table):
        lines += target_lines(target, table, budget, n_test)
    return lines + closing_lines(setting, grid, table)


# -- report ------------------------------------------------------------------------------------------------
def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """The downstream table in Markdown."""
    header = (
        "target | init | ranks | params | rel_error | held-out MAE loss | norm_ratio | n | top-1 | vs random |"
        " vs dense MAE"
    )
    cells = [
        [
            r["target"],
            r["init"],
            r["ranks"] or "",
            fmt(r["params"], ","),
            fmt(r["rel_error"], ".3f"),
            fmt(r["mae_heldout_loss"], ".4f"),
            f"{r['norm_ratio']:.2f}",
            r["n"],
            mean_std(r, "top1"),
            fmt(r["delta_vs_random"], "+.2f"),
            fmt(r["delta_vs_dense"], "+.2f"),
        ]
        for r in rows
    ]
    return md_table(header, cells)


def plot(
    context: Context,
    setting: Setting,
    targets: list[ModelSpec],
    grid: list,
    table: list,
    budget: int,
    spectra: dict[str, Any],
) -> None:
    """Rank sensitivity per target, and the mode spectra."""
    for spec in targets:
        top1 = {r["ranks"]: r for r in table if r["target"] == spec.name and r["ranks"]}
        rows = [dict(g) for g in grid]
        for row in rows:  # accuracy on the fine-tuned ranks: the plot's second panel
            if row["ranks"] in top1:
                row.update(top1_mean=top1[row["ranks"]]["top1_mean"], top1_std=top1[row["ranks"]]["top1_std"])
        plot_rank_sensitivity(
            rows,
            context.out / f"rank_sensitivity_{spec.name}.png",
            context.command,
            budget=budget,
            title=f"Rank sensitivity: HOSVD error of the MAE-trained L{setting.depth}w{setting.width} weights; "
            f"top-1 of target {spec.name}",
            references={
                ("random init" if r["init"] == "random" else r["init"]): (r["top1_mean"], r["top1_std"])
                for r in table
                if r["target"] == spec.name and r["init"] in ("random", "dense MAE")
            },
        )
    title = "Mode spectra: pre-trained templates and dense weights"
    plot_spectra(spectra, context.out / "spectra.png", context.command, title=title)


def all_spectra(setting: Setting, made: dict[str, Source], dense: dict, init: dict) -> dict[str, Any]:
    """Mode spectra of the first seed's template cores, the dense MAE weights and timm's init."""
    spectra: dict[str, Any] = {}
    for r in setting.ranks:
        template = load_template(made[rank_name(r)].path)
        spectra.update({f"{k} template {rank_name(r)}": v for k, v in template_spectra(template).items()})
    spectra.update({f"{k} (dense MAE)": v for k, v in dense.items()})
    spectra.update({f"{k} (timm init)": v for k, v in init.items()})
    return spectra


def report(
    context: Context,
    setting: Setting,
    targets: list,
    table: list,
    lines: list[str],
    budget: int,
    dense_params: int,
    elapsed: float,
) -> Path:
    """The Markdown report: command, how, table, conclusion."""
    how = f"""**How.** Source ViT L{setting.depth}w{setting.width} ({setting.img_size}x{setting.img_size} images, patch
{setting.patch_size}); unified tensor ({12 * setting.depth}, {setting.width}, {setting.width}),
{dense_params:,} templated weights. A dense copy and one template per rank in {[rank_name(r) for r in setting.ranks]}
are pre-trained with MAE (mask 0.75, decoder {setting.decoder}, width scaling `{setting.scaling}` for the
templates) for {setting.pretrain_steps} steps of batch {setting.batch_size} on `{setting.data}`. Each
initializes the target(s) {[t.name for t in targets]} (`depth="interpolate"`, `width="slice"`), fine-tuned for
{setting.finetune_steps} steps (AdamW lr {setting.finetune_lr}, label smoothing 0.1) on
{setting.train_subset or "all"} training images, scored on {setting.test_subset or "all"} test images;
seeds {list(setting.seeds)}. `rel_error` = HOSVD reconstruction error of the dense MAE model's block weights
at that rank (`rank_grid.csv` has the whole grid and `rel_error_init`, the same at timm's init).
`params` = template + scaler parameters; budget for the suggestions: {budget:,}. `norm_ratio` = Frobenius
norm of the target's initialized block matrices (qkv, proj, fc1, fc2) over that of timm's init."""
    question = (
        "**Question.** How sensitive is the template to its ranks (r1, r2, r3), and can they be chosen automatically?"
    )
    header = [
        *report_header("Rank sweep of the Tucker template", context.command, setting.name, elapsed / 60),
        question,
        "",
        how,
    ]
    sections = [("Downstream (top-1 %, mean ± std over seeds)", markdown_table(table)), ("Conclusion", lines)]
    footer = (
        "Plots: `rank_sensitivity_<target>.png` (error vs parameters, accuracy vs rank), `spectra.png` (mode spectra\n"
        "of the templates' cores and of the dense weights)."
    )
    return write_report(context.out / f"{NAME}.md", header, sections, footer)


# -- main -------------------------------------------------------------------------------------------------
def options(parser: Any) -> None:
    """The script's own options."""
    add_scaling_option(parser)
    parser.add_argument(
        "--budget", type=int, help="parameter budget for the suggested rank (default: 1/4 of the dense weights)"
    )


def experiment(context: Context) -> int:
    """Plan, run, summarize, report (see the module docstring)."""
    setting = resolve_setting(SETTINGS, context, scaling=context.args.scaling)
    targets = [setting.source.with_size(d, w) for d, w in setting.targets]
    progress = announce(setting, targets, context)
    runs, made, n_test = run(setting, targets, context, progress)
    progress.stage("reconstruction-error grid (HOSVD of the dense MAE model and of timm's init)")
    seed0 = setting.seeds[0]
    grid, dense_spec, init_spec = reconstruction(setting, made[seed0]["dense"].path, seed0)
    dense_params = int(grid[0]["dense_params"])
    budget = context.args.budget or dense_params // 4
    energy = {f"{e:.0%}": ranks_for_energy(dense_spec, e) for e in (0.9, 0.99)}
    table = summarize(setting, targets, runs, grid, made)
    lines = conclusions(setting, grid, table, energy, budget, n_test)
    progress.stage("writing tables and plots")
    for rows, stem in ((runs, "runs"), (grid, "rank_grid"), (table, NAME)):
        write_table(rows, context.out / stem, context.command)
    plot(context, setting, targets, grid, table, budget, all_spectra(setting, made[seed0], dense_spec, init_spec))
    path = report(context, setting, targets, table, lines, budget, dense_params, progress.elapsed)
    print("\n" + "\n".join(markdown_table(table)) + "\n\n" + "\n".join(lines))
    log(f"{NAME} done in {fmt_duration(progress.elapsed)}; report: {path}")
    return 0


main = entry_point(NAME, __doc__, SETTINGS, experiment, extra=options)


if __name__ == "__main__":
    sys.exit(main())
