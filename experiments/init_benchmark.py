"""Equal-cost benchmark of initializers (issue 12.5): which start gives the best fine-tuned model at
each target size when every pre-trained source costs the same?

Targets: ViTs L3 w64, L3 w128, L3 w192, L6 w128, L12 w192 and two ResNet-D sizes. Every source is
pre-trained once (seed 0) on the unlabelled training images at one size per family (ViT: L6 w128 in
the quick preset, L12 w192 in the full one; ResNet-D L2 w32, at 32 px at least), and that one
source serves every target it can reach; methods:

- ``random``: timm's init of the target (no pre-training).
- ``weight_selection`` / ``linear_expansion``: from a dense model pre-trained with MAE (cost C).
- ``kronecker`` / ``tucker_mae``: a Kronecker / Tucker template pre-trained with MAE (cost C).
- ``tucker_mae_select`` / ``tucker_mae_first`` / ``tucker_mae_learned``: the same Tucker MAE
  template initialized with depth ``select`` / ``first`` instead of ``interpolate``, or with its
  scalers learned for 0.16 epoch of the target's labelled subset (``tucker_learned``).
- ``tucker_subnet``: the Tucker template with real sub-network scaling (:mod:`tucker_init.objectives.subnet`:
  each step also trains half-depth and / or half-width models built from it, sandwich rule), MAE, C;
  targets initialized with depth ``select``, the rule its sub-networks are built with.
- ``tucker_prefix``: the Tucker template with SWEET's width-wise stochastic scaling (prefix masks on
  the width scalers each step), MAE, C.
- ``tucker_prefix_first``: the same template initialized with depth ``first``.
- ``tucker_distill``: a dense MAE teacher (C/2), then a Tucker template (random start) trained
  to match its token features (C/2), see :mod:`tucker_init.objectives.distill`.
- ``tucker_refine``: compress, then refine: the same C/2 teacher, its HOSVD at the template's
  ranks, refined by feature distillation from it (C/2).
- ``tucker_compress``: the dense MAE model (C) held by its lossless template
  (:func:`tucker_init.pipeline.lossless_template`: ``factorize(ranks="full")``, a core per weight
  group), targets initialized with depth ``first``: the template a user with a dense model gets for
  free. At the source's width it is weight selection's model exactly; narrower, it keeps the first
  channels (weight selection: evenly spaced ones); wider, it appends fresh channels (weight
  selection cannot).
- ``tucker_compress_wide``: the same, but a target wider than the source gets width
  ``interpolate`` (its extra channels blend trained neighbours) instead of ``slice`` (random rows);
  at or below the source's width it is ``tucker_compress`` exactly.
- ``tucker_compress_zero``: weight selection's rules below the source's width (as
  ``tucker_compress_select``); wider, width ``zero_fanout``: the source's weights in place, the new
  channels written by independent noise and read by nothing yet (zero input columns).
- ``tucker_compress_select``: weight selection's two rules on the same lossless template: depth
  ``first`` and width ``select`` (evenly spaced channels), so below the source's width it is weight
  selection's model (exactly at integer width ratios); wider, width ``interpolate`` as
  ``tucker_compress_wide``.
- ``tucker_compress_subnet``: weight selection's start, then its narrow models trained: a dense MAE
  model (3C/4), its lossless (full-rank) HOSVD, refined with MAE and real sub-network scaling
  (depth ``first``, weight selection's rule, sandwich) for C/4; targets initialized with depth
  ``first``. Untrained (0 refine steps) it builds exactly weight selection's model at the source
  width and that model's first channels below it. ViTs only (its sub-networks are trained through
  one shared core, and a ResNet's weight groups have different sizes: no one core holds it losslessly).
- ``tucker_compress_identity``: ``tucker_compress_zero`` with depth ``identity``: at or below the
  source's depth ``first``; deeper, the source's blocks in order with new blocks between them that
  start as the identity (residual writers zero, the rest drawn at the trained blocks' statistics).
- ``kronecker_zero``: the Kronecker template's own source, wider targets with width ``zero_fanout``.
- ``kronecker_identity``: the same with depth ``identity`` (new blocks start as the identity).
- ``tucker_mae_zero``: the Tucker MAE template (``tucker_mae``'s source), width ``zero_fanout``.
- ``direct``: each target pre-trained itself with MAE for the dense source's steps (each target
  pays its own; serving all five ViTs pays the sum).

Cost is counted in training FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on one forward +
backward step of each source job (matrix products and convolutions; a factorized step includes
its reconstruction, a distillation step the teacher's forward), times its steps. Jobs are given
the steps that make their FLOPs equal to C (the dense MAE source's). Templates initialize
targets with the library's rules (depth ``interpolate``, width ``slice``), except where their
sub-networks were trained under another depth rule or a variant asks for another (:data:`INIT_OPTIONS`).
Depth ``first`` cannot build a target deeper than the template (L12 from L6); there those methods use
``interpolate``, as the README advises (:func:`init_options`).

Every target is fine-tuned with the same budget (the ``small_finetune`` recipe, a labelled subset
of the training images, seeds 0-2: the target's own init, the subset and the data order) and
scored on the same test images. Random init's top-1 at 3/4 of the steps and at the end shows
whether the budget is long enough (the issue asks for a rise of less than 1 point).

Run (from the repository root):

    .venv/bin/python -m experiments.init_benchmark --preset quick   # 1-2 h on 2 busy CPU cores, ViTs at 16 px
    .venv/bin/python -m experiments.init_benchmark --preset full    # 32 px, longer (not run here)
    .venv/bin/python -m experiments.init_benchmark --preset smoke   # seconds; for the tests

Outputs in ``results/init_benchmark/<preset>/``: ``runs.csv`` (one row per target, method and
seed: ``target, method, recipe, seed, top1, pretrain_cost`` plus the top-1 curve), ``sources.csv``
(steps, FLOPs per step and cost of every source) and ``init_benchmark.png`` (mean ViT top-1
against the cost of serving all five ViT sizes). ``--publish`` copies the CSV and the figure to
``docs/results/`` and ``docs/figures/`` as ``init_benchmark_srcS[_ftN][_ldD]`` (S the dense source's
steps); the README's headline, ``init_benchmark.csv``, is written only by ``--publish-as
init_benchmark``. Finished runs are kept, so an interrupted run resumes.
``--finetune-steps N`` fine-tunes longer from the same sources (runs in ``runs_ftN/``, outputs
``runs_ftN.csv``, ...), ``--layer-decay D`` with timm's layer-wise lr decay (``runs_ldD/``);
``--targets`` and ``--methods`` pick a subset, e.g. to check whether the ranking holds once random
init has (nearly) stopped improving. ``--import-runs CSV`` copies the rows of an earlier published
CSV into the run cache (checked against this run's recipe, steps and source costs), so that one
report can hold runs of several sessions; the ``imported_from`` column names them.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from analysis import steps_to_reach
from experiments.harness import (
    add_layer_decay_option,
    check_layer_decay,
    command_line,
    git_revision,
    layer_decay_tag,
    log,
    md_table,
)
from tucker_init import LearnConfig, factorize, get_initializer, load_template
from tucker_init.pipeline import (
    ModelSpec,
    finetune_model,
    load_model,
    lossless_rules,
    lossless_template,
    make_train_loader,
    pretrain,
)

ROOT = Path(__file__).resolve().parents[1]
METHODS = (
    "random",
    "weight_selection",
    "linear_expansion",
    "kronecker",
    "tucker_mae",
    "tucker_mae_select",
    "tucker_mae_first",
    "tucker_mae_learned",
    "tucker_mae_zero",
    "tucker_subnet",
    "tucker_prefix",
    "tucker_prefix_first",
    "tucker_distill",
    "tucker_refine",
    "tucker_compress",
    "tucker_compress_wide",
    "tucker_compress_select",
    "tucker_compress_subnet",
    "tucker_compress_zero",
    "tucker_compress_identity",
    "kronecker_zero",
    "kronecker_identity",
    "direct",
)
# Methods that start from another method's source (same source, same cost).
SHARED_SOURCE = {
    "weight_selection": "dense_mae",
    "linear_expansion": "dense_mae",
    "tucker_compress": "dense_mae",
    "tucker_compress_wide": "dense_mae",
    "tucker_compress_select": "dense_mae",
    "tucker_compress_zero": "dense_mae",
    "tucker_compress_identity": "dense_mae",
    "kronecker_zero": "kronecker",
    "kronecker_identity": "kronecker",
    "tucker_mae_select": "tucker_mae",
    "tucker_mae_first": "tucker_mae",
    "tucker_mae_learned": "tucker_mae",
    "tucker_mae_zero": "tucker_mae",
    "tucker_prefix_first": "tucker_prefix",
}
# Template methods that initialize with other options than the library's defaults: another depth
# rule (the one their sub-networks were trained under, or weight selection's ``first``), or
# scalers learned for SWEET's 0.16 epoch of the target's labelled subset. A function of (source,
# target) gives the rules per target: the lossless path is the library's own rule table.
INIT_OPTIONS: dict[str, dict[str, str | float] | Callable[[ModelSpec, ModelSpec], dict[str, str]]] = {
    "tucker_mae_select": {"depth": "select"},
    "tucker_mae_first": {"depth": "first"},
    "tucker_mae_learned": {"learn_epochs": 0.16},
    "tucker_subnet": {"depth": "select"},
    "tucker_prefix_first": {"depth": "first"},
    "tucker_compress": {"depth": "first"},
    "tucker_compress_wide": {"depth": "first", "wider_width": "interpolate"},
    "tucker_compress_select": {"depth": "first", "width": "select", "wider_width": "interpolate"},
    "tucker_compress_subnet": {"depth": "first"},
    "tucker_compress_zero": lossless_rules,
    "tucker_compress_identity": {"depth": "identity", "width": "select", "wider_width": "zero_fanout"},
    "kronecker_zero": {"width": "zero_fanout"},
    "kronecker_identity": {"depth": "identity", "width": "zero_fanout"},
    "tucker_mae_zero": {"width": "zero_fanout"},
}
CSV_COLUMNS = (
    "target",
    "method",
    "recipe",
    "seed",
    "top1",
    "pretrain_cost",
    "top1_at_3_4",
    "family",
    "steps",
    "imported_from",  # empty: run by this command; else the published CSV it was copied from (--import-runs)
)


# -- plan ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """One backbone family's source size, targets and template ranks."""

    name: str
    source: ModelSpec
    targets: tuple[ModelSpec, ...]
    ranks: tuple[int, int, int]
    kron_ranks: tuple[int, int, int]


@dataclass(frozen=True)
class Preset:
    """Sizes and budgets of one benchmark setting."""

    families: tuple[Family, ...]
    source_steps: int  # the dense MAE source's steps; every other source gets its FLOPs
    pretrain_batch: int
    finetune_steps: int
    finetune_batch: int
    finetune_subset: int  # labelled training images
    test_subset: int
    seeds: tuple[int, ...] = (0, 1, 2)
    data: str = "fashion_mnist"
    layer_decay: float | None = None  # of the fine-tuning (timm's layer-wise lr decay); None: one lr for all

    @property
    def recipe(self) -> str:
        """The fine-tuning recipe as the CSV names it."""
        return "small_finetune" + ("" if self.layer_decay is None else f"+layer_decay{self.layer_decay:g}")


def _vit(depth: int, width: int, img: int) -> ModelSpec:
    return ModelSpec("vit", depth=depth, width=width, img_size=img, patch_size=4)


def _resnet(depth: int, width: int, img: int) -> ModelSpec:
    return ModelSpec("resnetd", depth=depth, width=width, img_size=img, patch_size=None)


def _families(
    img: int, vit_source: tuple[int, int], vit_sizes: Sequence[tuple[int, int]], resnet_sizes: Sequence[tuple[int, int]]
) -> tuple:
    vit_targets = tuple(_vit(d, w, img) for d, w in vit_sizes)
    vit = Family("vit", _vit(*vit_source, img), vit_targets, (36, 64, 64), (64, 32, 32))
    img = max(img, 32)  # the masked CNN objective needs images of at least the total stride (32)
    resnet_source = _resnet(2, 32, img)
    resnet_targets = tuple(_resnet(d, w, img) for d, w in resnet_sizes)
    resnet = Family("resnet", resnet_source, resnet_targets, (9, 32, 32), (8, 8, 8))
    return (vit, resnet)


VIT_TARGETS = ((3, 64), (3, 128), (3, 192), (6, 128), (12, 192))
RESNET_TARGETS = ((2, 16), (1, 32))
PRESETS = {
    # quick: the source at the middle size (L6 w128, as the README's earlier benchmarks), so weight
    # selection and linear expansion cannot reach L3 w192 and L12 w192; 2 busy CPU cores.
    "quick": Preset(_families(16, (6, 128), VIT_TARGETS, RESNET_TARGETS), 300, 64, 300, 32, 1000, 1000),
    "full": Preset(_families(32, (12, 192), VIT_TARGETS, RESNET_TARGETS), 2000, 128, 1000, 64, 5000, 5000),
    "smoke": Preset(
        (
            Family("vit", _vit(2, 64, 16), (_vit(1, 64, 16), _vit(2, 64, 16)), (4, 16, 16), (4, 2, 2)),
            Family("resnet", _resnet(1, 16, 32), (_resnet(1, 16, 32),), (2, 8, 8), (2, 2, 2)),
        ),
        4,
        16,
        4,
        16,
        64,
        64,
        seeds=(0,),
        data="digits",
    ),
}


@dataclass(frozen=True)
class SourceJob:
    """One pre-training job: ``kind`` dense | tucker | kronecker, objective mae | distill,
    ``share`` its cost as a fraction of C; ``teacher`` / ``init_from``: another job's name."""

    name: str
    kind: str
    objective: str = "mae"
    share: float = 1.0
    teacher: str | None = None
    init_from: str | None = None
    spec: ModelSpec | None = None  # None: the family's source size
    scaling: str = "off"
    ranks: str | None = None  # None: the family's; "full": lossless
    subnet_depth: str = "select"


def source_jobs(family: Family) -> list[SourceJob]:
    """The sources of one family, in the order they must run (teachers first)."""
    jobs = [
        SourceJob("dense_mae", "dense"),
        SourceJob("kronecker", "kronecker"),
        SourceJob("tucker_mae", "tucker"),
        SourceJob("tucker_subnet", "tucker", scaling="subnet"),
        SourceJob("tucker_prefix", "tucker", scaling="prefix"),
        SourceJob("teacher_half", "dense", share=0.5),
        SourceJob("tucker_distill", "tucker", "distill", 0.5, teacher="teacher_half"),
        SourceJob("tucker_refine", "tucker", "distill", 0.5, teacher="teacher_half", init_from="teacher_half"),
    ]
    if holds_losslessly(family.source):  # weight selection's start, then its narrow sub-networks trained
        jobs += [
            SourceJob("dense_3q", "dense", share=0.75),
            SourceJob(
                "tucker_compress_subnet",
                "tucker",
                share=0.25,
                init_from="dense_3q",
                scaling="subnet",
                ranks="full",
                subnet_depth="first",
            ),
        ]
    # A target of the source's own size is pre-trained directly by the dense MAE job itself.
    return jobs + [SourceJob(f"direct_{_size(t)}", "dense", spec=t) for t in family.targets if t != family.source]


@functools.cache
def holds_losslessly(spec: ModelSpec) -> bool:
    """Whether one shared Tucker core holds a model of ``spec`` losslessly: the library's own
    answer (``factorize(ranks="full")`` refuses a model with several weight groups, a ResNet)."""
    try:
        factorize(spec.build(), ranks="full")
    except ValueError:
        return False
    return True


def source_of(method: str) -> str:
    """The source job behind a method that starts from one shared source (not ``random`` or
    ``direct``): another method's (:data:`SHARED_SOURCE`), else the method's own job."""
    return SHARED_SOURCE.get(method, method)


def needed_jobs(family: Family, methods: Sequence[str]) -> list[SourceJob]:
    """The source jobs ``methods`` need, teachers included, in running order: the dense MAE
    source always (it sets the cost C), direct pre-training of every target (its cost is that of
    serving them all)."""
    names = {"dense_mae"}
    for method in methods:
        if method == "direct":
            names |= {_direct(t, family) for t in family.targets}
        elif method != "random":
            names.add(source_of(method))
    jobs = source_jobs(family)
    for job in reversed(jobs):  # teachers come before their students: one pass in reverse closes the set
        if job.name in names:
            names |= {n for n in (job.teacher, job.init_from) if n}
    return [job for job in jobs if job.name in names]


def _size(spec: ModelSpec) -> str:
    return f"{spec.family}-L{spec.depth}w{spec.width}"


def _direct(target: ModelSpec, family: Family) -> str:
    """The source job that pre-trained ``target`` directly."""
    return "dense_mae" if target == family.source else f"direct_{_size(target)}"


# -- cost ------------------------------------------------------------------------------------------
def pretrain_args(job: SourceJob, family: Family, preset: Preset, done: dict[str, dict]) -> dict[str, Any]:
    """The :func:`~tucker_init.pipeline.pretrain` arguments of ``job`` (all but folder and steps)."""
    return {
        "spec": job.spec or family.source,
        "data": preset.data,
        "ranks": job.ranks or (family.ranks if job.kind == "tucker" else family.kron_ranks),
        "method": "tucker" if job.kind == "dense" else job.kind,
        "dense": job.kind == "dense",
        "objective": job.objective,
        "teacher": done[job.teacher]["path"] if job.teacher else None,
        "init_from": done[job.init_from]["path"] if job.init_from else None,
        "scaling": job.scaling,
        "sandwich": job.scaling == "subnet",
        "subnet_depth": job.subnet_depth,
        "batch_size": preset.pretrain_batch,
        "seed": 0,
    }


def step_flops(args: dict[str, Any]) -> int:
    """Training FLOPs of one step of the job (forward and backward of everything the step runs:
    reconstruction, teacher, sub-networks), counted on a one-step run of the job itself."""
    with tempfile.TemporaryDirectory() as tmp, FlopCounterMode(display=False) as counter:
        pretrain(out_dir=tmp, steps=1, **args)
    return int(counter.get_total_flops())


# -- run: sources ----------------------------------------------------------------------------------
def run_source(job: SourceJob, family: Family, preset: Preset, out: Path, done: dict[str, dict]) -> dict:
    """Pre-train one source (cached: a finished job's record is reused); returns its record.
    Its steps make its FLOPs ``job.share`` of the dense MAE source's (direct jobs: the same steps)."""
    record_path = out / "sources" / family.name / job.name / "source.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    args = pretrain_args(job, family, preset, done)
    flops = step_flops(args)
    dense_flops = done["dense_mae"]["flops_per_step"] if "dense_mae" in done else flops
    same_steps = job.spec is not None or job.name == "dense_mae"
    steps = preset.source_steps if same_steps else max(1, round(job.share * preset.source_steps * dense_flops / flops))
    log(f"{family.name} source {job.name}: {steps} steps x {flops / 1e9:.2f} GFLOP")
    resume = (record_path.parent / "last.pt").is_file()
    result = pretrain(out_dir=record_path.parent, steps=steps, resume=resume, **args)
    own_cost = steps * flops
    record = {
        "name": job.name,
        "family": family.name,
        "path": str(result.path),
        "steps": steps,
        "flops_per_step": flops,
        "own_cost": own_cost,
        "cost": own_cost + sum(done[name]["cost"] for name in {job.teacher, job.init_from} if name),
        "final_loss": result.train.loss,
    }
    record_path.write_text(json.dumps(record))
    return record


# -- run: targets ----------------------------------------------------------------------------------
def init_target(
    method: str, target: ModelSpec, family: Family, seed: int, sources: dict[str, dict], preset: Preset
) -> torch.nn.Module | None:
    """The target initialized by ``method``, or ``None`` where the method cannot reach it."""
    torch.manual_seed(seed)
    model = target.build()

    def dense(name: str) -> torch.nn.Module:
        return load_model(sources[name]["path"])[0]

    try:
        if method == "random":
            return get_initializer("random")(model, seed=seed)
        if method in ("weight_selection", "linear_expansion"):
            return get_initializer(method)(model, dense(source_of(method)))
        if method == "direct":
            return get_initializer("pretrained")(model, dense(_direct(target, family)))
        template = _template(method, family, sources)
        options = init_options(method, target, family)
        if "learn_epochs" in options:
            return learned_scalers(model, template, options["learn_epochs"], target, seed, preset)
        kind = "kronecker" if source_of(method) == "kronecker" else "tucker"
        return get_initializer(kind)(model, template, seed=seed, **options)
    except ValueError as err:  # e.g. Kronecker templates and ResNet width changes
        log(f"  {method} cannot initialize {_size(target)}: {err}")
        return None


def init_options(method: str, target: ModelSpec, family: Family) -> dict[str, Any]:
    """``method``'s initialize options for ``target`` (:data:`INIT_OPTIONS`); depth ``first``, which
    cannot build a target deeper than the template, becomes ``interpolate`` there, as the README
    advises for deeper targets; ``wider_width`` is the width rule of a target wider than the template."""
    rules = INIT_OPTIONS.get(method, {})
    if callable(rules):
        return rules(family.source, target)
    options = dict(rules)
    if options.get("depth") == "first" and target.depth > family.source.depth:
        options["depth"] = "interpolate"
    wider_width = options.pop("wider_width", None)  # the width rule for targets wider than the template
    if wider_width and target.width > family.source.width:
        options["width"] = wider_width
    return options


def _template(method: str, family: Family, sources: dict[str, dict]) -> Any:
    """The template behind ``method``: its source's file, or where that source is a dense model
    (``tucker_compress*``) the model held by its lossless template."""
    name = source_of(method)
    path = sources[name]["path"]
    dense = next(job.kind == "dense" for job in source_jobs(family) if job.name == name)
    return lossless_template(path) if dense else load_template(path)


def learned_scalers(
    model: torch.nn.Module, template: Any, epochs: float, target: ModelSpec, seed: int, preset: Preset
) -> torch.nn.Module:
    """``model`` from ``template`` with its scalers learned for ``epochs`` of the target's labelled subset."""
    labelled = make_train_loader(
        preset.data,
        preset.finetune_batch,
        image_size=target.img_size,
        seed=seed,
        train_subset=preset.finetune_subset,
        transform="finetune",  # the fine-tuning's own training images and transform
    )
    learn = LearnConfig(data=labelled, epochs=epochs, progress=False)
    return get_initializer("tucker_learned")(model, template, learn=learn, seed=seed)


def has_sources(method: str, family: Family, sources: dict[str, dict]) -> bool:
    """Whether every source job behind ``method`` is finished (is in ``sources``)."""
    return all(job.name in sources for job in needed_jobs(family, [method]))


def method_cost(method: str, family: Family, sources: dict[str, dict]) -> float:
    """Pre-training FLOPs behind ``method``'s source for one family (direct: all targets)."""
    if method == "random":
        return 0.0
    if method == "direct":
        return float(sum(sources[_direct(t, family)]["cost"] for t in family.targets))
    return float(sources[source_of(method)]["cost"])


def run_target(
    method: str, target: ModelSpec, family: Family, seed: int, preset: Preset, runs: Path, sources: dict
) -> dict | None:
    """Fine-tune one initialized target (cached in ``runs``); returns its CSV row, ``None`` if
    unreachable."""
    path = runs / f"{_size(target)}-{method}-{seed}.json"
    if path.is_file():
        row = json.loads(path.read_text())
        return row or None
    model = init_target(method, target, family, seed, sources, preset)
    row: dict[str, Any] = {}
    if model is not None:
        result = finetune_model(
            model,
            preset.data,
            steps=preset.finetune_steps,
            batch_size=preset.finetune_batch,
            eval_every=max(1, preset.finetune_steps // 8),
            image_size=target.img_size,
            seed=seed,
            train_subset=preset.finetune_subset,
            test_subset=preset.test_subset,
            engine=None if preset.layer_decay is None else {"layer_decay": preset.layer_decay},
        )
        curve = {e["step"]: e["top1"] for e in result.evals}
        three_quarters = max((s for s in curve if s <= 0.75 * preset.finetune_steps), default=None)
        row = {
            "target": _size(target),
            "family": target.family,
            "method": method,
            "recipe": preset.recipe,
            "seed": seed,
            "top1": round(result.final_eval["top1"], 3),
            "top1_at_3_4": None if three_quarters is None else round(curve[three_quarters], 3),
            "steps": preset.finetune_steps,
            "curve": sorted(curve.items()),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row))
    return row or None


def import_runs(path: Path, family: Family, preset: Preset, runs: Path, sources: dict[str, dict]) -> int:
    """Copy the runs of a CSV this benchmark published (``--publish``) into the run cache, for runs
    measured in another session whose run files are gone; returns how many were copied. A run
    already in the cache is kept. Every copied row must come from this fine-tuning (recipe and steps)
    and from sources of this cost (its ``pretrain_cost`` within 0.1 % of the method's here); the
    copies carry ``imported_from`` and no top-1 curve (the speed-ups leave them out)."""
    if not path.is_file():
        raise SystemExit(f"--import-runs: no such file {path}")
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("family") == family.name]
    copied = 0
    for r in rows:
        where = f"--import-runs {path.name}: {r['target']} {r['method']} seed {r['seed']}"
        if (r["recipe"], int(r["steps"])) != (preset.recipe, preset.finetune_steps):
            raise SystemExit(
                f"{where} was fine-tuned with {r['recipe']} for {r['steps']} steps, "
                f"this run with {preset.recipe} for {preset.finetune_steps}"
            )
        if not has_sources(r["method"], family, sources):
            continue  # its source is not part of this run: the row would not be reported anyway
        cost = method_cost(r["method"], family, sources)
        if abs(float(r["pretrain_cost"]) - cost) > 1e-3 * max(cost, 1.0):
            raise SystemExit(f"{where} cost {float(r['pretrain_cost']):.4g} FLOPs of pre-training, here {cost:.4g}")
        destination = runs / f"{r['target']}-{r['method']}-{r['seed']}.json"
        if destination.is_file():
            continue
        at_3_4 = r["top1_at_3_4"]
        row = {
            **{k: r[k] for k in ("target", "family", "method", "recipe")},
            "seed": int(r["seed"]),
            "top1": float(r["top1"]),
            "top1_at_3_4": float(at_3_4) if at_3_4 else None,
            "steps": int(r["steps"]),
            "imported_from": r.get("imported_from") or path.name,
        }
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(json.dumps(row))
        copied += 1
    return copied


# -- summarize and report --------------------------------------------------------------------------
@dataclass
class Summary:
    """Mean and std of top-1 per (target, method), and the rows behind them."""

    rows: list[dict]
    cells: dict[tuple[str, str], tuple[float, float, int]] = field(default_factory=dict)
    unreachable: set[tuple[str, str]] = field(default_factory=set)  # (target, method) the method cannot build

    def __post_init__(self) -> None:
        groups: dict[tuple[str, str], list[float]] = {}
        for r in self.rows:
            groups.setdefault((r["target"], r["method"]), []).append(r["top1"])
        for key, values in groups.items():
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            self.cells[key] = (statistics.mean(values), std, len(values))

    def table(self, targets: Sequence[str]) -> str:
        """Mean ± std of top-1 per target (rows) and method run (columns); n/a where the method
        cannot build the target, - where it was not run; (n=K) where a cell has another number of
        seeds than most."""
        methods = [m for m in METHODS if any(r["method"] == m for r in self.rows)]
        usual_n = statistics.mode(n for *_, n in self.cells.values())  # a cell of another seed count says so

        def text(cell: tuple[float, float, int]) -> str:
            mean, std, n = cell
            return f"{mean:.1f} ± {std:.1f}" + ("" if n == usual_n else f" (n={n})")

        rows = []
        for t in targets:
            cells = [self.cells.get((t, m)) or ("n/a" if (t, m) in self.unreachable else "-") for m in methods]
            rows.append([t, *(c if isinstance(c, str) else text(c) for c in cells)])
        return "\n".join(md_table(["target", *methods], rows))

    def serving(self, family: str = "vit") -> dict[str, tuple[float, float, int, int]]:
        """Per method run on ``family``: (pre-training cost of serving all its targets in FLOPs,
        mean top-1 over the targets the method reaches, how many it reaches, how many were run)."""
        targets = sorted({r["target"] for r in self.rows if r["family"] == family})
        out = {}
        for method in METHODS:
            means = [self.cells[t, method][0] for t in targets if (t, method) in self.cells]
            if means:
                cost = next(r["pretrain_cost"] for r in self.rows if (r["method"], r["family"]) == (method, family))
                out[method] = (cost, statistics.mean(means), len(means), len(targets))
        return out

    def seed_spread(self, method: str, targets: Sequence[str]) -> float:
        """Std over seeds of ``method``'s mean top-1 over ``targets`` (seeds run at every one of
        them; 0 with fewer than two such seeds): the error bar of a serving mean."""
        by_seed: dict[int, list[float]] = {}
        for r in self.rows:
            if r["method"] == method and r["target"] in targets:
                by_seed.setdefault(r["seed"], []).append(r["top1"])
        means = [statistics.mean(v) for v in by_seed.values() if len(v) == len(targets)]
        return statistics.stdev(means) if len(means) > 1 else 0.0

    def serving_table(self, family: str = "vit") -> str:
        """:meth:`serving` as a markdown table, the figure's numbers."""
        rows = [
            [m, f"{cost / 1e12:.2f}", f"{mean:.1f} ({n} of {total} sizes)"]
            for m, (cost, mean, n, total) in self.serving(family).items()
        ]
        header = [
            "method",
            f"pre-training cost of serving the {family} sizes (TFLOP)",
            "mean top-1 over the sizes it reaches",
        ]
        return "\n".join(md_table(header, rows))

    def plateau(self) -> list[str]:
        """Random init's rise over the last quarter of fine-tuning, per target (mean of seeds)."""
        out = []
        for t in sorted({r["target"] for r in self.rows}):
            pairs = [(r["top1_at_3_4"], r["top1"]) for r in self.rows if r["target"] == t and r["method"] == "random"]
            if pairs and all(a is not None for a, _ in pairs):
                rise = statistics.mean(b - a for a, b in pairs)
                verdict = "ok" if rise < 1 else ">= 1: too short"
                out.append(f"{t}: random init {rise:+.2f} points over the last quarter ({verdict})")
        return out

    def speedups(self) -> list[str]:
        """Per target: how many times fewer fine-tuning steps each method needs to reach random
        init's final top-1, read on the seed-mean curves (runs that recorded a curve only)."""
        out = []
        for t in sorted({r["target"] for r in self.rows}):
            random_curve = self.mean_curve(t, "random")
            if not random_curve:
                continue
            goal = random_curve[-1][1]
            base = steps_to_reach(random_curve, goal)
            parts = []
            for method in METHODS[1:]:
                curve = self.mean_curve(t, method)
                if curve:
                    steps = steps_to_reach(curve, goal)
                    parts.append(f"{method} {base / steps:.1f}x" if steps else f"{method} never")
            if parts:
                out.append(f"{t}: steps to random init's final {goal:.1f} %, random / method: " + ", ".join(parts))
        return out

    def mean_curve(self, target: str, method: str) -> list[tuple[int, float]]:
        curves = [
            dict(r["curve"]) for r in self.rows if (r["target"], r["method"]) == (target, method) and r.get("curve")
        ]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        return [(s, statistics.mean(c[s] for c in curves)) for s in steps]


def plot(summary: Summary, path: Path) -> None:
    """Mean ViT top-1 over the five sizes against the cost of serving all of them; for runs of
    one target, every seed's top-1 per method instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len({r["target"] for r in summary.rows}) == 1:
        _plot_seeds(summary, path, plt)
        return
    seeds = statistics.mode(n for *_, n in summary.cells.values())
    serving = summary.serving("vit")
    n_targets = max((total for *_, total in serving.values()), default=0)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    targets = sorted({r["target"] for r in summary.rows if r["family"] == "vit"})
    for method, (cost, mean, n, _) in serving.items():
        if n < n_targets:  # a mean over fewer sizes is not comparable
            continue
        x = max(cost, 1e9) / 1e12
        ax.errorbar(x, mean, yerr=summary.seed_spread(method, targets), fmt="o", capsize=4)
        ax.annotate(method, (x, mean), textcoords="offset points", xytext=(6, 3), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("pre-training cost of serving all ViT sizes (TFLOP; random init drawn at 0.001)")
    ax.set_ylabel(f"mean fine-tuned top-1 over {n_targets} ViT sizes (%)")
    ax.set_title(f"Equal-cost initializers ({seeds} seeds; bars: std over seeds of the mean over sizes)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_seeds(summary: Summary, path: Path, plt: Any) -> None:
    """One target: each method's top-1 per seed (dots, labelled by seed) and mean ± std (bar)."""
    target = summary.rows[0]["target"]
    methods = [m for m in METHODS if (target, m) in summary.cells]
    fig, ax = plt.subplots(figsize=(1.6 * len(methods) + 2, 4.5))
    for i, method in enumerate(methods):
        runs = sorted((r["seed"], r["top1"]) for r in summary.rows if r["method"] == method)
        ax.scatter([i] * len(runs), [top1 for _, top1 in runs], s=18, color="0.5", zorder=2)
        for seed, top1 in runs:
            ax.annotate(str(seed), (i, top1), textcoords="offset points", xytext=(4, -3), fontsize=6, color="0.4")
        mean, std, _ = summary.cells[(target, method)]
        ax.errorbar(i + 0.15, mean, yerr=std, fmt="o", color="C0", capsize=4, zorder=3)
    ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("fine-tuned top-1 (%)")
    ax.set_title(f"{target}: top-1 per seed (grey, seed labelled) and mean ± std (blue)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in CSV_COLUMNS} for r in rows)


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (smoke: 0)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--report-only", action="store_true", help="report the finished runs; train nothing (missing ones are left out)"
    )
    parser.add_argument("--families", nargs="+", choices=["vit", "resnet"], default=None, help="default both")
    parser.add_argument(
        "--source-steps",
        type=int,
        default=None,
        help="pre-train the dense MAE source this long (every source gets its FLOPs; default out PRESET_srcN)",
    )
    parser.add_argument("--targets", nargs="+", default=None, metavar="SIZE", help="e.g. vit-L3w64 (default: all)")
    parser.add_argument(
        "--finetune-steps",
        type=int,
        default=None,
        help="fine-tune this long instead of the preset's (same sources; runs and outputs tagged _ftN)",
    )
    add_layer_decay_option(parser)
    parser.add_argument("--out", type=Path, default=None, help="default results/init_benchmark/PRESET")
    parser.add_argument("--publish", action="store_true", help="copy the CSV and figure into docs/")
    parser.add_argument(
        "--publish-as",
        metavar="NAME",
        default=None,
        help="publish as docs/results/NAME.csv, NAME_sources.csv and docs/figures/NAME.png (implies --publish): "
        "a subset of methods and targets, beside the full tables",
    )
    parser.add_argument(
        "--import-runs",
        type=Path,
        nargs="+",
        default=[],
        metavar="CSV",
        help="copy the runs of a published CSV of this benchmark into the run cache first (runs of another "
        "session; they must match this run's fine-tuning and source costs)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return parser.parse_args(argv)


def resolve_preset(args: argparse.Namespace) -> tuple[Preset, str]:
    """The preset with the command line's seeds, fine-tuning length and layer decay, and the tag of
    its runs (``""``; ``_ftN`` for a fine-tuning length other than the preset's, ``_ldD`` for a layer
    decay)."""
    preset = PRESETS[args.preset]
    preset = replace(preset, seeds=tuple(args.seeds)) if args.seeds else preset
    tag = ""
    if args.finetune_steps is not None and args.finetune_steps != preset.finetune_steps:
        if args.finetune_steps < 4:
            raise SystemExit(f"--finetune-steps must be at least 4 (four evaluations), got {args.finetune_steps}")
        preset, tag = replace(preset, finetune_steps=args.finetune_steps), f"_ft{args.finetune_steps}"
    if check_layer_decay(args.layer_decay) is not None:
        preset, tag = replace(preset, layer_decay=args.layer_decay), tag + layer_decay_tag(args.layer_decay)
    if args.source_steps is not None:
        if args.source_steps < 1:
            raise SystemExit(f"--source-steps must be a positive number of steps, got {args.source_steps}")
        preset = replace(preset, source_steps=args.source_steps)
    if args.publish_as is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", args.publish_as):
        raise SystemExit(f"--publish-as must be a plain file name (letters, digits, _ . -), got {args.publish_as!r}")
    known = {_size(t) for f in preset.families for t in f.targets}
    if args.targets and not set(args.targets) <= known:
        unknown = ", ".join(sorted(set(args.targets) - known))
        raise SystemExit(f"--targets: {unknown} not in the {args.preset} preset (it has {', '.join(sorted(known))})")
    return preset, tag


def published_names(publish_as: str | None, preset: Preset, tag: str) -> tuple[str, str]:
    """The names of the published runs CSV (and figure) and sources CSV: ``publish_as`` if given,
    else ``init_benchmark_srcS<tag>`` with S the dense source's steps. The bare name
    ``init_benchmark`` is the README's headline and is only written when asked for by name."""
    if publish_as:
        return publish_as, f"{publish_as}_sources"
    stem = f"init_benchmark_src{preset.source_steps}"
    return stem + tag, f"{stem}_sources"


def run_family(
    family: Family, args: argparse.Namespace, preset: Preset, out: Path, runs: Path
) -> tuple[list[dict], list[dict], set[tuple[str, str]]]:
    """Every source, then every (target, method, seed) run of one family: (run rows, source rows,
    the (target, method) pairs the method cannot build); with ``--report-only`` only what is
    finished (a method whose source is missing has no runs)."""
    targets = [t for t in family.targets if args.targets is None or _size(t) in args.targets]
    sources: dict[str, dict] = {}
    for job in needed_jobs(family, args.methods):
        if args.report_only and not (out / "sources" / family.name / job.name / "source.json").is_file():
            continue
        sources[job.name] = run_source(job, family, preset, out, sources)
    # Without --report-only every source exists; with it, a method whose sources are missing is left
    # out, as is a method the family has no source job for (e.g. compress-then-sub-networks of a ResNet).
    methods = [m for m in args.methods if m in ("random", "direct") or source_of(m) in sources]
    methods = [m for m in methods if has_sources(m, family, sources)]
    for path in args.import_runs:
        log(f"{family.name}: {import_runs(path, family, preset, runs, sources)} runs copied from {path}")
    rows, unreachable = [], set()
    for target in targets:
        for method in methods:
            for seed in preset.seeds:
                if args.report_only and not (runs / f"{_size(target)}-{method}-{seed}.json").is_file():
                    continue
                row = run_target(method, target, family, seed, preset, runs, sources)
                if row is None:
                    unreachable.add((_size(target), method))
                else:
                    rows.append({**row, "pretrain_cost": method_cost(method, family, sources)})
                    log(f"{row['target']} {method} seed {seed}: top1 {row['top1']:.2f}")
    return rows, list(sources.values()), unreachable


def main(argv: Sequence[str] | None = None) -> Summary:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset, tag = resolve_preset(args)
    src = "" if args.source_steps is None else f"_src{args.source_steps}"  # in the default out dir
    out = args.out or ROOT / "results" / "init_benchmark" / f"{args.preset}{src}"
    runs = out / f"runs{tag}"
    out.mkdir(parents=True, exist_ok=True)
    command = command_line("init_benchmark", sys.argv[1:] if argv is None else argv)
    rows: list[dict] = []
    source_rows: list[dict] = []
    unreachable: set[tuple[str, str]] = set()
    for family in [f for f in preset.families if args.families is None or f.name in args.families]:
        family_rows, family_sources, family_unreachable = run_family(family, args, preset, out, runs)
        rows += family_rows
        unreachable |= family_unreachable
        source_rows += family_sources
    if not rows:
        raise SystemExit(f"init_benchmark: no finished runs to report in {runs}")
    summary = Summary(rows, unreachable=unreachable)
    write_csv(rows, out / f"runs{tag}.csv")
    with (out / "sources.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(source_rows[0]))
        writer.writeheader()
        writer.writerows(source_rows)
    plot(summary, out / f"init_benchmark{tag}.png")
    targets = list(dict.fromkeys(r["target"] for r in rows))
    lines = [f"`{command}` (commit {git_revision()})", "", summary.table(targets), "", *summary.plateau()]
    if any(r["family"] == "vit" for r in rows):
        lines += ["", summary.serving_table("vit")]
    report = "\n".join([*lines, "", *summary.speedups()])
    (out / f"init_benchmark{tag}.md").write_text(report + "\n")
    print(report)
    if args.publish or args.publish_as:
        docs = ROOT / "docs"
        name, sources_name = published_names(args.publish_as, preset, tag)
        shutil.copy(out / f"runs{tag}.csv", docs / "results" / f"{name}.csv")
        shutil.copy(out / "sources.csv", docs / "results" / f"{sources_name}.csv")
        shutil.copy(out / f"init_benchmark{tag}.png", docs / "figures" / f"{name}.png")
    return summary


if __name__ == "__main__":
    main()
