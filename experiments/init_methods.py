"""Which initialization gives the best fine-tuned accuracy at each target size: random init,
weight selection, linear expansion, a Kronecker template, a Tucker template, or direct
pre-training of the target itself?

Every method gets the same fine-tuning budget (steps, batch, learning rate, schedule, data
order for a given seed) and is scored on the same test images; mean and spread over seeds.

Methods (the names of the initializer registry, ``tucker_init.initializers``):

- ``random``: timm's default init of the target.
- ``weight_selection``: uniform element selection + first-N layers from a dense MAE-trained
  source model (Xu et al. 2023).
- ``linear_expansion``: ``theta_l = A + (l/L) B`` fitted over the dense source's layers (TLEG).
- ``kronecker``: a Kronecker template (WAVE / WeiT), MAE-trained; the target's scalers are
  learned on labelled data for a small budget before fine-tuning.
- ``tucker``: a Tucker template (SWEET: MAE, width-wise stochastic scaling ``--tucker-scaling``,
  default ``off``: ``stochastic_scaling.py`` found prefix masks no better than none); target
  scalers by the rules only (depth ``interpolate``, width ``slice``), nothing learned.
- ``tucker_learned``: the same template, target scalers learned like ``kronecker``'s.
- ``pretrained``: direct MAE pre-training of the target size with the same budget, copied.

All sources (dense model, the two templates, each target's direct pre-training) use the same
MAE budget (steps, batch, lr) on the same unlabelled training images, and are cached under
``results/cache/`` (reused by ``experiments/convergence.py``). Sources are pre-trained once
(seed 0); the seeds vary the target's own init, the scaler learning and the fine-tuning.

ResNet: each ResNet width gets its own sources (dense model and templates at depth 2) and the
ResNet targets are depth-1 models of those widths, so the ResNet rows compare methods on a depth
change only.

Run (from the repository root):

    .venv/bin/python experiments/init_methods.py --quick    # ~10-15 min on 2 busy CPU cores: 3 targets, 1 seed
    .venv/bin/python experiments/init_methods.py --medium   # ~1.5 h: 6 targets, 1000-step sources, 3 seeds
    .venv/bin/python experiments/init_methods.py            # full: 7 targets, 3 seeds (hours; estimate printed)
    .venv/bin/python experiments/init_methods.py --smoke    # seconds; for the tests only

Outputs in ``results/init_methods/<quick|medium|full|smoke>/``: ``init_methods.md`` (command line,
settings, sources, table, one sentence per size, where the template does not help),
``summary.csv`` / ``.md`` (mean, std, n per size and method), ``runs.csv`` / ``.md`` (every
run), ``sources.csv`` / ``.md``, ``accuracy_vs_size.png``. Finished runs are kept in ``runs/``
so an interrupted full run resumes.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the library and experiments/ importable
    sys.path.insert(0, str(ROOT))

from analysis import aggregate, plot_accuracy_vs_size, write_table  # noqa: E402
from experiments._common import (  # noqa: E402
    CACHE_DIR,
    RESULTS_DIR,
    SOURCE_PRESETS,
    Source,
    SourcePreset,
    SourceSpec,
    base_parser,
    cached_run,
    count_params,
    ensure_source,
    estimate_seconds,
    finetune_classifier,
    fixed_test_loader,
    fmt_duration,
    log,
    max_shared_ranks,
    parse_seeds,
    provenance,
    resolve_device,
    resolve_mode,
    seed_everything,
    setup_torch,
    template_params,
)
from tucker_init.initialize import LearnConfig  # noqa: E402
from tucker_init.initializers import get_initializer  # noqa: E402
from tucker_init.models import parse_size  # noqa: E402
from tucker_init.pipeline import ModelSpec, load_model, make_loaders  # noqa: E402

METHODS = ("random", "weight_selection", "linear_expansion", "kronecker", "tucker", "tucker_learned", "pretrained")
TEMPLATE_METHODS = ("tucker_learned", "tucker", "kronecker")
LEARNED = ("kronecker", "tucker_learned")
METHOD_NOTES = {
    "random": "timm's default init",
    "weight_selection": "uniform selection from the dense MAE source",
    "linear_expansion": "TLEG fit over the dense MAE source's layers",
    "kronecker": "Kronecker template (MAE), scalers learned",
    "tucker": "Tucker template (MAE, width scaling {scaling}), rules only (depth interpolate, width slice)",
    "tucker_learned": "Tucker template (MAE, width scaling {scaling}), scalers learned",
    "pretrained": "MAE on the target itself, same budget",
}


@dataclass(frozen=True)
class Plan:
    """Targets and budgets of one mode (sources: :data:`SOURCE_PRESETS`)."""

    vit_targets: tuple[tuple[int, int], ...]
    resnet_targets: tuple[tuple[int, int], ...]  # (depth, width); each width gets its own sources
    learn_steps: int
    learn_batch: int
    finetune_steps: int
    finetune_batch: int
    finetune_lr: float
    test_subset: int | None
    train_subset: int | None = None  # fine-tuning data subset (smoke only)


PLANS: dict[str, Plan] = {
    "smoke": Plan(((1, 64),), ((1, 8),), 2, 16, 3, 16, 1e-3, 64, 256),
    "quick": Plan(((3, 64), (6, 128)), ((1, 16),), 50, 32, 150, 32, 1e-3, 2000),
    # The sizes except L12 w192 (the full setting's), the demo's fine-tuning length.
    "medium": Plan(((3, 64), (3, 128), (3, 192), (6, 128)), ((1, 16), (1, 32)), 50, 32, 200, 32, 1e-3, 2000),
    # ~0.16 epoch of Fashion-MNIST for the scalers (150 x 64 = 9,600 images), as in SWEET.
    "full": Plan(((3, 64), (3, 128), (3, 192), (6, 128), (12, 192)), ((1, 16), (1, 32)), 150, 64, 1000, 64, 1e-3, None),
}


@dataclass
class Family:
    """Targets served by one set of sources (a dense model and two templates on one model)."""

    name: str
    source_model: ModelSpec
    targets: list[ModelSpec]
    dense: SourceSpec
    tucker: SourceSpec
    kronecker: SourceSpec


def _parse(argv: list[str] | None):
    parser = base_parser(__doc__)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of methods (default: all)")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="MAE steps of every source")
    parser.add_argument(
        "--learn-steps", type=int, default=None, help="scaler-learning steps (kronecker, tucker_learned)"
    )
    parser.add_argument("--finetune-steps", type=int, default=None, help="fine-tuning steps of every run")
    parser.add_argument(
        "--vit-targets",
        default=None,
        help="comma list of ViT sizes, e.g. L3w64,L12w192 ('' = none; default: the mode's)",
    )
    parser.add_argument(
        "--resnet-targets", default=None, help="comma list of ResNet sizes, e.g. L1w16 ('' = none); default: the mode's"
    )
    return parser.parse_args(argv)


def _sizes(text: str, option: str) -> tuple[tuple[int, int], ...]:
    """``"L3w64,L12w192"`` -> ``((3, 64), (12, 192))``; ``""`` -> no targets."""
    try:
        return tuple(parse_size(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise SystemExit(f"{option}: {err}") from None


def build_families(preset: SourcePreset, plan: Plan, vit_scaling: str = "off") -> list[Family]:
    """The ViT family (Tucker template pre-trained with width scaling ``vit_scaling``) and one
    ResNet family per target width."""

    def sources(model: ModelSpec, tucker_ranks: tuple[int, int, int], kron_ranks, scaling: str):
        common = {
            "steps": preset.steps,
            "batch_size": preset.batch_size,
            "lr": preset.lr,
            "data": preset.data,
            "seed": preset.seed,
            "train_subset": preset.train_subset,
        }
        return (
            SourceSpec("dense", model, **common),
            SourceSpec("tucker", model, ranks=tucker_ranks, scaling=scaling, **common),
            SourceSpec("kronecker", model, ranks=kron_ranks, **common),
        )

    families = []
    if plan.vit_targets:
        model = ModelSpec("vit", *preset.vit_source)
        targets = [ModelSpec("vit", d, w) for d, w in plan.vit_targets]
        families.append(
            Family("ViT", model, targets, *sources(model, preset.vit_tucker_ranks, preset.vit_kron_ranks, vit_scaling))
        )
    for width in sorted({w for _, w in plan.resnet_targets}):
        model = ModelSpec("resnet", preset.resnet_source_depth, width)
        targets = [ModelSpec("resnet", d, w) for d, w in plan.resnet_targets if w == width]
        # Width scaling only prepares a template for width changes, which ResNet templates cannot
        # make; the largest shared core the library allows keeps the template as close as it can be.
        families.append(
            Family(
                f"ResNet w{width}",
                model,
                targets,
                *sources(model, max_shared_ranks(model), preset.resnet_kron_ranks, "off"),
            )
        )
    return families


def direct_source(family: Family, target: ModelSpec) -> SourceSpec:
    """Direct pre-training of ``target``: the dense source's budget on the target's size (the
    same cache entry as the dense source when the target has the source's size)."""
    return dataclasses.replace(family.dense, model=target)


def one_run(
    target: ModelSpec,
    method: str,
    seed: int,
    sources: dict[str, Any],
    plan: Plan,
    data: str,
    test_loader: Any,
    device: str,
) -> dict[str, Any]:
    """Initialize ``target`` by ``method`` and fine-tune it; a dict with top1 or the n/a reason."""
    seed_everything(seed)
    model = target.build()  # the target's own init depends on the seed (parts no source covers keep it)
    options: dict[str, Any] = {}
    if method in ("random", "tucker", "tucker_learned", "kronecker"):
        options["seed"] = seed
    if method in LEARNED:
        loader, _ = make_loaders(data, plan.learn_batch, seed=seed, train_subset=plan.train_subset)
        options["learn"] = LearnConfig(
            data=loader, steps=plan.learn_steps, progress=False, device=str(resolve_device(device))
        )
    start = time.perf_counter()
    try:
        model, report = get_initializer(method)(model, sources[method], return_report=True, **options)
    except ValueError as err:  # the method cannot build this target (e.g. a larger width than the source)
        return {"status": "n/a", "reason": str(err).splitlines()[0][:200]}
    init_s = time.perf_counter() - start
    result = finetune_classifier(
        model,
        data,
        test_loader,
        steps=plan.finetune_steps,
        batch_size=plan.finetune_batch,
        lr=plan.finetune_lr,
        seed=seed,
        device=device,
        train_subset=plan.train_subset,
    )
    assert result.final_eval is not None
    return {
        "status": "ok",
        "top1": float(result.final_eval["top1"]),
        "test_loss": float(result.final_eval["loss"]),
        "init_s": init_s,
        "finetune_s": float(result.elapsed_s),
        "learn_loss_first": report.losses[0] if report.losses else None,
        "learn_loss_last": report.losses[-1] if report.losses else None,
        "tensors": dict(Counter(report.entries.values())),
    }


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def verdicts(summary: list[dict[str, Any]], targets: list[str], methods: list[str]) -> tuple[list[str], list[str]]:
    """One plain sentence per target size, and the list of places where a template does not help."""
    by = {(r["target"], r["method"]): r for r in summary if r["status"] == "ok"}
    sentences, no_help = [], []
    for target in targets:
        ok = {m: by[(target, m)] for m in methods if (target, m) in by}
        if not ok:
            sentences.append(f"- **{target}**: no method could be run.")
            continue
        ranked = sorted(ok, key=lambda m: ok[m]["top1_mean"], reverse=True)
        best = ranked[0]
        b = ok[best]
        text = f"- **{target}**: best is `{best}` ({_fmt(b['top1_mean'], b['top1_std'], b['n'])} %)"
        if len(ranked) > 1:
            r2 = ok[ranked[1]]
            text += f", {b['top1_mean'] - r2['top1_mean']:.2f} points above the runner-up `{ranked[1]}`"
        rnd = ok.get("random")
        if rnd is not None and best != "random":
            text += f" and {b['top1_mean'] - rnd['top1_mean']:+.2f} points vs random init"
        text += "."
        if rnd is not None:
            parts = []
            for m in TEMPLATE_METHODS:
                if m not in ok:
                    continue
                t = ok[m]
                delta = t["top1_mean"] - rnd["top1_mean"]
                spread = max(t["top1_std"], rnd["top1_std"])
                several = min(t["n"], rnd["n"]) > 1
                if delta <= 0:
                    verdict = "does NOT beat random init"
                    no_help.append(f"- {target}, `{m}`: {delta:+.2f} points vs random init")
                elif several and delta <= spread:
                    verdict = "beats random init by less than the seed spread"
                    no_help.append(
                        f"- {target}, `{m}`: {delta:+.2f} points vs random init, within the seed spread ({spread:.2f})"
                    )
                else:
                    verdict = "beats random init"
                parts.append(f"`{m}` {delta:+.2f} ({verdict})")
            if parts:
                text += " Templates vs random init: " + "; ".join(parts) + "."
                if rnd["n"] == 1:
                    text += " (One seed: no spread measured, so small differences may be noise.)"
        sentences.append(text)
    return sentences, no_help


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    mode = resolve_mode(args)
    setup_torch(args.threads)
    command = provenance(__file__, argv)
    seeds = parse_seeds(args.seeds, mode)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {list(METHODS)}")
    preset = SOURCE_PRESETS[mode]
    preset = dataclasses.replace(
        preset,
        data=args.data or preset.data,
        steps=args.pretrain_steps or preset.steps,
    )
    plan = PLANS[mode]
    plan = dataclasses.replace(
        plan,
        learn_steps=args.learn_steps or plan.learn_steps,
        finetune_steps=args.finetune_steps or plan.finetune_steps,
        vit_targets=_sizes(args.vit_targets, "--vit-targets") if args.vit_targets is not None else plan.vit_targets,
        resnet_targets=(
            _sizes(args.resnet_targets, "--resnet-targets") if args.resnet_targets is not None else plan.resnet_targets
        ),
    )
    out = Path(args.out) if args.out else RESULTS_DIR / "init_methods" / mode
    cache = Path(args.cache) if args.cache else CACHE_DIR
    data = preset.data
    log(f"init_methods ({mode}): {command}")
    log(f"methods {methods}; seeds {seeds}; data {data}; output {out}; cache {cache}")

    families = build_families(preset, plan, args.tucker_scaling)
    needed: dict[str, SourceSpec] = {}  # cache key -> source, every source pre-trained once
    for fam in families:
        if {"weight_selection", "linear_expansion"} & set(methods):
            needed[fam.dense.key()] = fam.dense
        if {"tucker", "tucker_learned"} & set(methods):
            needed[fam.tucker.key()] = fam.tucker
        if "kronecker" in methods:
            needed[fam.kronecker.key()] = fam.kronecker
        if "pretrained" in methods:
            for t in fam.targets:
                needed[direct_source(fam, t).key()] = direct_source(fam, t)

    # -- estimate -------------------------------------------------------------------------------
    settings_of = {
        "data": data,
        "learn_steps": plan.learn_steps,
        "learn_batch": plan.learn_batch,
        "finetune_steps": plan.finetune_steps,
        "finetune_batch": plan.finetune_batch,
        "finetune_lr": plan.finetune_lr,
        "test_subset": plan.test_subset,
        "train_subset": plan.train_subset,
    }
    runs_dir = out / "runs"
    todo = [
        (fam, t, m, s)
        for fam in families
        for t in fam.targets
        for m in methods
        for s in seeds
        if not (runs_dir / t.name / m / f"seed{s}.json").is_file()
    ]
    if mode != "smoke":
        jobs = [
            (src.model, "mae", src.steps, src.batch_size)
            for src in needed.values()
            if not (cache / src.key() / "source.json").is_file()
        ]
        n_test = plan.test_subset or 10_000
        for _, t, m, _ in todo:
            jobs.append((t, "ft", plan.finetune_steps, plan.finetune_batch))
            jobs.append((t, "eval", n_test, 0))
            if m in LEARNED:
                jobs.append((t, "ft", plan.learn_steps, plan.learn_batch))
        log("estimating the run time (one timed step per model size) ...")
        estimate = estimate_seconds(jobs, args.device)
        log(
            f"estimate: ~{fmt_duration(estimate)} on this machine for {len(jobs)} jobs "
            f"({len(todo)} fine-tuning runs to do, {sum(1 for j in jobs if j[1] == 'mae')} sources to pre-train)"
        )

    # -- sources --------------------------------------------------------------------------------
    start = time.perf_counter()
    built: dict[str, Source] = {key: ensure_source(src, cache, args.device) for key, src in needed.items()}

    test_loader = fixed_test_loader(data, plan.test_subset)
    rows: list[dict[str, Any]] = []
    total = sum(len(f.targets) for f in families) * len(methods) * len(seeds)
    k = 0
    for fam in families:
        dense_model = load_model(built[fam.dense.key()].path)[0] if fam.dense.key() in built else None
        for target in fam.targets:
            srcs: dict[str, Any] = {
                "random": None,
                "weight_selection": dense_model,
                "linear_expansion": dense_model,
                "kronecker": built[fam.kronecker.key()].path if fam.kronecker.key() in built else None,
                "tucker": built[fam.tucker.key()].path if fam.tucker.key() in built else None,
                "tucker_learned": built[fam.tucker.key()].path if fam.tucker.key() in built else None,
            }
            direct_key = direct_source(fam, target).key()
            if direct_key in built:
                srcs["pretrained"] = load_model(built[direct_key].path)[0]
            params = count_params(target.build())
            for method in methods:
                for seed in seeds:
                    k += 1
                    settings = {
                        **settings_of,
                        "target": dataclasses.asdict(target),
                        "method": method,
                        "seed": seed,
                        "sources": {
                            "dense": fam.dense.key(),
                            "tucker": fam.tucker.key(),
                            "kronecker": fam.kronecker.key(),
                            "direct": direct_key,
                        },
                    }
                    result = cached_run(
                        runs_dir / target.name / method / f"seed{seed}.json",
                        settings,
                        lambda t=target, m=method, s=seed, src=srcs: one_run(
                            t, m, s, src, plan, data, test_loader, args.device
                        ),
                    )
                    row = {
                        "family": fam.name,
                        "target": target.name,
                        "params": params,
                        "method": method,
                        "seed": seed,
                        "status": result["status"],
                        "top1": result.get("top1"),
                        "test_loss": result.get("test_loss"),
                        "init_s": result.get("init_s"),
                        "finetune_s": result.get("finetune_s"),
                        "learn_loss_first": result.get("learn_loss_first"),
                        "learn_loss_last": result.get("learn_loss_last"),
                        "note": result.get("reason", ""),
                    }
                    rows.append(row)
                    what = f"top1 {row['top1']:.2f}" if row["status"] == "ok" else f"n/a: {row['note']}"
                    extra = " (reused)" if result.get("reused") else ""
                    if row["status"] == "ok" and not result.get("reused"):
                        extra = f" (init {row['init_s']:.1f} s, fine-tune {row['finetune_s']:.1f} s)"
                    log(f"[{k}/{total}] {target.name} {method} seed {seed}: {what}{extra}")

    # -- tables, plot, report -------------------------------------------------------------------
    elapsed = time.perf_counter() - start
    write_table(rows, out / "runs", command)
    ok_rows = [r for r in rows if r["status"] == "ok"]
    summary: list[dict[str, Any]] = []
    agg = {(r["target"], r["method"]): r for r in aggregate(ok_rows, ["target", "method"], "top1")} if ok_rows else {}
    target_names = [t.name for fam in families for t in fam.targets]
    params_of = {r["target"]: r["params"] for r in rows}
    for name in target_names:
        rnd = agg.get((name, "random"))
        for method in methods:
            a = agg.get((name, method))
            if a is None:
                note = next((r["note"] for r in rows if r["target"] == name and r["method"] == method), "")
                summary.append(
                    {"target": name, "params": params_of[name], "method": method, "status": "n/a", "note": note}
                )
                continue
            summary.append(
                {
                    "target": name,
                    "params": params_of[name],
                    "method": method,
                    "status": "ok",
                    "top1_mean": a["top1_mean"],
                    "top1_std": a["top1_std"],
                    "n": a["n"],
                    "delta_vs_random": a["top1_mean"] - rnd["top1_mean"] if rnd is not None else None,
                    "note": "",
                }
            )
    write_table(summary, out / "summary", command)
    plot_rows = [
        {"method": r["method"], "size": r["target"], "top1_mean": r["top1_mean"], "top1_std": r["top1_std"]}
        for r in summary
        if r["status"] == "ok"
    ]
    if plot_rows:
        plot_accuracy_vs_size(
            plot_rows,
            out / "accuracy_vs_size.png",
            provenance=command,
            title=f"Fine-tuned top-1 by init method ({plan.finetune_steps} steps, {len(seeds)} seed(s))",
            figsize=(max(8.0, 1.8 * len(target_names)), 4.8),
        )

    source_rows = []
    for src in built.values():
        row = {
            "source": src.spec.describe(),
            "params": count_params(src.spec.model.build()),
            "mae_steps": src.spec.steps,
            "batch": src.spec.batch_size,
            "mae_loss_first": src.meta.get("first_loss"),
            "mae_loss_final": src.meta.get("final_loss"),
            "pretrain_s": src.meta.get("pretrain_s"),
            "key": src.spec.key(),
        }
        if src.spec.kind != "dense":
            counts = template_params(src.path)
            row["params"] = counts["template"] + counts["scalers"]
            row["template_params"] = counts["template"]
            row["scaler_params"] = counts["scalers"]
        source_rows.append(row)
    if source_rows:
        write_table(source_rows, out / "sources", command)

    sentences, no_help = verdicts(summary, target_names, methods)
    table = _pivot(summary, target_names, methods)
    vit_scaling = next((f.tucker.scaling for f in families if f.source_model.family == "vit"), "off")
    report = [
        f"Produced by: `{command}`",
        "",
        "# Initialization methods x target sizes",
        "",
        f"Question: which initialization gives the best fine-tuned top-1 on {data} at each target size?",
        "",
        f"Setting `{mode}`: fine-tuning {plan.finetune_steps} steps x batch {plan.finetune_batch}, "
        f"AdamW lr {plan.finetune_lr:g}, 10 % warm-up + cosine, label smoothing 0.1, the same for every "
        f"method; test images: {plan.test_subset or 'all 10,000'} (the same for every run); "
        f"seeds {seeds} (mean ± sample std). Sources: MAE, {preset.steps} steps x batch {preset.batch_size}, "
        f"lr {preset.lr:g}, seed {preset.seed}, each pre-trained once. Learned scalers "
        f"(`kronecker`, `tucker_learned`): {plan.learn_steps} Adam steps x batch {plan.learn_batch} on labelled "
        "training images before fine-tuning (not counted in the fine-tuning budget). "
        f"Compute: {fmt_duration(sum(r.get('pretrain_s') or 0 for r in source_rows))} pre-training sources, "
        f"{fmt_duration(sum((r['init_s'] or 0) + (r['finetune_s'] or 0) for r in ok_rows))} initializing and "
        f"fine-tuning (this invocation: {fmt_duration(elapsed)}, finished runs and sources are reused).",
        "",
        "Methods: " + "; ".join(f"`{m}` = {METHOD_NOTES[m].format(scaling=vit_scaling)}" for m in methods) + ".",
        "",
        "## Top-1 (%) after fine-tuning",
        "",
        *table,
        "",
        "## What the numbers say",
        "",
        *sentences,
        "",
        "## Where the template does not help",
        "",
        *(no_help or ["- Nowhere in this run: every template method beat random init by more than the seed spread."]),
        "",
        "## Notes",
        "",
        *_notes(families, preset, plan, mode),
        "",
        "Sources (`sources.csv`):",
        "",
        *_source_lines(source_rows),
        "",
        "Files: `summary.csv` (per size and method), `runs.csv` (per seed), `sources.csv`, `accuracy_vs_size.png`.",
    ]
    (out / "init_methods.md").write_text("\n".join(line for line in report if line is not None) + "\n")
    print("\n".join(table))
    print()
    print("\n".join(sentences))
    print("\nWhere the template does not help:\n" + ("\n".join(no_help) or "- nowhere in this run"))
    log(f"done in {fmt_duration(elapsed)}; results in {out}")
    return 0


def _notes(families: list[Family], preset: SourcePreset, plan: Plan, mode: str) -> list[str]:
    """The notes that apply to this run."""
    notes = [f"- {fam.name} sources are made on {fam.source_model.name}." for fam in families]
    if any(fam.source_model.family == "resnet" for fam in families):
        notes.append(
            f"- ResNet: each ResNet width has its own sources at depth {preset.resnet_source_depth} and the "
            "ResNet targets only change depth (a depth-only comparison of all methods). Their "
            "Tucker core has the largest ranks a shared core allows and no width scaling (there is no width "
            "change to prepare for)."
        )
    same = [t.name for fam in families for t in fam.targets if t == fam.source_model]
    if same:
        notes.append(
            f"- {', '.join(same)} has the source's size: there `weight_selection` copies the dense source, so it "
            "equals `pretrained` (the same cache entry), and `linear_expansion` nearly does."
        )
    notes.append("- `n/a`: the method cannot build that target; the reason is in `summary.csv`.")
    if mode != "full":
        notes.append(
            f"- `{mode}` budgets are tiny (MAE {preset.steps} steps x {preset.batch_size} images; fine-tuning "
            f"{plan.finetune_steps} x {plan.finetune_batch} = {plan.finetune_steps * plan.finetune_batch:,} images): "
            "the ViTs are still early in training (loss far from converged), where a different random init alone "
            "can move top-1 by several points. They check that everything runs and show trends at best; "
            "conclusions need the full setting (longer pre-training and fine-tuning, the L12 w192 target)."
        )
    return notes


def _pivot(summary: list[dict[str, Any]], targets: list[str], methods: list[str]) -> list[str]:
    """Markdown table: one row per target, one column per method, ``mean ± std``; best in bold."""
    by = {(r["target"], r["method"]): r for r in summary}
    lines = ["| target | params | " + " | ".join(methods) + " |", "|---|---:|" + "---:|" * len(methods)]
    for t in targets:
        cells = []
        oks = [by[(t, m)]["top1_mean"] for m in methods if by.get((t, m), {}).get("status") == "ok"]
        best = max(oks) if oks else None
        for m in methods:
            r = by.get((t, m))
            if r is None or r["status"] != "ok":
                cells.append("n/a")
                continue
            cell = _fmt(r["top1_mean"], r["top1_std"], r["n"])
            cells.append(f"**{cell}**" if r["top1_mean"] == best else cell)
        params = next((by[(t, m)]["params"] for m in methods if (t, m) in by), "")
        lines.append(f"| {t} | {params:,} | " + " | ".join(cells) + " |")
    return lines


def _source_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| source | params | MAE steps x batch | MAE loss first -> final | time |", "|---|---:|---|---|---:|"]
    for r in rows:
        first, final = r.get("mae_loss_first"), r.get("mae_loss_final")
        loss = f"{first:.4f} -> {final:.4f}" if first is not None and final is not None else ""
        t = fmt_duration(r["pretrain_s"]) if r.get("pretrain_s") is not None else ""
        lines.append(f"| {r['source']} | {r['params']:,} | {r['mae_steps']} x {r['batch']} | {loss} | {t} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
