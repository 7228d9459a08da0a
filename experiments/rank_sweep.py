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

    .venv/bin/python experiments/rank_sweep.py --quick   # ~5 min (estimate) on a 2-core CPU: 4 ranks, 1 target, 1 seed
    .venv/bin/python experiments/rank_sweep.py           # full: 6 ranks, 2 targets, 3 seeds, ~4 h on CPU
    .venv/bin/python experiments/rank_sweep.py --smoke   # seconds; for the tests only

Outputs under ``results/rank_sweep/<setting>/``: ``rank_sweep.md`` (command line, settings, tables,
conclusion), ``rank_sweep.csv`` (downstream table), ``rank_grid.csv`` / ``.md`` (the error grid),
``runs.csv`` (every fine-tuning run), ``rank_sensitivity_<target>.png``, ``spectra.png``. Finished
stages are cached under ``cache/<settings hash>/`` (the hash covers the settings, not the code: delete
``cache/`` after changing the script).
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

from analysis import (  # noqa: E402
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
from experiments._ablation import (  # noqa: E402
    Progress,
    block_norm_ratio,
    build_target,
    cached,
    cached_weights,
    command_string,
    finetune_classifier,
    git_revision,
    load_splits,
    make_parser,
    noise_margin,
    resolve_setting,
    run_main,
    settings_hash,
    step_seconds,
    train_mae,
)
from tucker_init.data import ImageDataset  # noqa: E402
from tucker_init.factorized import factorize  # noqa: E402
from tucker_init.io import load_template, save_template  # noqa: E402
from tucker_init.pipeline import ModelSpec, load_model, save_model  # noqa: E402
from tucker_init.stochastic import WidthScaling  # noqa: E402

NAME = "rank_sweep"
Ranks = tuple[int, int, int]


# -- settings --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """Everything that decides the numbers of a run (hashed into the cache folder name)."""

    name: str
    data: str
    img_size: int
    patch_size: int
    depth: int  # the dense model / template source size
    width: int
    grid_r1: tuple[int, ...]  # reconstruction grid: every r1 with every r2 = r3 (clipped to the tensor)
    grid_r23: tuple[int, ...]
    ranks: tuple[Ranks, ...]  # ranks whose templates are pre-trained and fine-tuned
    targets: tuple[tuple[int, int], ...]  # (depth, width) of the fine-tuned targets
    scaling: str
    pretrain_steps: int
    pretrain_subset: int | None
    finetune_steps: int
    train_subset: int | None
    test_subset: int | None
    batch_size: int
    pretrain_lr: float
    finetune_lr: float
    decoder: tuple[int, int, int]  # MAE decoder (dim, depth, heads): light, the encoder is what we keep
    eval_points: int
    seeds: tuple[int, ...]


_COMMON = dict(
    data="fashion_mnist",
    img_size=16,
    patch_size=4,
    depth=4,
    width=128,
    grid_r1=(4, 8, 16, 24, 32, 48),
    grid_r23=(8, 16, 32, 48, 64, 96, 128),
    scaling="off",  # pipeline.pretrain's default: prefix and rank lost 4-5 points in stochastic_scaling.py
    batch_size=64,
    pretrain_lr=1.5e-3,
    finetune_lr=1e-3,
    decoder=(64, 1, 2),
)


def _setting(**changes: Any) -> Setting:
    return Setting(**{**_COMMON, **changes})


SETTINGS: dict[str, Setting] = {
    "smoke": _setting(
        batch_size=16,
        decoder=(32, 1, 2),
        name="smoke",
        data="digits",
        depth=1,
        width=64,
        grid_r1=(2, 4, 12),
        grid_r23=(8, 16, 64),
        ranks=((2, 8, 8), (4, 16, 16)),
        targets=((1, 64),),
        pretrain_steps=2,
        pretrain_subset=128,
        finetune_steps=2,
        train_subset=128,
        test_subset=64,
        eval_points=1,
        seeds=(0,),
    ),
    # Minutes on 2 CPU cores: one seed, short budgets; differences of a point or two are noise.
    "quick": _setting(
        name="quick",
        ranks=((4, 16, 16), (12, 32, 32), (24, 64, 64), (48, 128, 128)),
        targets=((4, 128),),
        pretrain_steps=400,
        pretrain_subset=20000,
        finetune_steps=150,
        train_subset=10000,
        test_subset=1000,
        eval_points=4,
        seeds=(0,),
    ),
    # Hours on 2 CPU cores: more ranks (incl. asymmetric ones), a larger target, 3 seeds, all data.
    "full": _setting(
        name="full",
        ranks=((4, 16, 16), (12, 32, 32), (24, 64, 64), (24, 32, 96), (48, 64, 64), (48, 128, 128)),
        targets=((4, 128), (6, 192)),
        pretrain_steps=3000,
        pretrain_subset=None,
        finetune_steps=600,
        train_subset=None,
        test_subset=None,
        eval_points=6,
        seeds=(0, 1, 2),
    ),
}


def rank_name(ranks: Ranks) -> str:
    return "x".join(str(r) for r in ranks)


# -- stages ----------------------------------------------------------------------------------------------
def load_data(setting: Setting) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """``(pretrain, train, test)``; the subsets are fixed (seed 0) across seeds."""
    splits = load_splits(setting)
    return splits.pretrain, splits.train, splits.test


def pretrain(
    spec: ModelSpec, data: ImageDataset, path: Path, setting: Setting, ranks: Ranks | None, seed: int, device: str
) -> dict[str, Any]:
    """MAE pre-training of a Tucker template at ``ranks`` (RMS-matched random start as in
    ``pipeline.pretrain``, width scaling ``setting.scaling``), or of the dense model when ``ranks``
    is None; writes ``path``.

    Written against the library's pieces rather than ``pipeline.pretrain`` because that one does not
    expose the MAE decoder size, and the default decoder costs ~3x the small encoder on a CPU.
    """
    torch.manual_seed(seed)
    model = spec.build()
    hook, encoder = None, model
    if ranks is not None:
        encoder = factorize(model, ranks=ranks, method="tucker", init="random", seed=seed)  # as pipeline.pretrain
        if setting.scaling != "off":
            hook = WidthScaling(setting.scaling, seed=seed).attach(encoder)
    info = train_mae(encoder, data, setting, spec.img_size, seed, device, hook)
    if ranks is None:
        save_model(path, model, spec)
    else:
        save_template(path, encoder)
    return info


# -- analysis ------------------------------------------------------------------------------------------------
def grid_ranks(setting: Setting) -> list[Ranks]:
    """The reconstruction grid: r1 x (r2 = r3), clipped to the unified tensor (S*L, d, d), plus the
    fine-tuned ranks."""
    max_r1 = 12 * setting.depth  # a ViT block gives S = 12 slices
    grid = {(r1, r, r) for r1 in setting.grid_r1 for r in setting.grid_r23 if r1 <= max_r1 and r <= setting.width}
    grid |= set(setting.ranks)
    return sorted(grid, key=lambda r: (r[0] * r[1] * r[2], r))


def conclusions(
    setting: Setting,
    grid: list[dict[str, Any]],
    table: list[dict[str, Any]],
    energy: dict[str, Ranks],
    budget: int,
    n_test: int,
) -> list[str]:
    """Plain-language conclusions, including where the template does not help."""
    lines = []
    by_error = suggest_rank(grid, budget)
    lines.append(
        f"- **Reconstruction.** Within a budget of {budget:,} template + scaler parameters, the rank with the "
        f"lowest HOSVD error of the MAE-trained dense weights is {by_error['ranks']} "
        f"(error {by_error['rel_error']:.3f}, {int(by_error['params']):,} parameters, "
        f"{by_error['compression']:.1f}x fewer than the {int(by_error['dense_params']):,} dense weights)."
    )
    trained = {r["ranks"]: r for r in grid}
    tuned = [trained[rank_name(r)] for r in setting.ranks]
    gap = sum(r["rel_error_init"] - r["rel_error"] for r in tuned) / len(tuned)
    lines.append(
        "  Error of the trained weights vs timm's init at the fine-tuned ranks: "
        + ", ".join(f"{r['ranks']} {r['rel_error']:.3f} vs {r['rel_error_init']:.3f}" for r in tuned)
        + ". "
        + (
            "Training added low-rank structure (lower error than at init)."
            if gap > 0.01
            else "Training with this budget did not make the weights noticeably more low-rank than timm's init, "
            "so the reconstruction error says little about which rank transfers best."
        )
    )
    lines.append(
        "- **Automatic rank from the spectra** of the trained dense weights: "
        + "; ".join(f"{k} energy -> {v}" for k, v in energy.items())
        + "."
    )
    target_names = list(dict.fromkeys(r["target"] for r in table))
    for target in target_names:
        rows = [r for r in table if r["target"] == target]
        tucker = [r for r in rows if r["init"].startswith("tucker")]
        base = next(r for r in rows if r["init"] == "random")
        best, worst = max(tucker, key=lambda r: r["top1_mean"]), min(tucker, key=lambda r: r["top1_mean"])
        spread, margin = best["top1_mean"] - worst["top1_mean"], noise_margin(best, worst, n_test)
        lines.append(
            f"- **Downstream, target {target}.** Top-1 over the fine-tuned ranks runs from {worst['top1_mean']:.2f} "
            f"({worst['ranks']}) to {best['top1_mean']:.2f} ({best['ranks']}), a spread of {spread:.2f} points "
            f"against a noise margin of ±{margin:.2f}: "
            + (
                "within the noise, so at this budget the rank barely matters downstream."
                if spread <= margin
                else f"larger than the noise, so the rank matters; best {best['ranks']}."
            )
        )
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
            behind = [
                r["ranks"] for r in tucker if dense["top1_mean"] - r["top1_mean"] > noise_margin(r, dense, n_test)
            ]
            lines.append(
                f"  Direct dense MAE pre-training of this very size (same budget) reaches {dense['top1_mean']:.2f}; "
                + (
                    "the template is clearly behind it at ranks " + ", ".join(behind) + "."
                    if behind
                    else "no template rank is clearly behind it."
                )
                + " (A template's point is to serve other sizes, which the dense model cannot do directly.)"
            )
    first = [r for r in table if r["init"].startswith("tucker") and r["target"] == target_names[0]]
    lines.append(
        "- **Weight scale.** Block-matrix norm of the initialized target over timm's init, by rank: "
        + ", ".join(f"{r['ranks']} {r['norm_ratio']:.2f}" for r in first)
        + ". Templates start RMS-matched to timm's init (a truncated HOSVD of it would keep only part of its "
        "energy); where the ratio is well below 1 the template hands over smaller weights than a random "
        "init, one plausible reason for slower early fine-tuning (not tested here)."
    )
    lines.append(
        "- Does lower reconstruction error predict accuracy? Compare `rel_error` with `top1_mean` in the table: "
        + ", ".join(
            f"{r['ranks']} {trained[r['ranks']]['rel_error']:.3f} / {r['top1_mean']:.1f}"
            for r in table
            if r["init"].startswith("tucker") and r["target"] == target_names[0]
        )
        + "."
    )
    if len(setting.seeds) < 2:
        lines.append(
            "- One seed: the margin is only the test-set sampling error, not seed-to-seed variation. "
            "Treat sub-2-point differences as unresolved; the full setting runs 3 seeds."
        )
    return lines


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| target | init | ranks | params | rel_error | held-out MAE loss | norm_ratio | n | top-1 | vs random | "
        "vs dense MAE |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:

        def fmt(v: Any, spec: str) -> str:
            return "" if v is None else format(v, spec)

        lines.append(
            f"| {r['target']} | {r['init']} | {r['ranks'] or ''} | {fmt(r['params'], ',')} | "
            f"{fmt(r['rel_error'], '.3f')} | {fmt(r['mae_heldout_loss'], '.4f')} | {r['norm_ratio']:.2f} | {r['n']} | "
            f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f} | {fmt(r['delta_vs_random'], '+.2f')} | "
            f"{fmt(r['delta_vs_dense'], '+.2f')} |"
        )
    return lines


# -- main -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--scaling", choices=("off", "prefix", "rank"), help="width scaling during pre-training")
        parser.add_argument(
            "--budget", type=int, help="parameter budget for the suggested rank (default: 1/4 of the dense weights)"
        )

    return make_parser(__doc__, NAME, extra=extra).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the experiment; ``argv`` as on the command line (``None``: ``sys.argv[1:]``). Returns 0."""
    return run_main(argv, parse_args, run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """The experiment itself (see the module docstring)."""
    setting = resolve_setting(SETTINGS, args, scaling=args.scaling)
    out = args.out or ROOT / "results" / NAME / setting.name
    cache = out / "cache" / settings_hash(setting)
    command = command_string(NAME, argv)
    source = ModelSpec("vit", setting.depth, setting.width, 10, setting.img_size, setting.patch_size)
    targets = [source.with_size(d, w) for d, w in setting.targets]
    tokens = (setting.img_size // setting.patch_size) ** 2 + 1

    cost_pre = setting.pretrain_steps * step_seconds(setting.width, setting.depth, tokens, setting.batch_size, "mae")
    cost_ft = {
        t.name: setting.finetune_steps * step_seconds(t.width, t.depth, tokens, setting.batch_size) for t in targets
    }
    inits_per_target = len(setting.ranks) + 1 + 1  # templates, random, dense (same size only; upper bound)
    progress = Progress(
        NAME, len(setting.seeds) * ((len(setting.ranks) + 1) * cost_pre + inits_per_target * sum(cost_ft.values()))
    )
    print(
        f"[{NAME}] setting {setting.name}: {len(setting.ranks)} ranks x {len(setting.seeds)} seed(s), targets "
        f"{[t.name for t in targets]}; estimated ~{progress.total / 60:.0f} min with 1 CPU thread "
        f"(much less on a GPU). Output: {out}",
        flush=True,
    )
    pre_set, train_set, test_set = load_data(setting)

    runs: list[dict[str, Any]] = []
    pre_info: dict[tuple[str, int], dict[str, Any]] = {}
    for seed in setting.seeds:
        paths: dict[str, Path] = {"dense": cache / f"seed{seed}" / "dense.safetensors"}
        paths.update(
            {rank_name(r): cache / f"seed{seed}" / f"template_{rank_name(r)}.safetensors" for r in setting.ranks}
        )
        for key, ranks in [("dense", None), *[(rank_name(r), r) for r in setting.ranks]]:
            what = "dense ViT" if ranks is None else f"template {key}"
            progress.stage(f"seed {seed}: MAE pre-training of the {what} ({setting.pretrain_steps} steps)")
            path = paths[key]

            def run_pretrain(ranks: Ranks | None = ranks, path: Path = path, seed: int = seed) -> dict[str, Any]:
                return pretrain(source, pre_set, path, setting, ranks, seed, args.device)

            info = pre_info[(key, seed)] = cached_weights(path, run_pretrain)
            progress.advance(cost_pre)
            print(f"    MAE loss {info['pretrain_loss']:.4f}, held-out {info['mae_heldout_loss']:.4f}", flush=True)

        for spec in targets:
            inits = ["random", *(rank_name(r) for r in setting.ranks)]
            if spec == source:
                inits.append("dense")
            for init in inits:
                progress.stage(
                    f"seed {seed}: target {spec.name}, init {init}: fine-tune {setting.finetune_steps} steps"
                )
                path = paths.get(init)

                def run_target(
                    init: str = init, spec: ModelSpec = spec, path: Path | None = path, seed: int = seed
                ) -> dict[str, Any]:
                    model = build_target(spec, init, path, seed)
                    ratio = block_norm_ratio(model, build_target(spec, "random", None, seed))
                    return {
                        "norm_ratio": ratio,
                        **finetune_classifier(
                            model, train_set, test_set, setting, seed, args.device, eval_points=setting.eval_points
                        ),
                    }

                result = cached(cache / f"seed{seed}" / f"{spec.name}_{init}.json", run_target)
                progress.advance(cost_ft[spec.name])
                print(
                    f"    block-weight norm / timm init {result['norm_ratio']:.2f}, top1 {result['top1']:.2f}",
                    flush=True,
                )
                runs.append(
                    {
                        "seed": seed,
                        "target": spec.name,
                        "init": init,
                        "norm_ratio": result["norm_ratio"],
                        "top1": result["top1"],
                    }
                )

    progress.stage("reconstruction-error grid (HOSVD of the dense MAE model and of timm's init)")
    seed0 = setting.seeds[0]
    dense_model, _ = load_model(cache / f"seed{seed0}" / "dense.safetensors")
    torch.manual_seed(seed0)
    init_model = source.build()  # the very weights the seed-0 templates were factorized from
    ranks_list = grid_ranks(setting)
    grid = rank_grid_errors(dense_model, ranks_list)
    for row, at_init in zip(grid, rank_grid_errors(init_model, ranks_list), strict=True):
        row["rel_error_init"] = at_init["rel_error"]
    dense_params = int(grid[0]["dense_params"])
    budget = args.budget or dense_params // 4
    spectra_dense = dense_spectra(dense_model)
    energy = {f"{e:.0%}": ranks_for_energy(spectra_dense, e) for e in (0.9, 0.99)}

    # The downstream table: one row per (target, init), mean ± std over seeds.
    by_grid = {r["ranks"]: r for r in grid}
    agg = {(r["target"], r["init"]): r for r in aggregate(runs, ["target", "init"], "top1")}
    norms = {(r["target"], r["init"]): r["norm_ratio_mean"] for r in aggregate(runs, ["target", "init"], "norm_ratio")}
    table: list[dict[str, Any]] = []
    for spec in targets:
        base = agg[(spec.name, "random")]
        dense_row = agg.get((spec.name, "dense"))
        for init in ("random", "dense", *(rank_name(r) for r in setting.ranks)):
            if (spec.name, init) not in agg:
                continue
            a = agg[(spec.name, init)]
            g = by_grid.get(init)
            infos = [pre_info[(init, s)] for s in setting.seeds] if init != "random" else []
            table.append(
                {
                    "target": spec.name,
                    "init": {"random": "random", "dense": "dense MAE"}.get(init, f"tucker {init}"),
                    "ranks": g["ranks"] if g else None,
                    "r1": g["r1"] if g else None,
                    "r2": g["r2"] if g else None,
                    "r3": g["r3"] if g else None,
                    "params": g["params"] if g else None,
                    "compression": g["compression"] if g else None,
                    "rel_error": g["rel_error"] if g else None,
                    "rel_error_init": g["rel_error_init"] if g else None,
                    "mae_heldout_loss": sum(i["mae_heldout_loss"] for i in infos) / len(infos) if infos else None,
                    "norm_ratio": norms[(spec.name, init)],
                    "n": a["n"],
                    "top1_mean": a["top1_mean"],
                    "top1_std": a["top1_std"],
                    "delta_vs_random": None if init == "random" else a["top1_mean"] - base["top1_mean"],
                    "delta_vs_dense": None
                    if dense_row is None or init in ("random", "dense")
                    else a["top1_mean"] - dense_row["top1_mean"],
                }
            )

    progress.stage("writing tables and plots")
    write_table(runs, out / "runs", command)
    write_table(grid, out / "rank_grid", command)
    write_table(table, out / NAME, command)
    for spec in targets:
        top1 = {r["ranks"]: r for r in table if r["target"] == spec.name and r["ranks"]}
        rows = [dict(g) for g in grid]
        for row in rows:  # accuracy on the fine-tuned ranks: the plot's second panel
            if row["ranks"] in top1:
                row.update(top1_mean=top1[row["ranks"]]["top1_mean"], top1_std=top1[row["ranks"]]["top1_std"])
        plot_rank_sensitivity(
            rows,
            out / f"rank_sensitivity_{spec.name}.png",
            command,
            budget=budget,
            title=f"Rank sensitivity: HOSVD error of the MAE-trained L{setting.depth}w{setting.width} weights; "
            f"top-1 of target {spec.name}",
            references={
                ("random init" if r["init"] == "random" else r["init"]): (r["top1_mean"], r["top1_std"])
                for r in table
                if r["target"] == spec.name and r["init"] in ("random", "dense MAE")
            },
        )
    spectra: dict[str, Any] = {}
    for r in setting.ranks:
        template = load_template(cache / f"seed{seed0}" / f"template_{rank_name(r)}.safetensors")
        spectra.update({f"{k} template {rank_name(r)}": v for k, v in template_spectra(template).items()})
    spectra.update({f"{k} (dense MAE)": v for k, v in spectra_dense.items()})
    spectra.update({f"{k} (timm init)": v for k, v in dense_spectra(init_model).items()})
    plot_spectra(spectra, out / "spectra.png", command, title="Mode spectra: pre-trained templates and dense weights")

    elapsed = time.perf_counter() - progress.start
    lines = conclusions(setting, grid, table, energy, budget, len(test_set))
    report = f"""# Rank sweep of the Tucker template

Produced by: `{command}`

Commit `{git_revision()}`, torch {torch.__version__} ({torch.get_num_threads()} CPU thread(s)), setting
`{setting.name}`, {elapsed / 60:.1f} min.

**Question.** How sensitive is the template to its ranks (r1, r2, r3), and can they be chosen automatically?

**How.** Source ViT L{setting.depth}w{setting.width} ({setting.img_size}x{setting.img_size} images, patch
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
norm of the target's initialized block matrices (qkv, proj, fc1, fc2) over that of timm's init.

## Downstream (top-1 %, mean ± std over seeds)

{chr(10).join(markdown_table(table))}

## Conclusion

{chr(10).join(lines)}

Plots: `rank_sensitivity_<target>.png` (error vs parameters, accuracy vs rank), `spectra.png` (mode spectra
of the templates' cores and of the dense weights).
"""
    (out / f"{NAME}.md").write_text(report)

    print()
    print("\n".join(markdown_table(table)))
    print("\n" + "\n".join(lines))
    print(f"\n[{NAME}] done in {elapsed / 60:.1f} min; report: {out / (NAME + '.md')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
