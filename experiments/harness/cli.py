"""The one command line of the experiment scripts and the :class:`Context` a run works in.

Every script takes ``--smoke`` / ``--quick`` / ``--medium`` (those of its modes it has; none of
them: ``full``), ``--seeds``, ``--data``, ``--pretrain-steps``, ``--finetune-steps``, ``--device``,
``--threads``, ``--out`` and ``--cache``, and adds its own options through ``extra``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from tucker_init.pipeline import SCALING_MODES

from .provenance import command_line

__all__ = [
    "CACHE_DIR",
    "MODES",
    "RESULTS_DIR",
    "ROOT",
    "Context",
    "add_scaling_option",
    "entry_point",
    "make_parser",
    "override",
    "parse_seeds",
    "resolve_mode",
    "resolve_setting",
    "run_experiment",
]

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "results"
CACHE_DIR = RESULTS_DIR / "cache"  # pre-trained sources, shared by every script (see sources.py)
MODES = ("smoke", "quick", "medium", "full")
_MODE_HELP = {
    "smoke": "seconds on tiny data (for the tests)",
    "quick": "minutes on 2 CPU cores, 1 seed",
    "medium": "one to two hours on 2 CPU cores: longer pre-training, 3 seeds",
}
T = TypeVar("T")


def make_parser(
    doc: str | None,
    modes: Iterable[str],
    *,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
    data_help: str = "data set (default: the mode's; fashion_mnist, digits, mnist, ...)",
    pretrain_help: str = "override the pre-training steps of every source",
    finetune_help: str = "override the fine-tuning steps",
) -> argparse.ArgumentParser:
    """The common options, with a flag for each of the script's ``modes`` besides ``full``;
    ``extra`` adds the script's own options."""
    lines = (doc or "").strip().splitlines()
    parser = argparse.ArgumentParser(
        description=lines[0] if lines else None,
        epilog="\n".join(lines[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_mutually_exclusive_group()
    for mode in MODES:
        if mode in modes and mode != "full":
            group.add_argument(f"--{mode}", action="store_true", help=_MODE_HELP[mode])
    parser.add_argument("--seeds", nargs="+", help="the seeds, e.g. --seeds 0 1 2 or --seeds 0,4 (default: the mode's)")
    parser.add_argument("--data", help=data_help)
    parser.add_argument("--pretrain-steps", type=int, help=pretrain_help)
    parser.add_argument("--finetune-steps", type=int, help=finetune_help)
    if extra is not None:
        extra(parser)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: these models are too small to gain from more, and on a shared "
        "2-core machine 2 threads ran ~5x slower than 1); 0 = torch's default",
    )
    parser.add_argument("--out", type=Path, help="results folder (default results/<script>/<mode>)")
    parser.add_argument("--cache", type=Path, help=f"pre-trained source cache (default {CACHE_DIR.relative_to(ROOT)})")
    return parser


def add_scaling_option(parser: argparse.ArgumentParser) -> None:
    """``--scaling``: width-wise stochastic scaling of the Tucker template's pre-training."""
    parser.add_argument(
        "--scaling",
        choices=SCALING_MODES,
        help="width-wise stochastic scaling of the Tucker template's pre-training (default: the mode's, off: "
        "in stochastic_scaling prefix masks and rank dropout did not raise fine-tuned accuracy at any width)",
    )


def add_layer_decay_option(parser: argparse.ArgumentParser) -> None:
    """``--layer-decay``: timm's layer-wise lr decay for the fine-tuning (check it with :func:`check_layer_decay`)."""
    parser.add_argument(
        "--layer-decay",
        type=float,
        default=None,
        help="fine-tune with timm's layer-wise lr decay D (block i of n at lr * D**(n - i)), in runs (and outputs) "
        "of their own, tagged _ldD; default: one lr for every layer",
    )


def check_layer_decay(value: float | None) -> float | None:
    """``--layer-decay``'s value, refused (one line, exit status 1) outside (0, 1]; ``None`` stays ``None``."""
    if value is not None and not 0 < value <= 1:
        raise SystemExit(f"--layer-decay must be in (0, 1], got {value}")
    return value


def layer_decay_tag(value: float | None) -> str:
    """The suffix of runs and outputs fine-tuned with layer decay ``value`` (``""`` without)."""
    return "" if value is None else f"_ld{value:g}"


def resolve_mode(args: argparse.Namespace) -> str:
    """The mode the flags name; ``full`` when none is set."""
    return next((m for m in MODES[:-1] if getattr(args, m, False)), "full")


def parse_seeds(values: Sequence[str] | None) -> tuple[int, ...] | None:
    """``["0", "1"]`` or ``["0,1"]`` -> ``(0, 1)``; ``None`` (not given) stays ``None``."""
    if values is None:
        return None
    text = ",".join(values)
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise SystemExit(f"--seeds takes whole numbers, e.g. --seeds 0 1 2, found {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise SystemExit(f"--seeds needs at least one seed >= 0, found {text!r}")
    return seeds


def override(obj: T, **values: Any) -> T:
    """A copy of the dataclass ``obj`` with the fields in ``values`` that are not ``None``."""
    return dataclasses.replace(obj, **{k: v for k, v in values.items() if v is not None})  # type: ignore[type-var]


def resolve_setting(settings: Mapping[str, T], context: Context, **values: Any) -> T:
    """The mode's setting with the common overrides that were given (``--seeds``, ``--data``,
    ``--pretrain-steps``, ``--finetune-steps``) and ``values``; for settings with those fields."""
    args = context.args
    common = {"data": args.data, "pretrain_steps": args.pretrain_steps, "finetune_steps": args.finetune_steps}
    return override(settings[context.mode], seeds=context.seeds, **common, **values)


@dataclass(frozen=True)
class Context:
    """What a run of a script works with, from its command line."""

    name: str  # the script's module name, e.g. "init_methods"
    mode: str
    command: str  # the exact command that reproduces the run
    out: Path
    cache: Path
    device: str
    seeds: tuple[int, ...] | None  # --seeds, or None for the mode's own
    args: argparse.Namespace


def run_experiment(
    name: str,
    doc: str | None,
    argv: Sequence[str] | None,
    modes: Mapping[str, Any] | Iterable[str],
    body: Callable[[Context], int],
    **parser_options: Any,
) -> int:
    """Parse ``argv`` (``None``: ``sys.argv[1:]``), then ``body(context)`` with ``--threads`` torch
    threads; torch's thread count is restored afterwards (a process-wide setting, and the tests
    call ``main()`` in-process)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser(doc, list(modes), **parser_options).parse_args(argv)
    mode = resolve_mode(args)
    context = Context(
        name=name,
        mode=mode,
        command=command_line(name, argv),
        out=args.out or RESULTS_DIR / name / mode,
        cache=args.cache or CACHE_DIR,
        device=args.device,
        seeds=parse_seeds(args.seeds),
        args=args,
    )
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return body(context)
    finally:
        torch.set_num_threads(threads)


def entry_point(
    name: str,
    doc: str | None,
    modes: Mapping[str, Any] | Iterable[str],
    body: Callable[[Context], int],
    **parser_options: Any,
) -> Callable[[Sequence[str] | None], int]:
    """A script's ``main(argv=None) -> int``: :func:`run_experiment` of ``body``."""

    def main(argv: Sequence[str] | None = None) -> int:
        return run_experiment(name, doc, argv, modes, body, **parser_options)

    main.__doc__ = f"Run experiments.{name}; ``argv`` as on the command line (``None``: ``sys.argv[1:]``)."
    return main
