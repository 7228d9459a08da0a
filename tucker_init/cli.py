"""Command line: ``tucker-init`` (or ``python -m tucker_init``).

    tucker-init pretrain --model vit --depth 6 --width 128 --ranks 36 64 64 --steps 1500 --out runs/pre
    tucker-init init --template runs/pre/template.safetensors --depth 3 --width 64 --out runs/L3w64.safetensors
    tucker-init finetune --weights runs/L3w64.safetensors --steps 300 --out runs/ft-L3w64
    tucker-init evaluate --weights runs/ft-L3w64/model.safetensors
    tucker-init demo

Every command prints where it wrote its outputs; training commands write metrics as JSON
lines and a checkpoint that ``--resume`` continues from. Under ``torchrun`` the training
commands run data-parallel (``--batch-size`` is the global batch).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def _add_model(p: argparse.ArgumentParser, *, required_size: bool = False) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model", default="vit", help="vit | resnet | resnetd | convnext (sized by --depth/--width), default vit"
    )
    g.add_argument("--depth", type=int, default=None if required_size else 6, help="blocks (ViT) or blocks per stage")
    g.add_argument("--width", type=int, default=None if required_size else 128, help="ViT width (64 * heads)")
    g.add_argument("--num-classes", type=int, default=10)
    g.add_argument("--img-size", type=int, default=32, help="input images are resized to this (default 32)")
    g.add_argument("--patch-size", type=int, default=4, help="ViT patch size (default 4)")


def _add_data(p: argparse.ArgumentParser) -> None:
    from .data import list_datasets

    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default=None,
        help=f"one of {list_datasets()}; default: fashion_mnist when installed, else digits",
    )
    g.add_argument("--data-root", default=None, help="explicit folder of the data set (overrides the lookup)")


def _add_run(p: argparse.ArgumentParser, *, steps: int, batch: int, lr: float) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--steps", type=int, default=steps, help=f"optimizer steps (default {steps})")
    g.add_argument("--batch-size", type=int, default=batch, help=f"global batch size (default {batch})")
    g.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="cpu | cuda | auto (default)")
    g.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tucker-init",
        description="Learn a weight template once; initialize vision models of any depth and width from it.",
        epilog="Start with `tucker-init demo`. Each command has its own --help.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pretrain", help="pre-train a weight template with masked image modeling")
    _add_model(p)
    _add_data(p)
    _add_run(p, steps=1500, batch=128, lr=1.5e-3)
    p.add_argument(
        "--ranks",
        type=int,
        nargs=3,
        default=(36, 64, 64),
        metavar=("R1", "R2", "R3"),
        help="Tucker ranks (depth, out width, in width); Kronecker: (k, a, b)",
    )
    p.add_argument("--method", default="tucker", choices=["tucker", "kronecker"])
    p.add_argument(
        "--scaling",
        default="off",
        choices=["off", "prefix", "rank"],
        help="width-wise stochastic scaling of the scalers (default off: prefix and rank did not help in "
        "experiments/stochastic_scaling.py)",
    )
    p.add_argument("--dense", action="store_true", help="pre-train a dense model instead (the MAE baseline)")
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--max-time", type=float, default=None, help="stop after this many seconds (resumable)")
    p.add_argument("--out", required=True, help="output folder (template.safetensors, last.pt, metrics.jsonl)")

    p = sub.add_parser("init", help="initialize a model of any size from a template")
    p.add_argument("--template", required=True, help="a template file from `pretrain`")
    _add_model(p)
    p.add_argument("--depth-rule", default="interpolate", choices=["select", "interpolate", "learn"])
    p.add_argument("--width-rule", default="slice", choices=["slice", "interpolate", "learn"])
    p.add_argument("--learn-steps", type=int, default=0, help="learn the new scalers for this many steps first")
    _add_data(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the initialized model file (.safetensors)")

    p = sub.add_parser("finetune", help="fine-tune a classifier (from an initialized model file or random init)")
    p.add_argument("--weights", default=None, help="model file from `init`; omit for random init of --model")
    _add_model(p)
    _add_data(p)
    _add_run(p, steps=300, batch=64, lr=1e-3)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: only at the end)")
    p.add_argument("--out", required=True, help="output folder (model.safetensors, last.pt, metrics.jsonl)")

    p = sub.add_parser("evaluate", help="top-1 accuracy of a model file on the test split")
    p.add_argument("--weights", required=True)
    _add_data(p)
    p.add_argument("--batch-size", type=int, default=256)

    p = sub.add_parser("demo", help="the end-to-end demo: pre-train, initialize 3 sizes, fine-tune, table, plots")
    p.add_argument("--quick", action="store_true", help="a shorter run (about a minute)")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default=None)
    return parser


def _spec(args: argparse.Namespace):
    from .pipeline import ModelSpec

    return ModelSpec(args.model, args.depth, args.width, args.num_classes, args.img_size, args.patch_size)


def _data(args: argparse.Namespace) -> str:
    from .data import default_dataset

    return args.data or default_dataset()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import pipeline

    if args.command == "pretrain":
        result = pipeline.pretrain(
            _spec(args),
            _data(args),
            args.out,
            ranks=tuple(args.ranks),
            method=args.method,
            scaling=args.scaling,
            dense=args.dense,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            mask_ratio=args.mask_ratio,
            seed=args.seed,
            device=args.device,
            resume=args.resume,
            max_time_s=args.max_time,
            data_root=args.data_root,
        )
        print(f"step {result.train.step}/{result.train.total_steps} ({result.train.stopped}); wrote {result.path}")
    elif args.command == "init":
        model, report = pipeline.init_model(
            _spec(args),
            args.template,
            depth=args.depth_rule,
            width=args.width_rule,
            learn_steps=args.learn_steps,
            data_root=args.data_root,
            data=args.data or None,
            seed=args.seed,
        )
        path = pipeline.save_model(args.out, model, _spec(args))
        print(report)
        print(f"wrote {path}")
    elif args.command == "finetune":
        if args.weights:
            model, spec = pipeline.load_model(args.weights)
        else:
            spec = _spec(args)
            model = spec.build()
        result = pipeline.finetune_model(
            model,
            _data(args),
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            label_smoothing=args.label_smoothing,
            eval_every=args.eval_every,
            seed=args.seed,
            device=args.device,
            out_dir=args.out,
            resume=args.resume,
            image_size=spec.img_size,
            data_root=args.data_root,
        )
        path = pipeline.save_model(Path(args.out) / "model.safetensors", model, spec)
        print(json.dumps({"step": result.step, "final": result.final_eval}))
        print(f"wrote {path}")
    elif args.command == "evaluate":
        from .train import evaluate

        model, spec = pipeline.load_model(args.weights)
        _, test_loader = pipeline.make_loaders(
            _data(args), args.batch_size, image_size=spec.img_size, augment=False, root=args.data_root
        )
        print(json.dumps(evaluate(model, test_loader)))
    elif args.command == "demo":
        from .demo import run_demo

        run_demo(args.out, quick=args.quick, seed=args.seed, device=args.device, data=args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
