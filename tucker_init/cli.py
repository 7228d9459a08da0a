"""Command line: ``tucker-init`` (or ``python -m tucker_init``).

    tucker-init pretrain --model vit --depth 6 --width 128 --ranks 36 64 64 --steps 1500 --out runs/pre
    tucker-init init --template runs/pre/template.safetensors --depth 3 --width 64 --out runs/L3w64.safetensors
    tucker-init finetune --weights runs/L3w64.safetensors --steps 300 --out runs/ft-L3w64
    tucker-init evaluate --weights runs/ft-L3w64/model.safetensors
    tucker-init demo

Every command prints where it wrote its outputs; training commands write metrics as JSON
lines and a checkpoint that ``--resume`` continues from. ``--config run.yaml`` reads options
from a file (command-line flags override it) and each command that writes outputs leaves its
resolved options as ``args.yaml`` there (:mod:`tucker_init.run_config`). Under ``torchrun`` the training
commands run data-parallel (``--batch-size`` is the global batch).

A user error (a bad option value, an option the command would ignore, a missing or wrong
file, a setting the library refuses) prints one line ``tucker-init: error: ...`` and exits
with status 2; other errors keep their traceback (set ``TUCKER_INIT_TRACEBACK=1`` to see
one for user errors too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["build_parser", "main"]

PROG = "tucker-init"
# Sizes of the families when --depth / --width are not given (a plain timm name has its own).
CLI_SIZES = {"vit": (6, 128), "resnet": (2, 32), "resnetd": (2, 32), "convnext": (2, 32), "swin": (2, 64)}
PATCHED = ("vit", "swin")  # families that take --patch-size
MODEL_OPTIONS = ("model", "depth", "width", "num_classes", "img_size", "patch_size")


def fail(message: object) -> NoReturn:
    """Print ``tucker-init: error: MESSAGE`` (folded into one line) on stderr and exit with 2."""
    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    sys.stderr.write(f"{PROG}: error: {line}\n")
    raise SystemExit(2)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the one line of :func:`fail` (no usage block)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        fail(f"{command}: {message} (see {self.prog} --help)" if command else f"{message} (see {PROG} --help)")


def _checked(cast: Callable[[str], Any], expected: str, ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse ``type`` that casts and checks, saying what was expected and found."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
        return value

    return parse


POSITIVE_INT = _checked(int, "a positive int", lambda v: v > 0)
COUNT = _checked(int, "an int >= 0", lambda v: v >= 0)
POSITIVE = _checked(float, "a positive number", lambda v: math.isfinite(v) and v > 0)
OPEN_UNIT = _checked(float, "a number in (0, 1)", lambda v: 0 < v < 1)
HALF_OPEN_UNIT = _checked(float, "a number in [0, 1)", lambda v: 0 <= v < 1)
COUNT_FLOAT = _checked(float, "a number >= 0", lambda v: math.isfinite(v) and v >= 0)


def _size_pair(text: str) -> tuple[int, int] | None:
    """``"3x64"`` -> ``(3, 64)``; None when the text is not of that form."""
    depth, sep, width = text.partition("x")
    return (int(depth), int(width)) if sep and depth.isdigit() and width.isdigit() else None


def _add_model(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help="vit | resnet | resnetd | convnext (sized by --depth/--width) or any timm model name "
        "(e.g. resnet18; its own size), default vit",
    )
    g.add_argument(
        "--depth", type=POSITIVE_INT, default=None, help="blocks (ViT) or blocks per stage; default 6 (vit), 2"
    )
    g.add_argument(
        "--width",
        type=POSITIVE_INT,
        default=None,
        help="ViT width (64 * heads) or CNN first-stage width; default 128 (vit), 32",
    )
    g.add_argument("--num-classes", type=POSITIVE_INT, default=None, help="default 10")
    g.add_argument("--img-size", type=POSITIVE_INT, default=None, help="input images are resized to this (default 32)")
    g.add_argument("--patch-size", type=POSITIVE_INT, default=None, help="ViT patch size (default 4 for vit)")


def _add_data(p: argparse.ArgumentParser) -> None:
    from .training.data import list_datasets

    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default=None,
        help=f"one of {list_datasets()}; default: fashion_mnist when installed, else digits",
    )
    g.add_argument("--data-root", default=None, help="explicit folder of the data set (overrides the lookup)")


def _add_run(p: argparse.ArgumentParser, *, kind: str, steps: int, batch: int) -> None:
    from .training.recipes import get_recipe, list_recipes

    default = f"small_{kind}"
    g = p.add_argument_group("run")
    g.add_argument("--steps", type=POSITIVE_INT, default=steps, help=f"optimizer steps (default {steps})")
    g.add_argument("--batch-size", type=POSITIVE_INT, default=batch, help=f"global batch size (default {batch})")
    g.add_argument(
        "--recipe",
        default=default,
        choices=list_recipes(kind),
        # argparse %-formats help strings; a recipe's description may say "10 % warm-up"
        help=f"named hyper-parameters (default {default}: {get_recipe(default).description})".replace("%", "%%"),
    )
    g.add_argument("--lr", type=POSITIVE, default=None, help="peak learning rate (default: the recipe's, scaled)")
    g.add_argument("--warmup-steps", type=COUNT, default=None, help="linear warm-up steps (default: the recipe's)")
    g.add_argument("--seed", type=COUNT, default=0)
    g.add_argument("--device", default="auto", help="cpu | cuda | auto (default)")
    g.add_argument("--workers", type=COUNT, default=None, help="DataLoader processes for --data image_folder")
    g.add_argument("--compile", default=None, metavar="BACKEND", help="torch.compile the model (e.g. inductor)")
    g.add_argument("--channels-last", action="store_true", help="channels_last memory format (CNNs on GPUs)")
    g.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard")
    g.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (refused if a setting changed)")


def _engine(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """TrainConfig fields set on the command line (those left unset keep the recipe's)."""
    values = {"compile": args.compile, "channels_last": args.channels_last or None}
    values |= {name: getattr(args, name) for name in names}
    return {k: v for k, v in values.items() if v is not None}


def _add_pretrain(sub: Any) -> None:
    from .resize.plan import PLAN_DEPTH_RULES
    from .templates.kinds import list_kinds

    p = sub.add_parser("pretrain", help="pre-train a weight template (masked image modeling or distillation)")
    _add_model(p)
    _add_data(p)
    _add_run(p, kind="pretrain", steps=1500, batch=128)
    p.add_argument(
        "--ranks",
        type=POSITIVE_INT,
        nargs=3,
        default=None,
        metavar=("R1", "R2", "R3"),
        help="Tucker ranks (depth, out width, in width); Kronecker: (k, a, b); default 36 64 64",
    )
    p.add_argument("--method", default=None, choices=list_kinds(), help="template kind (default tucker)")
    p.add_argument(
        "--scaling",
        default=None,
        choices=["off", "prefix", "rank", "subnet"],
        help="width-wise stochastic scaling of the Tucker scalers (default off: prefix and rank did not help in "
        "experiments/stochastic_scaling.py); subnet: also train real smaller models built from the template",
    )
    p.add_argument(
        "--subnet-sizes",
        type=_checked(_size_pair, "DEPTHxWIDTH, e.g. 3x64", lambda v: v[0] > 0 and v[1] > 0),
        nargs="+",
        default=None,
        metavar="DxW",
        help="--scaling subnet: the smaller sizes (default half depth and / or half width)",
    )
    p.add_argument("--sandwich", action="store_true", help="--scaling subnet: smallest + one random size per step")
    p.add_argument(
        "--subnet-depth",
        default="select",
        choices=list(PLAN_DEPTH_RULES),
        help="--scaling subnet: the depth rule of the shallower sizes (initialize targets with the same)",
    )
    p.add_argument("--dense", action="store_true", help="pre-train a dense model instead (the MAE baseline)")
    p.add_argument("--mask-ratio", type=OPEN_UNIT, default=None, help="default: the recipe's (0.75)")
    g = p.add_argument_group("objective")
    g.add_argument("--objective", default=None, choices=["mae", "distill"], help="default mae (distill: --teacher)")
    g.add_argument("--teacher", default=None, metavar="PATH|TIMM_NAME", help="dense model file or timm name to distill")
    g.add_argument("--distill-target", default=None, choices=["features", "logits", "both"], help="default features")
    g.add_argument("--temperature", type=POSITIVE, default=None, help="of the logit distillation (default 1)")
    g.add_argument(
        "--init-from",
        default=None,
        metavar="PATH|TIMM_NAME",
        help="compress, then refine: start the template from the HOSVD of this dense model of --model's size",
    )
    p.add_argument("--max-time", type=POSITIVE, default=None, help="stop after this many seconds (resumable)")
    p.add_argument("--out", required=True, help="output folder (template.safetensors, last.pt, metrics.jsonl)")


def _add_init(sub: Any) -> None:
    from .resize.axis_maps import DEPTH_RULES, WIDTH_RULES

    p = sub.add_parser("init", help="initialize a model of any size from a template")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--template", help="a template file from `pretrain`")
    source.add_argument(
        "--from-dense",
        metavar="MODEL",
        help="a dense model instead (a model file from `pretrain --dense` / `finetune`, or a timm name with "
        "pre-trained weights), held by its lossless template; with --depth-rule first --width-rule select it is "
        "weight selection's model",
    )
    _add_model(p)
    p.add_argument("--depth-rule", default="interpolate", choices=list(DEPTH_RULES))
    p.add_argument("--width-rule", default="slice", choices=list(WIDTH_RULES))
    p.add_argument(
        "--learn-steps", type=COUNT, default=0, help="learn the new scalers for this many steps first (on --data)"
    )
    _add_data(p)
    p.add_argument("--seed", type=COUNT, default=0)
    p.add_argument("--out", required=True, help="the initialized model file (.safetensors)")


def _add_finetune(sub: Any) -> None:
    p = sub.add_parser("finetune", help="fine-tune a classifier (from an initialized model file or random init)")
    p.add_argument("--weights", default=None, help="model file from `init`; omit for random init of --model")
    _add_model(p)
    _add_data(p)
    _add_run(p, kind="finetune", steps=300, batch=64)
    g = p.add_argument_group("regularization (default: the recipe's)")
    g.add_argument("--label-smoothing", type=HALF_OPEN_UNIT, default=None)
    g.add_argument("--layer-decay", type=OPEN_UNIT, default=None, help="layer-wise lr decay, e.g. 0.65")
    g.add_argument("--ema-decay", type=OPEN_UNIT, default=None, help="keep and evaluate a model EMA")
    g.add_argument("--mixup", type=COUNT_FLOAT, default=None, help="mixup alpha (0 disables)")
    g.add_argument("--cutmix", type=COUNT_FLOAT, default=None, help="cutmix alpha (0 disables)")
    g.add_argument("--drop-path", type=HALF_OPEN_UNIT, default=None, help="stochastic depth rate")
    p.add_argument("--eval-every", type=COUNT, default=0, help="evaluate every N steps (0: only at the end)")
    p.add_argument("--out", required=True, help="output folder (model.safetensors, last.pt, metrics.jsonl)")


def build_parser() -> argparse.ArgumentParser:
    """The ``tucker-init`` parser; options that a command may ignore default to ``None``, so
    that "given by the user" can be told apart from "left at the default"."""
    parser = _Parser(
        prog=PROG,
        description="Learn a weight template once; initialize vision models of any depth and width from it.",
        epilog="Start with `tucker-init demo`. Each command has its own --help.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_pretrain(sub)
    _add_init(sub)
    _add_finetune(sub)

    p = sub.add_parser("evaluate", help="top-1 accuracy of a model file on the test split")
    p.add_argument("--weights", required=True)
    _add_data(p)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=256)

    p = sub.add_parser("demo", help="the end-to-end demo: pre-train, initialize 3 sizes, fine-tune, table, plots")
    p.add_argument("--quick", action="store_true", help="a shorter run (about a minute)")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--seed", type=COUNT, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default=None)
    for command in sub.choices.values():
        command.add_argument(
            "--config",
            metavar="YAML",
            help="options from a YAML file (keys = option names); flags given here override it",
        )
    return parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers by name."""
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


# -- from options to library arguments -------------------------------------------------------------
def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _refuse(args: argparse.Namespace, names: Sequence[str], why: str) -> None:
    """Fail when any option of ``names`` was given (is not ``None``): ``why`` it would be ignored."""
    given = [_option(n) for n in names if getattr(args, n, None) is not None]
    if given:
        fail(f"{', '.join(given)}: {why}")


def _spec(args: argparse.Namespace):
    """The :class:`~tucker_init.pipeline.ModelSpec` of the model options, family defaults filled in."""
    from .pipeline import ModelSpec

    family = "vit" if args.model is None else args.model
    num_classes = 10 if args.num_classes is None else args.num_classes
    img_size = 32 if args.img_size is None else args.img_size
    if family not in CLI_SIZES:
        _refuse(args, ("depth", "width"), f"depth/width apply to the families {list(CLI_SIZES)}, not to {family!r}")
        return ModelSpec(family, None, None, num_classes, img_size, args.patch_size)
    if family not in PATCHED:
        _refuse(args, ("patch_size",), f"applies to {' and '.join(PATCHED)} models, not to {family!r}")
    depth, width = CLI_SIZES[family]
    depth = depth if args.depth is None else args.depth
    width = width if args.width is None else args.width
    patch_size = 4 if args.patch_size is None else args.patch_size
    return ModelSpec(family, depth, width, num_classes, img_size, patch_size)


def _data(args: argparse.Namespace) -> str:
    from .training.data import default_dataset

    return default_dataset() if args.data is None else args.data


def _pretrain(args: argparse.Namespace) -> None:
    from . import pipeline
    from .templates.kinds import get_kind

    if args.dense:
        _refuse(args, ("ranks", "method", "scaling"), "a --dense run has no template (these shape one)")
    if args.method is not None and args.scaling not in (None, "off") and not get_kind(args.method).width_scaling:
        fail(f"--scaling {args.scaling}: stochastic scaling applies to Tucker scalers, not to --method {args.method}")
    objective = "mae" if args.objective is None else args.objective
    if objective == "mae":
        _refuse(args, ("teacher", "distill_target", "temperature"), "apply to --objective distill")
    elif args.teacher is None:
        fail("--objective distill needs --teacher PATH|TIMM_NAME (the dense model to distill)")
    else:
        _refuse(args, ("mask_ratio",), "applies to --objective mae")
    spec = _spec(args)
    result = pipeline.pretrain(
        spec,
        _data(args),
        args.out,
        ranks=(36, 64, 64) if args.ranks is None else tuple(args.ranks),
        method="tucker" if args.method is None else args.method,
        scaling="off" if args.scaling is None else args.scaling,
        dense=args.dense,
        objective=objective,
        teacher=args.teacher,
        distill_target="features" if args.distill_target is None else args.distill_target,
        temperature=1.0 if args.temperature is None else args.temperature,
        init_from=args.init_from,
        subnet_sizes=args.subnet_sizes,
        sandwich=args.sandwich,
        subnet_depth=args.subnet_depth,
        steps=args.steps,
        batch_size=args.batch_size,
        recipe=args.recipe,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        mask_ratio=args.mask_ratio,
        seed=args.seed,
        device=args.device,
        resume=args.resume,
        max_time_s=args.max_time,
        data_root=args.data_root,
        workers=args.workers,
        engine=_engine(args),
        tensorboard=args.tensorboard,
    )
    print(f"step {result.train.step}/{result.train.total_steps} ({result.train.stopped}); wrote {result.path}")


def _init(args: argparse.Namespace) -> None:
    from . import pipeline

    if args.learn_steps == 0:
        _refuse(args, ("data", "data_root"), "used only with --learn-steps > 0 (to learn the scalers)")
        learned = [f"--{k}-rule learn" for k in ("depth", "width") if getattr(args, f"{k}_rule") == "learn"]
        if learned:
            fail(f"{', '.join(learned)}: needs --learn-steps > 0 (and --data) to learn the scalers, found 0")
    if Path(args.out).suffix != ".safetensors":
        fail(f"--out must be a .safetensors file path, found {args.out!r}")
    pipeline.check_model_path(args.out)
    spec = _spec(args)
    model, report = pipeline.init_model(
        spec,
        _init_source(args),
        depth=args.depth_rule,
        width=args.width_rule,
        learn_steps=args.learn_steps,
        data_root=args.data_root,
        data=args.data,
        seed=args.seed,
    )
    path = pipeline.save_model(args.out, model, spec)
    print(report)
    print(f"wrote {path}")


def _init_source(args: argparse.Namespace) -> Any:
    """The template file of ``--template``, or the lossless template of ``--from-dense``."""
    from . import pipeline

    if args.template is None:
        return pipeline.lossless_template(args.from_dense, "--from-dense")
    template = Path(args.template)
    if not template.is_file():
        fail(f"--template {args.template!r}: " + ("is a folder" if template.is_dir() else "no such file"))
    return template


def _finetune(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from . import pipeline

    out = pipeline.check_run_dir(args.out, "finetune", args.resume)
    pipeline.check_model_path(out / "model.safetensors")
    from .training.recipes import get_recipe

    drop_path = get_recipe(args.recipe).drop_path if args.drop_path is None else args.drop_path
    built = {"drop_path_rate": drop_path} if drop_path else {}
    if args.weights is not None:
        _refuse(args, MODEL_OPTIONS, "the model comes from --weights (its file records the model)")
        model, spec = pipeline.load_model(args.weights, **built)
    else:
        spec = _spec(args)
        model = spec.build(**built)
    weights = None if args.weights is None else str(Path(args.weights).resolve())
    result = pipeline.finetune_model(
        model,
        _data(args),
        steps=args.steps,
        batch_size=args.batch_size,
        recipe=args.recipe,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        label_smoothing=args.label_smoothing,
        eval_every=args.eval_every,
        seed=args.seed,
        device=args.device,
        out_dir=out,
        resume=args.resume,
        image_size=spec.img_size,
        data_root=args.data_root,
        job={**asdict(spec), "weights": weights, "drop_path": drop_path},
        workers=args.workers,
        engine=_engine(args, "layer_decay", "ema_decay", "mixup", "cutmix"),
        tensorboard=args.tensorboard,
    )
    path = pipeline.save_model(out / "model.safetensors", model, spec)
    print(json.dumps({"step": result.step, "final": result.final_eval}))
    print(f"wrote {path}")


def _evaluate(args: argparse.Namespace) -> None:
    from . import pipeline
    from .training import evaluate

    model, spec = pipeline.load_model(args.weights)
    _, test_loader = pipeline.make_loaders(
        _data(args), args.batch_size, image_size=spec.img_size, augment=False, root=args.data_root
    )
    print(json.dumps(evaluate(model, test_loader)))


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, device=args.device, data=args.data)


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "pretrain": _pretrain,
    "init": _init,
    "finetune": _finetune,
    "evaluate": _evaluate,
    "demo": _demo,
}


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the input was wrong": reported in one line, not a traceback."""
    from .training import NonFiniteLossError

    files = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
    return (ValueError, TypeError, NonFiniteLossError, *files)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; user errors exit with status 2 and one line on stderr (see the module doc)."""
    from .run_config import expand_config

    parser = build_parser()
    try:
        argv = expand_config(sys.argv[1:] if argv is None else argv, _commands(parser))
    except (ValueError, FileNotFoundError) as err:
        fail(err)
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](args)
        _save_args(args)
    except _user_errors() as err:
        if os.environ.get("TUCKER_INIT_TRACEBACK"):
            raise
        fail(err)
    return 0


def _save_args(args: argparse.Namespace) -> None:
    """The resolved options beside a finished command's outputs (``--config`` repeats the run):
    ``OUT/args.yaml`` for folders, ``NAME.args.yaml`` beside an ``init`` model file."""
    from .run_config import write_args_yaml

    if args.command in ("pretrain", "finetune", "demo"):
        write_args_yaml(args, args.out)
    elif args.command == "init":
        out = Path(args.out)
        write_args_yaml(args, out.parent, f"{out.stem}.args.yaml")


if __name__ == "__main__":
    sys.exit(main())
