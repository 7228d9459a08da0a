"""How many times fewer fine-tuning steps does a Tucker-template init need to reach the final
accuracy of a randomly initialized twin?

For a few ViT target sizes, the target is fine-tuned twice with the same budget (steps, batch,
lr, schedule, data order): once from random init (timm's default) and once from the Tucker
template (SWEET: MAE, width-wise stochastic scaling ``--scaling``, default ``off`` as in
``init_methods.py``, whose cached template it reuses). By default the template init
learns the target's scalers first (``tucker_learned``, a small labelled budget that is reported
separately); ``--template-init tucker`` uses the depth / width rules only; ``--template-init
lossless`` is the README's best Tucker recipe instead: the dense MAE model of ``init_methods``
(same budget in steps; a dense step costs 0.89x a template step in FLOPs) held by its lossless
template (:func:`tucker_init.pipeline.lossless_template`) and initialized with
:func:`tucker_init.pipeline.lossless_rules` (at or below the source's size: weight selection's
model). Top-1 on fixed test images is measured before fine-tuning (step 0) and every
``eval_every`` steps.

Speed-up = (first evaluated step at which random init reaches its own final accuracy) /
(first evaluated step at which the template init reaches that accuracy). It is ``None`` when the
template init never reaches it within the budget: then the template gives no speed-up. Steps
are only known at evaluation points, so the ratio is coarse (its resolution is ``eval_every``).

The template (or dense model) is the one ``experiments/init_methods.py`` uses (same settings -> same entry in
``results/cache/``), pre-trained here only when it is not cached yet.

Run (from the repository root):

    python -m experiments.convergence --quick    # ~7 min on 2 busy CPU cores: 2 sizes, 1 seed
    python -m experiments.convergence --medium   # ~25 min: 1000-step template, 3 seeds
    python -m experiments.convergence            # full: 3 sizes, 3 seeds (hours; estimate printed)
    python -m experiments.convergence --smoke    # seconds; for the tests only

Outputs in ``results/convergence/<quick|medium|full|smoke>/``: ``convergence.md`` (command line,
settings, speed-ups in plain words), ``speedup.csv`` / ``.md``, ``curves.csv`` / ``.md`` (every
evaluation), ``accuracy_vs_steps_<size>.png`` (mean curves, the target accuracy dashed).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from analysis import plot_accuracy_vs_steps, steps_to_reach, write_table
from experiments.harness.cache import cached_run, settings_of
from experiments.harness.cli import (
    Context,
    add_layer_decay_option,
    add_scaling_option,
    check_layer_decay,
    entry_point,
    layer_decay_tag,
)
from experiments.harness.data import Splits, fixed_test_loader, load_splits
from experiments.harness.estimate import Job, Progress, estimate_seconds, fmt_duration, log, resolve_device
from experiments.harness.provenance import md_table, report_header, write_report
from experiments.harness.runs import init_target
from experiments.harness.settings import PLAN_BUDGETS, FinetunePlan, resolve_plan
from experiments.harness.sources import SourcePreset, SourceSpec, ensure_source, source_job
from tucker_init.pipeline import ModelSpec, lossless_rules, lossless_template
from tucker_init.training import evaluate

NAME = "convergence"
TEMPLATE_INITS = ("tucker_learned", "tucker", "lossless")


@dataclass(frozen=True, kw_only=True)
class Plan(FinetunePlan):
    """Targets and budgets of one mode (the template: :data:`SOURCE_PRESETS`)."""

    targets: tuple[tuple[int, int], ...]  # ViT (depth, width)
    eval_every: int


PLANS: dict[str, Plan] = {
    "smoke": Plan(**PLAN_BUDGETS["smoke"], targets=((1, 64),), finetune_steps=4, eval_every=2),
    # Same fine-tuning as init_methods --quick, so the final accuracies can be compared.
    "quick": Plan(**PLAN_BUDGETS["quick"], targets=((3, 64), (6, 128)), finetune_steps=150, eval_every=15),
    # Same sources as init_methods --medium; twice its fine-tuning, to see where random init ends up.
    "medium": Plan(**PLAN_BUDGETS["medium"], targets=((3, 64), (6, 128)), finetune_steps=400, eval_every=25),
    "full": Plan(**PLAN_BUDGETS["full"], targets=((3, 64), (6, 128), (12, 192)), finetune_steps=1000, eval_every=50),
}


# -- plan -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Experiment:
    """The resolved plan of one invocation."""

    mode: str
    preset: SourcePreset
    plan: Plan
    init: str  # the template init compared with random init

    @property
    def source_model(self) -> ModelSpec:
        return ModelSpec("vit", *self.preset.vit_source)

    @property
    def template(self) -> SourceSpec:
        """The same source as init_methods (same fields -> same cache key): its Tucker template, or
        for ``lossless`` its dense MAE model."""
        if self.init == "lossless":
            return self.preset.source("dense", self.source_model)
        return self.preset.source("tucker", self.source_model, self.preset.vit_tucker_ranks, self.preset.scaling)

    @property
    def targets(self) -> list[ModelSpec]:
        return [ModelSpec("vit", d, w) for d, w in self.plan.targets]

    @property
    def inits(self) -> tuple[str, str]:
        return ("random", self.init)

    @property
    def learn_steps(self) -> int:
        """Scaler-learning steps before fine-tuning (0 for the rules-only init)."""
        return self.plan.learn_steps if self.init == "tucker_learned" else 0

    def runs(self) -> list[tuple[ModelSpec, str, int]]:
        return [(t, i, s) for t in self.targets for i in self.inits for s in self.plan.seeds]


def options(parser: Any) -> None:
    """The script's own options."""
    add_scaling_option(parser)
    parser.add_argument(
        "--template-init",
        choices=TEMPLATE_INITS,
        default="tucker_learned",
        help="tucker_learned (scalers learned first, default), tucker (rules only) or lossless (the dense "
        "MAE model's lossless template, pipeline.lossless_rules)",
    )
    parser.add_argument("--learn-steps", type=int, help="scaler-learning steps (tucker_learned)")
    parser.add_argument("--eval-every", type=int, help="steps between evaluations")
    add_layer_decay_option(parser)  # both inits


def make_plan(context: Context) -> Experiment:
    """The mode's preset and plan with the command line's overrides."""
    args = context.args
    layer_decay = check_layer_decay(args.layer_decay)
    preset, plan = resolve_plan(PLANS, context, eval_every=args.eval_every, layer_decay=layer_decay)
    return Experiment(context.mode, preset, plan, args.template_init)


def run_path(context: Context, exp: Experiment, target: ModelSpec, init: str, seed: int) -> Path:
    """A run's result file; runs with layer decay keep their own (``<init>_ldD``)."""
    return context.out / "runs" / target.name / (init + layer_decay_tag(exp.plan.layer_decay)) / f"seed{seed}.json"


def curve_jobs(plan: Plan, target: ModelSpec, init: str) -> list[Job]:
    """The estimate's jobs of one curve: scaler learning, fine-tuning, every evaluation."""
    n_eval = (plan.test_subset or 10_000) * (plan.finetune_steps // plan.eval_every + 1)
    jobs = [Job(target, "ft", plan.finetune_steps, plan.finetune_batch), Job(target, "eval", n_eval)]
    return jobs + ([Job(target, "ft", plan.learn_steps, plan.learn_batch)] if init == "tucker_learned" else [])


def announce(exp: Experiment, context: Context) -> Progress:
    """Print the plan and the measured estimate of the work left; the progress of the run."""
    log(f"convergence ({exp.mode}): {context.command}")
    log(
        f"template init {exp.init}; seeds {list(exp.plan.seeds)}; data {exp.preset.data}; output {context.out}; "
        f"cache {context.cache}"
    )
    todo = [(t, i) for t, i, s in exp.runs() if not run_path(context, exp, t, i, s).is_file()]
    jobs = [j for t, i in todo for j in curve_jobs(exp.plan, t, i)]
    if not (context.cache / exp.template.key() / "source.json").is_file():
        jobs.append(source_job(exp.template))
    log("estimating the run time (one timed step per model size) ...")
    total = estimate_seconds(jobs, context.device)
    log(f"estimate: ~{fmt_duration(total)} on this machine ({len(todo)} runs to do)")
    return Progress(total)


# -- run --------------------------------------------------------------------------------------------------
def start_model(target: ModelSpec, init: str, seed: int, source: Path, exp: Experiment, splits: Splits, device: str):
    """``target`` initialized by ``init`` from ``source`` (a template file, or the dense model of ``lossless``)."""
    if init == "random":
        return init_target(target, "random", None, seed, seed_method=True)[0]
    if init == "lossless":
        rules = lossless_rules(exp.source_model, target)
        return init_target(target, "tucker", lossless_template(source), seed, seed_method=True, **rules)[0]
    options = {"learn": exp.plan.learn(splits, seed, device)} if init == "tucker_learned" else {}
    return init_target(target, init, source, seed, seed_method=True, **options)[0]


def one_curve(target: ModelSpec, init: str, seed: int, source: Path, exp: Experiment, splits: Splits, device: str):
    """Initialize (``"random"`` or a template init), evaluate at step 0, fine-tune with evaluations."""
    plan = exp.plan
    start = time.perf_counter()
    model = start_model(target, init, seed, source, exp, splits, device)
    init_s = time.perf_counter() - start
    # Step 0: the init itself, before any fine-tuning (train() evaluates only after steps).
    at_start = evaluate(model.to(resolve_device(device)), fixed_test_loader(splits.test, target.img_size))
    result = plan.finetune(model, splits, seed, device, eval_every=plan.eval_every)
    curve = [(0, float(at_start["top1"])), *result.curve("top1")]
    return {"curve": curve, "init_s": init_s, "finetune_s": float(result.elapsed_s)}


def run(exp: Experiment, context: Context, progress: Progress) -> tuple[dict[str, dict[str, list]], float]:
    """Target name -> init -> one curve per seed (finished runs are reused), and the seconds the runs took."""
    template = ensure_source(exp.template, context.cache, context.device)
    if not template.reused:
        progress.advance(estimate_seconds([source_job(exp.template)], context.device))
    plan = exp.plan
    splits = load_splits(exp.preset.data, train_subset=plan.train_subset, test_subset=plan.test_subset)
    settings = {**settings_of(plan), "data": exp.preset.data}
    source = {"template": exp.template.key()}  # random init's runs do not depend on it: shared by every --template-init
    curves: dict[str, dict[str, list]] = {t.name: {i: [] for i in exp.inits} for t in exp.targets}
    seconds = 0.0
    for k, (target, init, seed) in enumerate(exp.runs(), 1):
        result = cached_run(
            run_path(context, exp, target, init, seed),
            {**settings, **({} if init == "random" else source), "target": asdict(target), "init": init, "seed": seed},
            lambda t=target, i=init, s=seed: one_curve(t, i, s, template.path, exp, splits, context.device),
        )
        curve = [(int(s), float(v)) for s, v in result["curve"]]
        curves[target.name][init].append(curve)
        seconds += result["init_s"] + result["finetune_s"]
        how = " (reused)" if result.get("reused") else f" (fine-tune {result['finetune_s']:.1f} s)"
        if not result.get("reused"):
            progress.advance(estimate_seconds(curve_jobs(plan, target, init), context.device))
        progress.stage(
            f"[{k}/{len(exp.runs())}] {target.name} {init} seed {seed}: top1 {curve[0][1]:.2f} at step 0 -> "
            f"{curve[-1][1]:.2f} at step {curve[-1][0]}{how}"
        )
    return curves, seconds


# -- summarize --------------------------------------------------------------------------------------------
def speedup_row(random_curve, template_curve) -> dict[str, Any]:
    """Random init's final accuracy, the steps each init needs to reach it, and their ratio."""
    final = random_curve[-1][1]
    n_random = steps_to_reach(random_curve, final)
    n_template = steps_to_reach(template_curve, final)
    if n_template is None or n_random is None:
        ratio = None
    elif n_template == 0:
        ratio = float("inf")  # already there before fine-tuning
    else:
        ratio = n_random / n_template
    return {
        "random_final": final,
        "template_final": template_curve[-1][1],
        "random_steps": n_random,
        "template_steps": n_template,
        "speedup": ratio,
    }


def mean_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Point-wise mean over seeds (all curves share their evaluation steps)."""
    steps = [s for s, _ in curves[0]]
    return [(s, sum(c[i][1] for c in curves) / len(curves)) for i, s in enumerate(steps)]


def sentence(target: str, row: dict[str, Any], init: str, plan: Plan, learn_steps: int) -> str:
    """The plain-words result for one target (from the mean curves)."""
    head = (
        f"- **{target}**: random init ends at {row['random_final']:.2f} % after {plan.finetune_steps} steps "
        f"(first reached at step {row['random_steps']}); "
    )
    if row["template_steps"] is None:
        return head + (
            f"the `{init}` init never reaches it within {plan.finetune_steps} steps (it ends at "
            f"{row['template_final']:.2f} %): **no speed-up, the template does not help here**."
        )
    if row["speedup"] == float("inf"):
        return head + f"the `{init}` init is already there before fine-tuning (step 0)."
    ratio = row["speedup"]
    if ratio > 1:
        how = f"**{ratio:.2f}x fewer** fine-tuning steps"
    elif ratio == 1:
        how = "**the same number of** fine-tuning steps (1.00x)"
    else:
        how = f"**more** fine-tuning steps ({ratio:.2f}x: the template is slower here)"
    text = f"the `{init}` init reaches it at step {row['template_steps']}: {how}"
    if init == "tucker_learned" and learn_steps:
        incl = row["random_steps"] / (row["template_steps"] + learn_steps)
        text += f" ({incl:.2f}x counting the {learn_steps} scaler-learning steps as steps too)"
    if row["speedup"] <= 1:
        text += "; the template does not help here"
    return head + text + "."


def _ratio(value: float | None) -> str:
    if value is None:
        return "none"
    return "at step 0" if value == float("inf") else f"{value:.2f}x"


def summarize(exp: Experiment, curves: dict[str, dict[str, list]]) -> tuple[list, list[str], dict[str, dict]]:
    """Speed-ups per seed (and of the mean curves when there are several seeds), one sentence per
    target, and the mean curves."""
    rows, sentences, means = [], [], {}
    for target in exp.targets:
        by_init = curves[target.name]
        for n, seed in enumerate(exp.plan.seeds):
            rows.append(
                {"target": target.name, "seed": seed, **speedup_row(by_init["random"][n], by_init[exp.init][n])}
            )
        means[target.name] = {i: mean_curve(by_init[i]) for i in exp.inits}
        row = {"target": target.name, "seed": "mean curve", **speedup_row(*means[target.name].values())}
        if len(exp.plan.seeds) > 1:
            rows.append(row)
        sentences.append(sentence(target.name, row, exp.init, exp.plan, exp.learn_steps))
        means[target.name]["_target"] = row["random_final"]
    return rows, sentences, means


def curve_rows(exp: Experiment, curves: dict[str, dict[str, list]]) -> list[dict[str, Any]]:
    """Every evaluation of every run, for ``curves.csv``."""
    return [
        {"target": t.name, "init": i, "seed": seed, "step": s, "top1": v}
        for t in exp.targets
        for i in exp.inits
        for seed, curve in zip(exp.plan.seeds, curves[t.name][i], strict=True)
        for s, v in curve
    ]


def plot(context: Context, exp: Experiment, means: dict[str, dict]) -> None:
    """Mean curves per target, random init's final accuracy dashed."""
    several = len(exp.plan.seeds) > 1
    for target, by_init in means.items():
        plot_accuracy_vs_steps(
            {f"random init{' (mean)' if several else ''}": by_init["random"], exp.init: by_init[exp.init]},
            context.out / f"accuracy_vs_steps_{target}.png",
            provenance=context.command,
            target=by_init["_target"],
            title=f"{target}: top-1 during fine-tuning ({len(exp.plan.seeds)} seed(s); dashed: random init's final)",
        )


def _setting_text(exp: Experiment, compute_s: float, elapsed: float) -> str:
    """The settings paragraph of the report."""
    plan, preset, template = exp.plan, exp.preset, exp.template
    learned = {
        "tucker_learned": f" (depth/width scalers learned for {plan.learn_steps} Adam steps x batch "
        f"{plan.learn_batch} on labelled training images before fine-tuning; not counted in the fine-tuning steps)",
        "tucker": " (depth interpolate, width slice; nothing learned)",
        "lossless": " (the dense model's lossless template, factorize(ranks='full'), with "
        "pipeline.lossless_rules: at or below its size weight selection's model; nothing learned)",
    }[exp.init]
    decay = "" if plan.layer_decay is None else f", layer-wise lr decay {plan.layer_decay:g} (timm's)"
    return (
        f"Setting `{exp.mode}`: ViT targets {[t.name for t in exp.targets]} on {preset.data}; fine-tuning "
        f"{plan.finetune_steps} steps x batch {plan.finetune_batch}, AdamW lr {plan.finetune_lr:g}, 10 % warm-up + "
        "cosine, label smoothing "
        f"0.1{decay}, the same for both inits; top-1 on {plan.test_subset or 'all 10,000'} fixed test images every "
        f"{plan.eval_every} steps and at step 0; seeds {list(plan.seeds)}. Source: {template.describe()}, MAE "
        f"{preset.steps} steps x batch {preset.batch_size} (cache `{template.key()}`). Template init: `{exp.init}`"
        + learned
        + f". Compute: {fmt_duration(compute_s)} initializing and fine-tuning (with evaluations); this "
        f"invocation {fmt_duration(elapsed)} (finished runs are reused)."
    )


def report(context: Context, exp: Experiment, rows: list, sentences: list[str], compute_s: float, elapsed: float):
    """``convergence.md``."""
    plan = exp.plan
    per_seed = [
        [
            r["target"],
            r["seed"],
            f"{r['random_final']:.2f}",
            f"{r['template_final']:.2f}",
            r["random_steps"],
            "never" if r["template_steps"] is None else r["template_steps"],
            _ratio(r["speedup"]),
        ]
        for r in rows
    ]
    header = [
        *report_header("Convergence: template init vs random init", context.command, exp.mode, elapsed / 60),
        "Question: how many times fewer fine-tuning steps does the Tucker-template init need to reach the "
        "final accuracy of random init?",
        "",
        _setting_text(exp, compute_s, elapsed),
        "",
        "Speed-up = steps random init needs to first reach its own final accuracy / steps the template init "
        f"needs to reach that accuracy, both read at evaluation points (resolution {plan.eval_every} steps, so "
        f"at most {plan.finetune_steps // plan.eval_every}x can be seen). `never`: the template init does not "
        "reach it within the budget (no speed-up).",
    ]
    columns = ["target", "seed", "random final", "template final", "random steps", "template steps", "speed-up"]
    table = md_table(columns, per_seed, "llrrrrr")
    title = "Results" + (" (mean curves over seeds)" if len(plan.seeds) > 1 else "")
    pngs = ", ".join(f"`accuracy_vs_steps_{t.name}.png`" for t in exp.targets)
    footer = f"Files: `speedup.csv`, `curves.csv` (every evaluation), {pngs}."
    write_report(context.out / "convergence.md", header, [(title, [*sentences, "", *table])], footer)


# -- main -------------------------------------------------------------------------------------------------
def experiment(context: Context) -> int:
    """Plan, run, summarize, report (see the module docstring)."""
    exp = make_plan(context)
    progress = announce(exp, context)
    curves, compute_s = run(exp, context, progress)
    rows, sentences, means = summarize(exp, curves)
    write_table(curve_rows(exp, curves), context.out / "curves", context.command)
    write_table(rows, context.out / "speedup", context.command)
    plot(context, exp, means)
    report(context, exp, rows, sentences, compute_s, progress.elapsed)
    print("\n".join(sentences))
    log(f"done in {fmt_duration(progress.elapsed)}; results in {context.out}")
    return 0


main = entry_point(NAME, __doc__, PLANS, experiment, extra=options)


if __name__ == "__main__":
    sys.exit(main())
