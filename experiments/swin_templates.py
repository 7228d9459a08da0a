"""Swin templates: does a Tucker template pre-trained with the masked-input objective on one Swin
initialize Swin models of other depths and widths better than random init and weight selection?
(SWEET leaves open whether Tucker templates serve hierarchical models; issue 13, item 2.)

The source is a Swin of the ``swin`` family (``tucker_init.models.swin_config``: three stages of
``depth`` blocks, widths ``width * (1, 2, 4)``, heads of 32, windows of 4, patch 4 at 32 px). Two
sources are pre-trained per seed with the same masked-input objective (masked 8-px patches set to
0, a light conv decoder on the NHWC -> NCHW feature map: ``masked_model_for``), the same steps,
batch, learning rate and images:

- a **Tucker template** (one shared core, ``ranks``; each stage is a group of its own width);
- a **dense Swin** of the source size, the donor of **weight selection** (Xu et al. 2023: every
  tensor uniformly sub-sampled to the target's shape, the first blocks of each stage).

Each Swin target (shallower, narrower, the source size; in ``full`` also deeper and wider) is
initialized by random init (timm's), weight selection (only targets no larger than the source on
any axis; at the source size it is the dense model itself) and the template (``depth="interpolate"``,
``width="slice"``), then fine-tuned with the same budget. Reported per (target, init): top-1 after
fine-tuning, mean ± std over seeds, and its difference to random init and to weight selection with a
noise margin (one standard error of the difference).

Run (from the repository root):

    python -m experiments.swin_templates --quick            # 3 seeds, ~15-20 min on 2 idle CPU cores
    python -m experiments.swin_templates --quick --publish  # also copy the table and figure into docs/
    python -m experiments.swin_templates                    # full: 6 targets, longer budgets, 3 seeds
    python -m experiments.swin_templates --smoke            # seconds; for the tests only
    python -m experiments.swin_templates --quick --dry-run  # the plan and its measured estimate only

Outputs under ``results/swin_templates/<mode>/``: ``swin_templates.md`` (command, settings, table,
conclusion), ``swin_templates.csv`` (the table), ``runs.csv`` (every fine-tuning run),
``swin_templates.png`` (top-1 by target and init). ``--publish`` copies the table to
``docs/results/swin_templates.csv`` and the figure to ``docs/figures/swin_templates_<mode>.png``.
Sources go to the shared source cache (``--cache``), finished runs to ``runs/`` (keyed by the
settings, not the code: delete ``runs/`` after changing the script).
"""

from __future__ import annotations

import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from analysis import aggregate, plot_accuracy_vs_size, write_table
from experiments.harness.cache import cached_run, settings_of
from experiments.harness.cli import ROOT, Context, entry_point, resolve_setting
from experiments.harness.data import Splits, load_splits
from experiments.harness.estimate import Job, Progress, estimate_seconds, fmt_duration, log
from experiments.harness.measure import count_params, noise_margin, verdict
from experiments.harness.provenance import fmt, md_table, mean_std, report_header, write_report
from experiments.harness.runs import finetune_classifier, init_target
from experiments.harness.sources import MASK_RATIO, Source, SourceSpec, ensure_source, source_job, template_params
from tucker_init.pipeline import ModelSpec, load_model
from tucker_init.training import TrainResult

NAME = "swin_templates"
METHODS = ("random", "weight_selection", "tucker")
LABELS = {"random": "random", "weight_selection": "weight selection", "tucker": "tucker template"}
DOCS = ROOT / "docs"  # --publish copies the table and the figure here
Size = tuple[int, int]  # (blocks per stage, first-stage width)


# -- settings --------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Setting:
    """Everything that decides the numbers of one mode."""

    name: str  # the mode
    data: str = "fashion_mnist"
    img_size: int = 32
    source: Size = (2, 64)
    ranks: tuple[int, int, int] = (24, 64, 64)  # stage 0 (24, 64, 64) at full rank, stages 1, 2 compressed
    targets: tuple[Size, ...]
    pretrain_steps: int
    pretrain_subset: int | None
    pretrain_lr: float = 1.5e-3
    finetune_steps: int
    finetune_lr: float = 1e-3
    train_subset: int | None
    test_subset: int | None
    batch_size: int = 64
    seeds: tuple[int, ...] = (0, 1, 2)

    def spec(self, size: Size) -> ModelSpec:
        """A Swin of the ``swin`` family at ``size`` (patch 4)."""
        return ModelSpec("swin", size[0], size[1], 10, self.img_size, 4)

    def source_spec(self, kind: str, seed: int) -> SourceSpec:
        """The seed's template (``"tucker"``) or dense source (``"dense"``), one masked-input budget."""
        return SourceSpec(
            kind,
            self.spec(self.source),
            steps=self.pretrain_steps,
            batch_size=self.batch_size,
            lr=self.pretrain_lr,
            data=self.data,
            seed=seed,
            ranks=self.ranks if kind == "tucker" else None,
            train_subset=self.pretrain_subset,
        )

    def finetune(self, model: nn.Module, splits: Splits, seed: int, device: str) -> TrainResult:
        """``pipeline.finetune_model`` (small_finetune recipe) with this mode's budget."""
        return finetune_classifier(
            model,
            splits,
            steps=self.finetune_steps,
            batch_size=self.batch_size,
            lr=self.finetune_lr,
            seed=seed,
            device=device,
            image_size=self.img_size,
        )


SETTINGS: dict[str, Setting] = {
    # Seconds: the plumbing, a target that weight selection cannot make (deeper) included.
    "smoke": Setting(
        name="smoke",
        data="digits",
        source=(1, 32),
        ranks=(12, 32, 32),
        targets=((1, 32), (2, 32)),
        pretrain_steps=2,
        pretrain_subset=128,
        finetune_steps=2,
        train_subset=128,
        test_subset=64,
        batch_size=16,
        seeds=(0,),
    ),
    # ~15-20 min on 2 idle CPU cores (see the README): shallower, narrower, both, the source size.
    "quick": Setting(
        name="quick",
        targets=((1, 32), (1, 64), (2, 32), (2, 64)),
        pretrain_steps=400,
        pretrain_subset=20000,
        finetune_steps=250,
        train_subset=10000,
        test_subset=2000,
    ),
    # Hours on a CPU: longer budgets, all the data, a deeper and a wider target too.
    "full": Setting(
        name="full",
        targets=((1, 32), (1, 64), (2, 32), (2, 64), (3, 64), (2, 96)),
        pretrain_steps=2000,
        pretrain_subset=None,
        finetune_steps=1000,
        train_subset=None,
        test_subset=None,
    ),
}


# -- plan -------------------------------------------------------------------------------------------------
def selectable(setting: Setting, size: Size) -> bool:
    """Weight selection only shrinks: the target may not be deeper or wider than the source."""
    return size[0] <= setting.source[0] and size[1] <= setting.source[1]


def methods_of(setting: Setting, size: Size) -> list[str]:
    """The inits a target gets: random, weight selection where it applies, the template."""
    return [m for m in METHODS if m != "weight_selection" or selectable(setting, size)]


def sources(setting: Setting, seed: int) -> dict[str, SourceSpec]:
    """The seed's template and dense source, by kind."""
    return {kind: setting.source_spec(kind, seed) for kind in ("tucker", "dense")}


def target_jobs(setting: Setting, size: Size) -> list[Job]:
    """Fine-tuning one target and its final evaluation."""
    spec = setting.spec(size)
    return [
        Job(spec, "ft", setting.finetune_steps, setting.batch_size),
        Job(spec, "eval", setting.test_subset or 10_000),
    ]


def announce(setting: Setting, context: Context) -> Progress:
    """Print the plan and its measured estimate; the progress of the run."""
    jobs = [source_job(src) for seed in setting.seeds for src in sources(setting, seed).values()]
    for size in setting.targets:
        jobs += [j for _ in setting.seeds for _ in methods_of(setting, size) for j in target_jobs(setting, size)]
    total = estimate_seconds(jobs, context.device)
    runs = sum(len(methods_of(setting, s)) for s in setting.targets) * len(setting.seeds)
    log(
        f"{NAME} ({setting.name}): source {setting.spec(setting.source).name}, ranks {setting.ranks}, "
        f"{2 * len(setting.seeds)} pre-trainings of {setting.pretrain_steps} steps, {runs} fine-tunings of "
        f"{setting.finetune_steps} steps (targets {[setting.spec(s).name for s in setting.targets]}, seeds "
        f"{list(setting.seeds)}); estimated ~{fmt_duration(total)} on this machine (cached stages are skipped). "
        f"Output: {context.out}"
    )
    return Progress(total)


# -- run ------------------------------------------------------------------------------------------------------
def block_norm_ratio(model: nn.Module, reference: nn.Module) -> float:
    """Frobenius norm of the block matrices (qkv, proj, fc1, fc2 of every stage) of ``model`` over
    those of ``reference`` (timm's init). The harness's ``block_norm_ratio`` reads a ViT's
    ``blocks.*`` only; Swin's blocks are ``layers.i.blocks.*``."""

    def total(module: nn.Module) -> float:
        return sum(
            float(v.detach().double().pow(2).sum())
            for k, v in module.named_parameters()
            if ".blocks." in k and k.endswith(".weight") and v.ndim == 2
        )

    return math.sqrt(total(model) / total(reference))


def initialized(spec: ModelSpec, method: str, made: dict[str, Source], seed: int) -> nn.Module:
    """A target of ``spec`` built under ``seed`` and initialized by ``method``."""
    if method == "random":
        return init_target(spec, "random", None, seed)[0]
    if method == "weight_selection":
        return init_target(spec, "weight_selection", load_model(made["dense"].path)[0], seed)[0]
    return init_target(spec, "tucker", made["tucker"].path, seed, seed_method=True)[0]


def run_target(
    setting: Setting, splits: Splits, size: Size, method: str, made: dict[str, Source], seed: int, device: str
) -> dict[str, Any]:
    """Initialize one target and fine-tune it."""
    spec = setting.spec(size)
    model = initialized(spec, method, made, seed)
    ratio = block_norm_ratio(model, init_target(spec, "random", None, seed)[0])
    result = setting.finetune(model, splits, seed, device)
    assert result.final_eval is not None
    return {"norm_ratio": ratio, "top1": result.final_eval["top1"], "seconds": result.elapsed_s}


def pretrain_sources(setting: Setting, seed: int, context: Context, progress: Progress) -> dict[str, Source]:
    """The seed's template and dense Swin, from the cache or pre-trained now."""
    made = {}
    for kind, src in sources(setting, seed).items():
        progress.stage(f"seed {seed}: masked-input pre-training of the {src.describe()} ({src.steps} steps)")
        made[kind] = ensure_source(src, context.cache, context.device)
        log(f"    masked-patch loss {made[kind].meta['first_loss']} -> {made[kind].meta['final_loss']}")
        if not made[kind].reused:
            progress.advance(estimate_seconds([source_job(src)], context.device))
    return made


def run(setting: Setting, context: Context, progress: Progress) -> tuple[list[dict[str, Any]], dict, int]:
    """Every (seed, target, init) run; the sources of every seed; the number of test images."""
    splits = load_splits(setting.data, train_subset=setting.train_subset, test_subset=setting.test_subset)
    runs: list[dict[str, Any]] = []
    made: dict[int, dict[str, Source]] = {}
    for seed in setting.seeds:
        made[seed] = pretrain_sources(setting, seed, context, progress)
        for size in setting.targets:
            spec = setting.spec(size)
            for method in methods_of(setting, size):
                progress.stage(f"seed {seed}: {spec.name}, {LABELS[method]}: fine-tune {setting.finetune_steps} steps")
                keys = {k: s.spec.key() for k, s in made[seed].items()}
                result = cached_run(
                    context.out / "runs" / f"seed{seed}" / f"{spec.name}_{method}.json",
                    {**settings_of(setting, ("seeds", "targets")), "target": spec.name, "method": method, **keys},
                    lambda z=size, m=method, s=seed: run_target(setting, splits, z, m, made[s], s, context.device),
                )
                if not result.get("reused"):
                    progress.advance(estimate_seconds(target_jobs(setting, size), context.device))
                log(f"    block-weight norm / timm init {result['norm_ratio']:.2f}, top1 {result['top1']:.2f}")
                runs.append({"seed": seed, "target": spec.name, "method": method, **result})
    return runs, made, len(splits.test)


# -- summarize ---------------------------------------------------------------------------------------------
def table_rows(setting: Setting, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (target, init): mean ± std over seeds and the differences to the baselines."""
    agg = {(r["target"], r["method"]): r for r in aggregate(runs, ["target", "method"], "top1")}
    norms = {
        (r["target"], r["method"]): r["norm_ratio_mean"] for r in aggregate(runs, ["target", "method"], "norm_ratio")
    }
    rows = []
    for size in setting.targets:
        spec = setting.spec(size)
        base, selected = agg[(spec.name, "random")], agg.get((spec.name, "weight_selection"))
        for method in methods_of(setting, size):
            a = agg[(spec.name, method)]
            rows.append(
                {
                    "target": spec.name,
                    "depth": size[0],
                    "width": size[1],
                    "params": count_params(spec.build()),
                    "method": LABELS[method],
                    "norm_ratio": norms[(spec.name, method)],
                    "n": a["n"],
                    "top1_mean": a["top1_mean"],
                    "top1_std": a["top1_std"],
                    "delta_vs_random": None if method == "random" else a["top1_mean"] - base["top1_mean"],
                    "delta_vs_selection": a["top1_mean"] - selected["top1_mean"]
                    if method == "tucker" and selected
                    else None,
                }
            )
    return rows


def compare(row: dict[str, Any], other: dict[str, Any], n_test: int) -> tuple[float, float, str]:
    """(difference in points, noise margin, verdict) of ``row`` against ``other``."""
    delta, margin = row["top1_mean"] - other["top1_mean"], noise_margin(row, other, n_test)
    return delta, margin, verdict(delta, margin)


def target_line(rows: list[dict[str, Any]], n_test: int) -> tuple[str, list[str]]:
    """What one target's numbers say; the baselines the template does not beat there."""
    by = {r["method"]: r for r in rows}
    tucker, base, selected = by["tucker template"], by["random"], by.get("weight selection")
    text = f"- **{tucker['target']}**: template {mean_std(tucker, 'top1')}"
    not_beaten = []
    for label, other in (("random init", base), ("weight selection", selected)):
        if other is None:
            continue
        delta, margin, word = compare(tucker, other, n_test)
        text += f"; vs {label} {mean_std(other, 'top1')}: {delta:+.2f} ± {margin:.2f}, {word}"
        if word != "better":
            not_beaten.append(label)
    if selected is None:
        text += " (weight selection cannot make a target deeper or wider than its source)"
    return text + ".", not_beaten


def scale_line(table: list[dict[str, Any]]) -> str:
    """The weight scale each init hands over (block-matrix norm over timm's init, mean over targets)."""

    def mean(label: str) -> float:
        ratios = [r["norm_ratio"] for r in table if r["method"] == label]
        return sum(ratios) / len(ratios)

    tucker = mean(LABELS["tucker"])
    text = f"- **Weight scale.** Block-matrix norm over timm's init: template {tucker:.2f}"
    if any(r["method"] == LABELS["weight_selection"] for r in table):
        text += f", weight selection {mean(LABELS['weight_selection']):.2f}"
    text += " (mean over targets)."
    if tucker < 0.7:
        text += (
            " The template hands over much smaller weights than timm's init: its random start, with one core shared"
            " by the three stages, has timm's RMS in stage 0 only (1/2 and 1/4 of it in stages 1 and 2, which are"
            " 2x and 4x wider), and the pre-training did not restore it; a plausible reason where it loses."
        )
    return text


def conclusions(setting: Setting, table: list[dict[str, Any]], n_test: int, params: dict[str, int]) -> list[str]:
    """Plain-language conclusions, including where the template does not help."""
    lines, no_help = [], []
    for size in setting.targets:
        name = setting.spec(size).name
        line, not_beaten = target_line([r for r in table if r["target"] == name], n_test)
        lines.append(line)
        no_help += [f"{name} (not better than {' or '.join(not_beaten)})"] if not_beaten else []
    lines.append(
        "- **Where the template does not help:** "
        + ("; ".join(no_help) + "." if no_help else "it beats every baseline at every target by more than the noise.")
    )
    lines.append(
        f"- The template holds {params['template']:,} core + {params['scalers']:,} scaler parameters, the dense "
        f"source's block matrices {params['dense_blocks']:,}: every stage past the first is rank-limited to "
        f"{setting.ranks[1]} x {setting.ranks[2]}, so at the source size it hands over less than the dense model."
    )
    lines.append(scale_line(table))
    if len(setting.seeds) < 2:
        lines.append("- One seed: the margin is only the test-set sampling error, not seed-to-seed variation.")
    return lines


# -- report ------------------------------------------------------------------------------------------------
def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """The table in Markdown."""
    header = "target | params | init | norm_ratio | n | top-1 | vs random | vs weight selection"
    cells = [
        [
            r["target"],
            f"{r['params']:,}",
            r["method"],
            f"{r['norm_ratio']:.2f}",
            r["n"],
            mean_std(r, "top1"),
            fmt(r["delta_vs_random"], "+.2f"),
            fmt(r["delta_vs_selection"], "+.2f"),
        ]
        for r in rows
    ]
    return md_table(header, cells, "lrlrrrrr")


def report(context: Context, setting: Setting, table: list, lines: list[str], elapsed: float) -> Path:
    """The Markdown report: command, how, table, conclusion."""
    src = setting.spec(setting.source)
    depth, width = setting.source
    how = f"""**How.** Source {src.name} (`create_model("swin", depth={depth}, width={width})`: 3 stages
of {depth} blocks, widths {[width * 2**i for i in range(3)]}, heads of 32, windows of 4, patch 4 at
{setting.img_size} px). Per seed, a Tucker template (ranks {setting.ranks}, one shared core) and a dense Swin
are pre-trained with the same masked-input objective (mask ratio {MASK_RATIO}, 8-px patches set to 0, light
conv decoder) for {setting.pretrain_steps} steps of batch {setting.batch_size} (lr {setting.pretrain_lr}) on
{setting.pretrain_subset or "all"} `{setting.data}` training images. Targets: random init (timm), weight
selection from the dense Swin (targets no larger than the source), the template (`depth="interpolate"`,
`width="slice"`); each fine-tuned {setting.finetune_steps} steps (AdamW lr {setting.finetune_lr}, label
smoothing 0.1) on {setting.train_subset or "all"} training images, scored on {setting.test_subset or "all"}
test images; seeds {list(setting.seeds)}. `vs ...` = difference of mean top-1 in points; the conclusion adds
a noise margin (one standard error of the difference, from the seeds and the test-set size). `norm_ratio` =
Frobenius norm of the initialized block matrices over timm's init."""
    question = (
        "**Question.** Does a Tucker template pre-trained on one Swin initialize Swin models of other depths and "
        "widths better than random init and weight selection?"
    )
    header = [*report_header("Swin templates", context.command, setting.name, elapsed / 60), question, "", how]
    sections = [("Top-1 % after fine-tuning (mean ± std over seeds)", markdown_table(table)), ("Conclusion", lines)]
    footer = "Figure: `swin_templates.png` (top-1 by target and init); every run: `runs.csv`."
    return write_report(context.out / f"{NAME}.md", header, sections, footer)


def publish(context: Context) -> list[Path]:
    """Copy the table and the figure into docs/ (``--publish``)."""
    copies = [
        (context.out / f"{NAME}.csv", DOCS / "results" / f"{NAME}.csv"),
        (context.out / f"{NAME}.png", DOCS / "figures" / f"{NAME}_{context.mode}.png"),
    ]
    for source, target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    return [target for _, target in copies]


def write_outputs(context: Context, setting: Setting, runs: list, table: list, lines: list, elapsed: float) -> Path:
    """Tables, figure, report (and the docs/ copies with ``--publish``)."""
    write_table(runs, context.out / "runs", context.command)
    write_table(table, context.out / NAME, context.command)
    figure = [{"size": r["target"], **r} for r in table]
    title = f"Swin targets from a {setting.spec(setting.source).name} template, after fine-tuning"
    plot_accuracy_vs_size(figure, context.out / f"{NAME}.png", context.command, title=title)
    path = report(context, setting, table, lines, elapsed)
    if context.args.publish:
        log(f"published {[str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in publish(context)]}")
    return path


# -- main -------------------------------------------------------------------------------------------------
def options(parser: Any) -> None:
    """The script's own options."""
    parser.add_argument("--publish", action="store_true", help="copy the table and figure into docs/")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its measured estimate only")


def source_params(setting: Setting, made: dict[str, Source]) -> dict[str, int]:
    """Template, scaler and dense block-matrix parameter counts."""
    dense, _ = load_model(made["dense"].path)
    blocks = sum(
        v.numel() for k, v in dense.named_parameters() if ".blocks." in k and k.endswith(".weight") and v.ndim == 2
    )
    return {**template_params(made["tucker"].path), "dense_blocks": int(blocks)}


def experiment(context: Context) -> int:
    """Plan, run, summarize, report (see the module docstring)."""
    setting = resolve_setting(SETTINGS, context)
    progress = announce(setting, context)
    if context.args.dry_run:
        return 0
    runs, made, n_test = run(setting, context, progress)
    table = table_rows(setting, runs)
    lines = conclusions(setting, table, n_test, source_params(setting, made[setting.seeds[0]]))
    progress.stage("writing tables, figure and report")
    path = write_outputs(context, setting, runs, table, lines, progress.elapsed)
    print("\n" + "\n".join(markdown_table(table)) + "\n\n" + "\n".join(lines))
    log(f"{NAME} done in {fmt_duration(progress.elapsed)}; report: {path}")
    return 0


main = entry_point(NAME, __doc__, SETTINGS, experiment, extra=options)


if __name__ == "__main__":
    sys.exit(main())
