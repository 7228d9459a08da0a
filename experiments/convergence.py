"""How many times fewer fine-tuning steps does a Tucker-template init need to reach the final
accuracy of a randomly initialized twin?

For a few ViT target sizes, the target is fine-tuned twice with the same budget (steps, batch,
lr, schedule, data order): once from random init (timm's default) and once from the Tucker
template (SWEET: MAE, width-wise stochastic scaling ``--tucker-scaling``, default ``off`` as in
``init_methods.py``, whose cached template it reuses). By default the template init
learns the target's scalers first (``tucker_learned``, a small labelled budget that is reported
separately); ``--template-init tucker`` uses the depth / width rules only. Top-1 on fixed test
images is measured before fine-tuning (step 0) and every ``eval_every`` steps.

Speed-up = (first evaluated step at which random init reaches its own final accuracy) /
(first evaluated step at which the template init reaches that accuracy). It is ``None`` when the
template init never reaches it within the budget: then the template gives no speed-up. Steps
are only known at evaluation points, so the ratio is coarse (its resolution is ``eval_every``).

The template is the one ``experiments/init_methods.py`` uses (same settings -> same entry in
``results/cache/``), pre-trained here only when it is not cached yet.

Run (from the repository root):

    .venv/bin/python experiments/convergence.py --quick    # ~7 min on 2 busy CPU cores: 2 sizes, 1 seed
    .venv/bin/python experiments/convergence.py --medium   # ~25 min: 1000-step template, 3 seeds
    .venv/bin/python experiments/convergence.py            # full: 3 sizes, 3 seeds (hours; estimate printed)
    .venv/bin/python experiments/convergence.py --smoke    # seconds; for the tests only

Outputs in ``results/convergence/<quick|medium|full|smoke>/``: ``convergence.md`` (command line,
settings, speed-ups in plain words), ``speedup.csv`` / ``.md``, ``curves.csv`` / ``.md`` (every
evaluation), ``accuracy_vs_steps_<size>.png`` (mean curves, the target accuracy dashed).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the library and experiments/ importable
    sys.path.insert(0, str(ROOT))

from analysis import plot_accuracy_vs_steps, steps_to_reach, write_table  # noqa: E402
from experiments._common import (  # noqa: E402
    CACHE_DIR,
    RESULTS_DIR,
    SOURCE_PRESETS,
    SourceSpec,
    base_parser,
    cached_run,
    ensure_source,
    estimate_seconds,
    finetune_classifier,
    fixed_test_loader,
    fmt_duration,
    log,
    parse_seeds,
    provenance,
    resolve_device,
    resolve_mode,
    seed_everything,
    setup_torch,
)
from tucker_init.initialize import LearnConfig  # noqa: E402
from tucker_init.initializers import get_initializer  # noqa: E402
from tucker_init.pipeline import ModelSpec, make_loaders  # noqa: E402
from tucker_init.train import evaluate  # noqa: E402

TEMPLATE_INITS = ("tucker_learned", "tucker")


@dataclass(frozen=True)
class Plan:
    """Targets and budgets of one mode (the template: :data:`SOURCE_PRESETS`)."""

    targets: tuple[tuple[int, int], ...]  # ViT (depth, width)
    learn_steps: int
    learn_batch: int
    steps: int
    batch: int
    lr: float
    eval_every: int
    test_subset: int | None
    train_subset: int | None = None


PLANS: dict[str, Plan] = {
    "smoke": Plan(((1, 64),), 2, 16, 4, 16, 1e-3, 2, 64, 256),
    # Same fine-tuning as init_methods --quick, so the final accuracies can be compared.
    "quick": Plan(((3, 64), (6, 128)), 50, 32, 150, 32, 1e-3, 15, 2000),
    # Same sources as init_methods --medium; twice its fine-tuning, to see where random init ends up.
    "medium": Plan(((3, 64), (6, 128)), 50, 32, 400, 32, 1e-3, 25, 2000),
    "full": Plan(((3, 64), (6, 128), (12, 192)), 150, 64, 1000, 64, 1e-3, 50, None),
}


def _parse(argv: list[str] | None):
    parser = base_parser(__doc__)
    parser.add_argument(
        "--template-init",
        choices=TEMPLATE_INITS,
        default="tucker_learned",
        help="tucker_learned (scalers learned first, default) or tucker (rules only)",
    )
    parser.add_argument("--pretrain-steps", type=int, default=None, help="MAE steps of the template")
    parser.add_argument("--learn-steps", type=int, default=None, help="scaler-learning steps (tucker_learned)")
    parser.add_argument("--finetune-steps", type=int, default=None, help="fine-tuning steps")
    parser.add_argument("--eval-every", type=int, default=None, help="steps between evaluations")
    return parser.parse_args(argv)


def one_curve(
    target: ModelSpec,
    init: str,
    seed: int,
    template: Path,
    plan: Plan,
    data: str,
    test_loader: Any,
    device: str,
) -> dict[str, Any]:
    """Initialize (``"random"`` or a template init), evaluate at step 0, fine-tune with evaluations."""
    seed_everything(seed)
    model = target.build()
    start = time.perf_counter()
    if init == "random":
        get_initializer("random")(model, None, seed=seed)
    else:
        options: dict[str, Any] = {"seed": seed}
        if init == "tucker_learned":
            loader, _ = make_loaders(data, plan.learn_batch, seed=seed, train_subset=plan.train_subset)
            options["learn"] = LearnConfig(
                data=loader, steps=plan.learn_steps, progress=False, device=str(resolve_device(device))
            )
        get_initializer(init)(model, template, **options)
    init_s = time.perf_counter() - start
    # Step 0: the init itself, before any fine-tuning (train() evaluates only after steps).
    at_start = evaluate(model.to(resolve_device(device)), test_loader)
    result = finetune_classifier(
        model,
        data,
        test_loader,
        steps=plan.steps,
        batch_size=plan.batch,
        lr=plan.lr,
        seed=seed,
        device=device,
        eval_every=plan.eval_every,
        train_subset=plan.train_subset,
    )
    curve = [(0, float(at_start["top1"])), *result.curve("top1")]
    return {"curve": curve, "init_s": init_s, "finetune_s": float(result.elapsed_s)}


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
        f"- **{target}**: random init ends at {row['random_final']:.2f} % after {plan.steps} steps "
        f"(first reached at step {row['random_steps']}); "
    )
    if row["template_steps"] is None:
        return head + (
            f"the `{init}` init never reaches it within {plan.steps} steps (it ends at {row['template_final']:.2f} %): "
            "**no speed-up, the template does not help here**."
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


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    mode = resolve_mode(args)
    setup_torch(args.threads)
    command = provenance(__file__, argv)
    seeds = parse_seeds(args.seeds, mode)
    preset = SOURCE_PRESETS[mode]
    preset = dataclasses.replace(preset, data=args.data or preset.data, steps=args.pretrain_steps or preset.steps)
    plan = PLANS[mode]
    plan = dataclasses.replace(
        plan,
        learn_steps=args.learn_steps or plan.learn_steps,
        steps=args.finetune_steps or plan.steps,
        eval_every=args.eval_every or plan.eval_every,
    )
    init = args.template_init
    learn_steps = plan.learn_steps if init == "tucker_learned" else 0
    data = preset.data
    out = Path(args.out) if args.out else RESULTS_DIR / "convergence" / mode
    cache = Path(args.cache) if args.cache else CACHE_DIR
    log(f"convergence ({mode}): {command}")
    log(f"template init {init}; seeds {seeds}; data {data}; output {out}; cache {cache}")

    # The same template as init_methods (same fields -> same cache key).
    source_model = ModelSpec("vit", *preset.vit_source)
    template_spec = SourceSpec(
        "tucker",
        source_model,
        steps=preset.steps,
        batch_size=preset.batch_size,
        lr=preset.lr,
        data=data,
        seed=preset.seed,
        ranks=preset.vit_tucker_ranks,
        scaling=args.tucker_scaling,
        train_subset=preset.train_subset,
    )
    targets = [ModelSpec("vit", d, w) for d, w in plan.targets]
    inits = ["random", init]
    runs_dir = out / "runs"
    todo = [
        (t, i, s)
        for t in targets
        for i in inits
        for s in seeds
        if not (runs_dir / t.name / i / f"seed{s}.json").is_file()
    ]
    if mode != "smoke":
        jobs = []
        if not (cache / template_spec.key() / "source.json").is_file():
            jobs.append((source_model, "mae", preset.steps, preset.batch_size))
        n_test = plan.test_subset or 10_000
        for t, i, _ in todo:
            jobs.append((t, "ft", plan.steps, plan.batch))
            jobs.append((t, "eval", n_test * (plan.steps // plan.eval_every + 1), 0))
            if i == "tucker_learned":
                jobs.append((t, "ft", plan.learn_steps, plan.learn_batch))
        log("estimating the run time (one timed step per model size) ...")
        log(f"estimate: ~{fmt_duration(estimate_seconds(jobs, args.device))} on this machine ({len(todo)} runs to do)")

    start = time.perf_counter()
    template = ensure_source(template_spec, cache, args.device)
    test_loader = fixed_test_loader(data, plan.test_subset)
    settings_of = {
        "data": data,
        "template": template_spec.key(),
        "learn_steps": plan.learn_steps,
        "learn_batch": plan.learn_batch,
        "steps": plan.steps,
        "batch": plan.batch,
        "lr": plan.lr,
        "eval_every": plan.eval_every,
        "test_subset": plan.test_subset,
        "train_subset": plan.train_subset,
    }
    curve_rows: list[dict[str, Any]] = []
    speed_rows: list[dict[str, Any]] = []
    sentences: list[str] = []
    k, total = 0, len(targets) * len(inits) * len(seeds)
    run_seconds = 0.0
    for target in targets:
        curves: dict[str, list[list[tuple[int, float]]]] = {i: [] for i in inits}
        for i in inits:
            for seed in seeds:
                k += 1
                settings = {**settings_of, "target": dataclasses.asdict(target), "init": i, "seed": seed}
                result = cached_run(
                    runs_dir / target.name / i / f"seed{seed}.json",
                    settings,
                    lambda t=target, i=i, s=seed: one_curve(
                        t, i, s, template.path, plan, data, test_loader, args.device
                    ),
                )
                curve = [(int(s), float(v)) for s, v in result["curve"]]
                run_seconds += result["init_s"] + result["finetune_s"]
                curves[i].append(curve)
                curve_rows += [{"target": target.name, "init": i, "seed": seed, "step": s, "top1": v} for s, v in curve]
                how = " (reused)" if result.get("reused") else f" (fine-tune {result['finetune_s']:.1f} s)"
                log(
                    f"[{k}/{total}] {target.name} {i} seed {seed}: top1 {curve[0][1]:.2f} at step 0 -> "
                    f"{curve[-1][1]:.2f} at step {curve[-1][0]}{how}"
                )
        for n, seed in enumerate(seeds):
            speed_rows.append(
                {"target": target.name, "seed": seed, **speedup_row(curves["random"][n], curves[init][n])}
            )
        mean = {i: mean_curve(curves[i]) for i in inits}
        row = {"target": target.name, "seed": "mean curve", **speedup_row(mean["random"], mean[init])}
        if len(seeds) > 1:
            speed_rows.append(row)
        sentences.append(sentence(target.name, row, init, plan, learn_steps))
        plot_accuracy_vs_steps(
            {f"random init{' (mean)' if len(seeds) > 1 else ''}": mean["random"], f"{init}": mean[init]},
            out / f"accuracy_vs_steps_{target.name}.png",
            provenance=command,
            target=row["random_final"],
            title=f"{target.name}: top-1 during fine-tuning ({len(seeds)} seed(s); dashed: random init's final)",
        )

    elapsed = time.perf_counter() - start
    write_table(curve_rows, out / "curves", command)
    write_table(speed_rows, out / "speedup", command)
    per_seed = [
        f"| {r['target']} | {r['seed']} | {r['random_final']:.2f} | {r['template_final']:.2f} | {r['random_steps']} | "
        f"{'never' if r['template_steps'] is None else r['template_steps']} | {_ratio(r['speedup'])} |"
        for r in speed_rows
    ]
    report = [
        f"Produced by: `{command}`",
        "",
        "# Convergence: template init vs random init",
        "",
        "Question: how many times fewer fine-tuning steps does the Tucker-template init need to reach the "
        "final accuracy of random init?",
        "",
        f"Setting `{mode}`: ViT targets {[t.name for t in targets]} on {data}; fine-tuning {plan.steps} steps x "
        f"batch {plan.batch}, AdamW lr {plan.lr:g}, 10 % warm-up + cosine, label smoothing 0.1, the same for both "
        f"inits; top-1 on {plan.test_subset or 'all 10,000'} fixed test images every {plan.eval_every} steps and "
        f"at step 0; seeds {seeds}. Template: {template_spec.describe()}, MAE {preset.steps} steps x batch "
        f"{preset.batch_size} (cache `{template_spec.key()}`). Template init: `{init}`"
        + (
            f" (depth/width scalers learned for {plan.learn_steps} Adam steps x batch {plan.learn_batch} on "
            "labelled training images before fine-tuning; not counted in the fine-tuning steps)"
            if init == "tucker_learned"
            else " (depth interpolate, width slice; nothing learned)"
        )
        + f". Compute: {fmt_duration(run_seconds)} initializing and fine-tuning (with evaluations); this "
        f"invocation {fmt_duration(elapsed)} (finished runs are reused).",
        "",
        "Speed-up = steps random init needs to first reach its own final accuracy / steps the template init "
        f"needs to reach that accuracy, both read at evaluation points (resolution {plan.eval_every} steps, so "
        f"at most {plan.steps // plan.eval_every}x can be seen). `never`: the template init does not reach it "
        "within the budget (no speed-up).",
        "",
        "## Results" + (" (mean curves over seeds)" if len(seeds) > 1 else ""),
        "",
        *sentences,
        "",
        "| target | seed | random final | template final | random steps | template steps | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|",
        *per_seed,
        "",
        "Files: `speedup.csv`, `curves.csv` (every evaluation), "
        + ", ".join(f"`accuracy_vs_steps_{t.name}.png`" for t in targets)
        + ".",
    ]
    (out / "convergence.md").write_text("\n".join(report) + "\n")
    print("\n".join(sentences))
    log(f"done in {fmt_duration(elapsed)}; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
