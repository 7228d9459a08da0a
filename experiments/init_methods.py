"""Which initialization gives the best fine-tuned accuracy at each target size: random init,
weight selection, linear expansion, a Kronecker template, a Tucker template, or direct
pre-training of the target itself?

Every method gets the same fine-tuning budget (steps, batch, learning rate, schedule, data
order for a given seed) and is scored on the same test images; mean and spread over seeds.

Methods (the names of the initializer registry, ``tucker_init.get_initializer``):

- ``random``: timm's default init of the target.
- ``weight_selection``: uniform element selection + first-N layers from a dense MAE-trained
  source model (Xu et al. 2023).
- ``linear_expansion``: ``theta_l = A + (l/L) B`` fitted over the dense source's layers (TLEG).
- ``kronecker``: a Kronecker template (WAVE / WeiT), MAE-trained; the target's scalers are
  learned on labelled data for a small budget before fine-tuning.
- ``tucker``: a Tucker template (SWEET: MAE, width-wise stochastic scaling ``--scaling``,
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

    python -m experiments.init_methods --quick    # ~10-15 min on 2 busy CPU cores: 3 targets, 1 seed
    python -m experiments.init_methods --medium   # ~1.5 h: 6 targets, 1000-step sources, 3 seeds
    python -m experiments.init_methods            # full: 7 targets, 3 seeds (hours; estimate printed)
    python -m experiments.init_methods --smoke    # seconds; for the tests only

Outputs in ``results/init_methods/<quick|medium|full|smoke>/``: ``init_methods.md`` (command line,
settings, sources, table, one sentence per size, where the template does not help),
``summary.csv`` / ``.md`` (mean, std, n per size and method), ``runs.csv`` / ``.md`` (every
run), ``sources.csv`` / ``.md``, ``accuracy_vs_size.png``. Finished runs are kept in ``runs/``
so an interrupted full run resumes.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from analysis import aggregate, plot_accuracy_vs_size, write_table
from experiments.harness.cache import cached_run, settings_of
from experiments.harness.cli import Context, add_scaling_option, entry_point
from experiments.harness.data import Splits, load_splits
from experiments.harness.estimate import Job, Progress, estimate_seconds, fmt_duration, log
from experiments.harness.measure import count_params
from experiments.harness.provenance import md_table, report_header, write_report
from experiments.harness.runs import init_target
from experiments.harness.settings import PLAN_BUDGETS, FinetunePlan, resolve_plan
from experiments.harness.sources import (
    Source,
    SourcePreset,
    SourceSpec,
    ensure_source,
    max_shared_ranks,
    source_job,
    template_params,
)
from tucker_init.models import parse_size
from tucker_init.pipeline import ModelSpec, load_model

NAME = "init_methods"
METHODS = ("random", "weight_selection", "linear_expansion", "kronecker", "tucker", "tucker_learned", "pretrained")
TEMPLATE_METHODS = ("tucker_learned", "tucker", "kronecker")
LEARNED = ("kronecker", "tucker_learned")
SEEDED = ("random", "tucker", "tucker_learned", "kronecker")  # the initializers that take a seed
METHOD_NOTES = {
    "random": "timm's default init",
    "weight_selection": "uniform selection from the dense MAE source",
    "linear_expansion": "TLEG fit over the dense MAE source's layers",
    "kronecker": "Kronecker template (MAE), scalers learned",
    "tucker": "Tucker template (MAE, width scaling {scaling}), rules only (depth interpolate, width slice)",
    "tucker_learned": "Tucker template (MAE, width scaling {scaling}), scalers learned",
    "pretrained": "MAE on the target itself, same budget",
}


@dataclass(frozen=True, kw_only=True)
class Plan(FinetunePlan):
    """Targets and budgets of one mode (sources: :data:`SOURCE_PRESETS`)."""

    vit_targets: tuple[tuple[int, int], ...]
    resnet_targets: tuple[tuple[int, int], ...]  # (depth, width); each width gets its own sources


_SIZES = ((3, 64), (3, 128), (3, 192), (6, 128))  # the sizes except L12 w192
PLANS: dict[str, Plan] = {
    "smoke": Plan(**PLAN_BUDGETS["smoke"], vit_targets=((1, 64),), resnet_targets=((1, 8),), finetune_steps=3),
    "quick": Plan(
        **PLAN_BUDGETS["quick"], vit_targets=((3, 64), (6, 128)), resnet_targets=((1, 16),), finetune_steps=150
    ),
    # The demo's fine-tuning length.
    "medium": Plan(**PLAN_BUDGETS["medium"], vit_targets=_SIZES, resnet_targets=((1, 16), (1, 32)), finetune_steps=200),
    "full": Plan(
        **PLAN_BUDGETS["full"], vit_targets=(*_SIZES, (12, 192)), resnet_targets=((1, 16), (1, 32)), finetune_steps=1000
    ),
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


def _sizes(text: str, option: str) -> tuple[tuple[int, int], ...]:
    """``"L3w64,L12w192"`` -> ``((3, 64), (12, 192))``; ``""`` -> no targets."""
    try:
        return tuple(parse_size(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise SystemExit(f"{option}: {err}") from None


def build_families(preset: SourcePreset, plan: Plan) -> list[Family]:
    """The ViT family (Tucker template pre-trained with width scaling ``preset.scaling``) and one
    ResNet family per target width."""

    def sources(model: ModelSpec, tucker_ranks: tuple[int, int, int], kron_ranks, scaling: str):
        return (
            preset.source("dense", model),
            preset.source("tucker", model, tucker_ranks, scaling),
            preset.source("kronecker", model, kron_ranks),
        )

    families = []
    if plan.vit_targets:
        model = ModelSpec("vit", *preset.vit_source)
        targets = [ModelSpec("vit", d, w) for d, w in plan.vit_targets]
        families.append(
            Family(
                "ViT", model, targets, *sources(model, preset.vit_tucker_ranks, preset.vit_kron_ranks, preset.scaling)
            )
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
    return replace(family.dense, model=target)


# -- plan -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Experiment:
    """The resolved plan of one invocation: sources, targets, methods, seeds."""

    mode: str
    preset: SourcePreset
    plan: Plan
    methods: tuple[str, ...]
    families: tuple[Family, ...]

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.plan.seeds

    def needed(self) -> dict[str, SourceSpec]:
        """Cache key -> source, for every source the methods use (each pre-trained once)."""
        needed: dict[str, SourceSpec] = {}
        for fam in self.families:
            wanted = [
                (fam.dense, {"weight_selection", "linear_expansion"}),
                (fam.tucker, {"tucker", "tucker_learned"}),
                (fam.kronecker, {"kronecker"}),
            ]
            wanted += [(direct_source(fam, t), {"pretrained"}) for t in fam.targets]
            needed.update({src.key(): src for src, users in wanted if users & set(self.methods)})
        return needed

    def runs(self) -> list[tuple[Family, ModelSpec, str, int]]:
        """Every (family, target, method, seed) run."""
        return [(f, t, m, s) for f in self.families for t in f.targets for m in self.methods for s in self.seeds]


def options(parser: Any) -> None:
    """The script's own options."""
    add_scaling_option(parser)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of methods (default: all)")
    parser.add_argument("--learn-steps", type=int, help="scaler-learning steps (kronecker, tucker_learned)")
    parser.add_argument(
        "--vit-targets", help="comma list of ViT sizes, e.g. L3w64,L12w192 ('' = none; default: the mode's)"
    )
    parser.add_argument(
        "--resnet-targets", help="comma list of ResNet sizes, e.g. L1w16 ('' = none); default: the mode's"
    )


def make_plan(context: Context) -> Experiment:
    """The mode's preset and plan with the command line's overrides."""
    args = context.args
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {list(METHODS)}")
    preset, plan = resolve_plan(
        PLANS,
        context,
        vit_targets=None if args.vit_targets is None else _sizes(args.vit_targets, "--vit-targets"),
        resnet_targets=None if args.resnet_targets is None else _sizes(args.resnet_targets, "--resnet-targets"),
    )
    return Experiment(context.mode, preset, plan, methods, tuple(build_families(preset, plan)))


def run_path(context: Context, target: ModelSpec, method: str, seed: int) -> Path:
    return context.out / "runs" / target.name / method / f"seed{seed}.json"


def announce(exp: Experiment, context: Context) -> Progress:
    """Print the plan and the measured estimate of the work left; the progress of the run."""
    plan = exp.plan
    jobs = [
        source_job(src) for src in exp.needed().values() if not (context.cache / src.key() / "source.json").is_file()
    ]
    todo = [(t, m) for _, t, m, s in exp.runs() if not run_path(context, t, m, s).is_file()]
    jobs += [j for t, m in todo for j in run_jobs(plan, t, m)]
    log(f"init_methods ({exp.mode}): {context.command}")
    log(
        f"methods {list(exp.methods)}; seeds {list(exp.seeds)}; data {exp.preset.data}; output {context.out}; "
        f"cache {context.cache}"
    )
    log("estimating the run time (one timed step per model size) ...")
    total = estimate_seconds(jobs, context.device)
    log(
        f"estimate: ~{fmt_duration(total)} on this machine for {len(jobs)} jobs ({len(todo)} fine-tuning runs to "
        f"do, {sum(1 for j in jobs if j.kind == 'mae')} sources to pre-train)"
    )
    return Progress(total)


# -- run --------------------------------------------------------------------------------------------------
def run_jobs(plan: Plan, target: ModelSpec, method: str) -> list[Job]:
    """The estimate's jobs of one run: scaler learning, fine-tuning, the final evaluation."""
    jobs = [
        Job(target, "ft", plan.finetune_steps, plan.finetune_batch),
        Job(target, "eval", plan.test_subset or 10_000),
    ]
    return jobs + ([Job(target, "ft", plan.learn_steps, plan.learn_batch)] if method in LEARNED else [])


def method_sources(fam: Family, target: ModelSpec, built: dict[str, Source]) -> dict[str, Any]:
    """What each method initializes ``target`` from (None where the method is not run)."""

    def path(src: SourceSpec) -> Path | None:
        return built[src.key()].path if src.key() in built else None

    def dense(src: SourceSpec) -> nn.Module | None:
        return load_model(built[src.key()].path)[0] if src.key() in built else None

    dense_model = dense(fam.dense)
    return {
        "random": None,
        "weight_selection": dense_model,
        "linear_expansion": dense_model,
        "kronecker": path(fam.kronecker),
        "tucker": path(fam.tucker),
        "tucker_learned": path(fam.tucker),
        "pretrained": dense(direct_source(fam, target)),
    }


def one_run(target: ModelSpec, method: str, seed: int, source: Any, plan: Plan, splits: Splits, device: str):
    """Initialize ``target`` by ``method`` and fine-tune it; a dict with top1 or the n/a reason."""
    options: dict[str, Any] = {}
    if method in LEARNED:
        options["learn"] = plan.learn(splits, seed, device)
    start = time.perf_counter()
    try:
        model, report = init_target(target, method, source, seed, seed_method=method in SEEDED, **options)
    except ValueError as err:  # the method cannot build this target (e.g. a larger width than the source)
        return {"status": "n/a", "reason": str(err).splitlines()[0][:200]}
    init_s = time.perf_counter() - start
    result = plan.finetune(model, splits, seed, device)
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


def run_row(fam: Family, target: ModelSpec, params: int, method: str, seed: int, result: dict) -> dict[str, Any]:
    """One line of ``runs.csv``."""
    row = {
        "family": fam.name,
        "target": target.name,
        "params": params,
        "method": method,
        "seed": seed,
        "status": result["status"],
    }
    keys = ("top1", "test_loss", "init_s", "finetune_s", "learn_loss_first", "learn_loss_last")
    return {**row, **{k: result.get(k) for k in keys}, "note": result.get("reason", "")}


def run(exp: Experiment, context: Context, progress: Progress) -> tuple[list[dict[str, Any]], dict[str, Source]]:
    """The sources, then every run (finished runs are reused)."""
    built = {key: ensure_source(src, context.cache, context.device) for key, src in exp.needed().items()}
    for source in built.values():
        if not source.reused:
            progress.advance(estimate_seconds([source_job(source.spec)], context.device))
    plan = exp.plan
    splits = load_splits(exp.preset.data, train_subset=plan.train_subset, test_subset=plan.test_subset)
    settings = {**settings_of(plan), "data": exp.preset.data}
    rows: list[dict[str, Any]] = []
    all_runs = exp.runs()
    for k, (fam, target, method, seed) in enumerate(all_runs, 1):
        source = method_sources(fam, target, built)[method]
        keys = {
            "dense": fam.dense.key(),
            "tucker": fam.tucker.key(),
            "kronecker": fam.kronecker.key(),
            "direct": direct_source(fam, target).key(),
        }
        result = cached_run(
            run_path(context, target, method, seed),
            {**settings, "target": asdict(target), "method": method, "seed": seed, "sources": keys},
            lambda t=target, m=method, s=seed, src=source: one_run(t, m, s, src, plan, splits, context.device),
        )
        row = run_row(fam, target, count_params(target.build()), method, seed, result)
        rows.append(row)
        what = f"top1 {row['top1']:.2f}" if row["status"] == "ok" else f"n/a: {row['note']}"
        extra = " (reused)" if result.get("reused") else ""
        if row["status"] == "ok" and not result.get("reused"):
            extra = f" (init {row['init_s']:.1f} s, fine-tune {row['finetune_s']:.1f} s)"
            progress.advance(estimate_seconds(run_jobs(plan, target, method), context.device))
        progress.stage(f"[{k}/{len(all_runs)}] {target.name} {method} seed {seed}: {what}{extra}")
    return rows, built


# -- summarize --------------------------------------------------------------------------------------------
def summarize(rows: list[dict[str, Any]], targets: list[str], methods: tuple[str, ...]) -> list[dict[str, Any]]:
    """Mean, std and n per (target, method), with the difference to random init; n/a with its reason."""
    ok_rows = [r for r in rows if r["status"] == "ok"]
    agg = {(r["target"], r["method"]): r for r in aggregate(ok_rows, ["target", "method"], "top1")} if ok_rows else {}
    params_of = {r["target"]: r["params"] for r in rows}
    summary: list[dict[str, Any]] = []
    for name in targets:
        rnd = agg.get((name, "random"))
        for method in methods:
            a = agg.get((name, method))
            row = {"target": name, "params": params_of[name], "method": method}
            if a is None:
                note = next((r["note"] for r in rows if r["target"] == name and r["method"] == method), "")
                summary.append({**row, "status": "n/a", "note": note})
                continue
            delta = a["top1_mean"] - rnd["top1_mean"] if rnd is not None else None
            summary.append(
                {
                    **row,
                    "status": "ok",
                    "top1_mean": a["top1_mean"],
                    "top1_std": a["top1_std"],
                    "n": a["n"],
                    "delta_vs_random": delta,
                    "note": "",
                }
            )
    return summary


def source_rows(built: dict[str, Source]) -> list[dict[str, Any]]:
    """One line per source: parameters, MAE budget and losses, time."""
    rows = []
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
            row.update(
                params=counts["template"] + counts["scalers"],
                template_params=counts["template"],
                scaler_params=counts["scalers"],
            )
        rows.append(row)
    return rows


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
    rows = []
    for t in targets:
        ok = {m: by[(t, m)] for m in methods if by.get((t, m), {}).get("status") == "ok"}
        best = max((r["top1_mean"] for r in ok.values()), default=None)
        cells = ["n/a"] * len(methods)
        for k, m in enumerate(methods):
            if m in ok:
                cell = _fmt(ok[m]["top1_mean"], ok[m]["top1_std"], ok[m]["n"])
                cells[k] = f"**{cell}**" if ok[m]["top1_mean"] == best else cell
        params = next((by[(t, m)]["params"] for m in methods if (t, m) in by), "")
        rows.append([t, f"{params:,}", *cells])
    return md_table(["target", "params", *methods], rows, "lr" + "r" * len(methods))


def _source_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The sources table in Markdown."""
    cells = []
    for r in rows:
        first, final = r.get("mae_loss_first"), r.get("mae_loss_final")
        loss = f"{first:.4f} -> {final:.4f}" if first is not None and final is not None else ""
        t = fmt_duration(r["pretrain_s"]) if r.get("pretrain_s") is not None else ""
        cells.append([r["source"], f"{r['params']:,}", f"{r['mae_steps']} x {r['batch']}", loss, t])
    return md_table(["source", "params", "MAE steps x batch", "MAE loss first -> final", "time"], cells, "lrllr")


# -- report -----------------------------------------------------------------------------------------------
def _setting_text(exp: Experiment, rows: list, sources: list, elapsed: float) -> str:
    """The settings paragraph of the report."""
    plan, preset = exp.plan, exp.preset
    ok_rows = [r for r in rows if r["status"] == "ok"]
    return (
        f"Setting `{exp.mode}`: fine-tuning {plan.finetune_steps} steps x batch {plan.finetune_batch}, "
        f"AdamW lr {plan.finetune_lr:g}, 10 % warm-up + cosine, label smoothing 0.1, the same for every "
        f"method; test images: {plan.test_subset or 'all 10,000'} (the same for every run); "
        f"seeds {list(exp.seeds)} (mean ± sample std). Sources: MAE, {preset.steps} steps x batch {preset.batch_size}, "
        f"lr {preset.lr:g}, seed {preset.seed}, each pre-trained once. Learned scalers "
        f"(`kronecker`, `tucker_learned`): {plan.learn_steps} Adam steps x batch {plan.learn_batch} on labelled "
        "training images before fine-tuning (not counted in the fine-tuning budget). "
        f"Compute: {fmt_duration(sum(r.get('pretrain_s') or 0 for r in sources))} pre-training sources, "
        f"{fmt_duration(sum((r['init_s'] or 0) + (r['finetune_s'] or 0) for r in ok_rows))} initializing and "
        f"fine-tuning (this invocation: {fmt_duration(elapsed)}, finished runs and sources are reused)."
    )


def report(context: Context, exp: Experiment, rows: list, summary: list, sources: list, elapsed: float):
    """``init_methods.md``; returns the table, sentences and where the template does not help."""
    targets = [t.name for fam in exp.families for t in fam.targets]
    sentences, no_help = verdicts(summary, targets, list(exp.methods))
    table = _pivot(summary, targets, list(exp.methods))
    notes = "; ".join(f"`{m}` = {METHOD_NOTES[m].format(scaling=exp.preset.scaling)}" for m in exp.methods)
    nowhere = "- Nowhere in this run: every template method beat random init by more than the seed spread."
    header = [
        *report_header("Initialization methods x target sizes", context.command, exp.mode, elapsed / 60),
        f"Question: which initialization gives the best fine-tuned top-1 on {exp.preset.data} at each target size?",
        "",
        _setting_text(exp, rows, sources, elapsed),
        "",
        f"Methods: {notes}.",
    ]
    notes_lines = [*_notes(list(exp.families), exp.preset, exp.plan, exp.mode), "", "Sources (`sources.csv`):", ""]
    sections = [
        ("Top-1 (%) after fine-tuning", table),
        ("What the numbers say", sentences),
        ("Where the template does not help", no_help or [nowhere]),
        ("Notes", [*notes_lines, *_source_lines(sources)]),
    ]
    footer = "Files: `summary.csv` (per size and method), `runs.csv` (per seed), `sources.csv`, `accuracy_vs_size.png`."
    write_report(context.out / "init_methods.md", header, sections, footer)
    return table, sentences, no_help


def plot(context: Context, exp: Experiment, summary: list[dict[str, Any]]) -> None:
    """Accuracy by target size, one line per method."""
    rows = [
        {"method": r["method"], "size": r["target"], "top1_mean": r["top1_mean"], "top1_std": r["top1_std"]}
        for r in summary
        if r["status"] == "ok"
    ]
    if rows:
        n_targets = len({r["size"] for r in rows})
        plot_accuracy_vs_size(
            rows,
            context.out / "accuracy_vs_size.png",
            provenance=context.command,
            title=f"Fine-tuned top-1 by init method ({exp.plan.finetune_steps} steps, {len(exp.seeds)} seed(s))",
            figsize=(max(8.0, 1.8 * n_targets), 4.8),
        )


# -- main -------------------------------------------------------------------------------------------------
def experiment(context: Context) -> int:
    """Plan, run, summarize, report (see the module docstring)."""
    exp = make_plan(context)
    progress = announce(exp, context)
    rows, built = run(exp, context, progress)
    targets = [t.name for fam in exp.families for t in fam.targets]
    summary = summarize(rows, targets, exp.methods)
    sources = source_rows(built)
    write_table(rows, context.out / "runs", context.command)
    write_table(summary, context.out / "summary", context.command)
    if sources:
        write_table(sources, context.out / "sources", context.command)
    plot(context, exp, summary)
    table, sentences, no_help = report(context, exp, rows, summary, sources, progress.elapsed)
    print("\n".join(table) + "\n\n" + "\n".join(sentences))
    print("\nWhere the template does not help:\n" + ("\n".join(no_help) or "- nowhere in this run"))
    log(f"done in {fmt_duration(progress.elapsed)}; results in {context.out}")
    return 0


main = entry_point(NAME, __doc__, PLANS, experiment, extra=options)


if __name__ == "__main__":
    sys.exit(main())
