"""The experiment harness: what every script in ``experiments/`` shares, in one place.

- :mod:`.cli`: one command line (:func:`make_parser`, modes ``smoke`` / ``quick`` / ``medium`` /
  ``full``, ``--seeds 0 1 2``) and :func:`run_experiment`, which parses it into a :class:`Context`.
- :mod:`.provenance`: the exact command (:func:`command_line`), :func:`git_revision` and the
  :func:`report_header` of every report.
- :mod:`.settings`: :class:`AblationSetting` and the per-mode :data:`BUDGETS` of the ablations,
  :class:`FinetunePlan` of ``init_methods`` and ``convergence``.
- :mod:`.sources`: pre-trained sources (:class:`SourceSpec`, :func:`ensure_source`), cached by key
  under ``results/cache/`` for every script.
- :mod:`.cache`: per-run JSON results (:func:`cached_run`), so interrupted runs resume.
- :mod:`.data`: the fixed subsets (:func:`load_splits`, :func:`fixed_test_loader`).
- :mod:`.runs`: :func:`init_target` and :func:`finetune_classifier` (``pipeline.finetune_model``).
- :mod:`.measure`: linear probe, weight-norm ratio, noise margin.
- :mod:`.estimate`: the measured run-time estimate (:func:`estimate_seconds`) and :class:`Progress`.
"""

from .cache import cached_run, settings_of
from .cli import (
    CACHE_DIR,
    MODES,
    RESULTS_DIR,
    ROOT,
    Context,
    add_layer_decay_option,
    add_scaling_option,
    check_layer_decay,
    entry_point,
    layer_decay_tag,
    make_parser,
    override,
    parse_seeds,
    resolve_mode,
    resolve_setting,
    run_experiment,
)
from .data import (
    PRETRAIN_SUBSET_SEED,
    PROBE_SUBSET_SEED,
    TEST_SUBSET_SEED,
    TRAIN_SUBSET_SEED,
    Splits,
    fixed_test_loader,
    load_split,
    load_splits,
    subset,
)
from .estimate import Job, Progress, estimate_seconds, fmt_duration, log, resolve_device
from .measure import block_norm_ratio, count_params, linear_probe, noise_margin, pooled_features, verdict
from .provenance import command_line, fmt, git_revision, md_table, mean_std, report_header, write_report
from .runs import finetune_classifier, init_target, learn_config
from .settings import BUDGETS, PLAN_BUDGETS, AblationSetting, FinetunePlan, resolve_plan
from .sources import (
    MASK_RATIO,
    SOURCE_PRESETS,
    Source,
    SourcePreset,
    SourceSpec,
    ensure_source,
    max_shared_ranks,
    source_job,
    template_params,
)

__all__ = [
    "BUDGETS",
    "CACHE_DIR",
    "MASK_RATIO",
    "MODES",
    "PLAN_BUDGETS",
    "PRETRAIN_SUBSET_SEED",
    "PROBE_SUBSET_SEED",
    "RESULTS_DIR",
    "ROOT",
    "SOURCE_PRESETS",
    "TEST_SUBSET_SEED",
    "TRAIN_SUBSET_SEED",
    "AblationSetting",
    "Context",
    "FinetunePlan",
    "Job",
    "Progress",
    "Source",
    "SourcePreset",
    "SourceSpec",
    "Splits",
    "add_layer_decay_option",
    "add_scaling_option",
    "block_norm_ratio",
    "cached_run",
    "check_layer_decay",
    "command_line",
    "count_params",
    "ensure_source",
    "entry_point",
    "estimate_seconds",
    "finetune_classifier",
    "fixed_test_loader",
    "fmt",
    "fmt_duration",
    "git_revision",
    "init_target",
    "layer_decay_tag",
    "learn_config",
    "linear_probe",
    "load_split",
    "load_splits",
    "log",
    "make_parser",
    "max_shared_ranks",
    "md_table",
    "mean_std",
    "noise_margin",
    "override",
    "parse_seeds",
    "pooled_features",
    "report_header",
    "resolve_device",
    "resolve_mode",
    "resolve_plan",
    "resolve_setting",
    "run_experiment",
    "settings_of",
    "source_job",
    "subset",
    "template_params",
    "verdict",
    "write_report",
]
