"""Helpers shared by the ablation scripts ``stochastic_scaling.py``, ``rank_sweep.py`` and
``mae_vs_supervised.py``: command line, settings, caching and progress, data subsets, MAE
pre-training, target construction, linear probe, fine-tuning and the noise margin of a comparison.

Each script keeps its own ``Setting`` dataclass; the helpers read only the fields named in
:class:`AblationSetting`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the library importable without installing it
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from tucker_init.data import BatchLoader, ImageDataset, load_dataset  # noqa: E402
from tucker_init.initialize import initialize  # noqa: E402
from tucker_init.mae import masked_model_for  # noqa: E402
from tucker_init.pipeline import ModelSpec, load_model  # noqa: E402
from tucker_init.stochastic import WidthScaling  # noqa: E402
from tucker_init.train import TrainConfig, finetune, masked_image_loss, train  # noqa: E402
from tucker_init.training.recipes import get_recipe  # noqa: E402


class AblationSetting(Protocol):
    """The fields of a script's ``Setting`` that the shared helpers read."""

    @property
    def data(self) -> str: ...
    @property
    def img_size(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def pretrain_steps(self) -> int: ...
    @property
    def pretrain_subset(self) -> int | None: ...
    @property
    def pretrain_lr(self) -> float: ...
    @property
    def finetune_steps(self) -> int: ...
    @property
    def finetune_lr(self) -> float: ...
    @property
    def train_subset(self) -> int | None: ...
    @property
    def test_subset(self) -> int | None: ...
    @property
    def decoder(self) -> tuple[int, int, int]: ...


S = TypeVar("S")


# -- command line and settings -----------------------------------------------------------------------
def make_parser(
    doc: str | None,
    name: str,
    *,
    data_help: str = "override the data set (fashion_mnist, digits, mnist, ...)",
    pretrain_help: str = "override the MAE steps",
    finetune_help: str = "override the fine-tuning steps",
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """The common command line; ``extra`` adds a script's own options before ``--device``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="minutes on 2 CPU cores, 1 seed")
    size.add_argument("--smoke", action="store_true", help="seconds, tiny data: for the tests")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the setting's seeds")
    parser.add_argument("--data", help=data_help)
    parser.add_argument("--pretrain-steps", type=int, help=pretrain_help)
    parser.add_argument("--finetune-steps", type=int, help=finetune_help)
    if extra is not None:
        extra(parser)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: these models are too small to gain from more, and on a shared "
        "2-core machine 2 threads ran ~5x slower than 1); 0 = torch's default",
    )
    parser.add_argument("--out", type=Path, help=f"output folder (default results/{name}/<setting>)")
    return parser


def run_main(
    argv: list[str] | None,
    parse_args: Callable[[list[str]], argparse.Namespace],
    run: Callable[[argparse.Namespace, list[str]], int],
) -> int:
    """Parse ``argv`` (``None``: ``sys.argv[1:]``) and call ``run`` with ``--threads`` torch threads,
    restoring torch's thread count afterwards (process-wide setting: tests call ``main()``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return run(args, argv)
    finally:
        torch.set_num_threads(threads)


def resolve_setting(settings: dict[str, S], args: argparse.Namespace, **overrides: Any) -> S:
    """The setting named by ``--smoke`` / ``--quick`` (else ``full``) with the command-line overrides
    (``--seeds``, ``--data``, ``--pretrain-steps``, ``--finetune-steps`` and ``overrides``) that are set."""
    setting = settings["smoke" if args.smoke else "quick" if args.quick else "full"]
    changes = {
        "seeds": tuple(args.seeds) if args.seeds else None,
        "data": args.data,
        "pretrain_steps": args.pretrain_steps,
        "finetune_steps": args.finetune_steps,
        **overrides,
    }
    return dataclasses.replace(setting, **{k: v for k, v in changes.items() if v is not None})


# -- provenance, caching, progress -------------------------------------------------------------------
def command_string(name: str, argv: list[str]) -> str:
    """The exact command that reproduces this run of ``experiments/<name>.py``."""
    return shlex.join(["python", f"experiments/{name}.py", *argv])


def git_revision() -> str:
    """Short commit of the repository, ``-dirty`` when the working tree has changes; "unknown" without git."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def settings_hash(setting: Any) -> str:
    """Ten hex digits of the SHA-1 of a settings dataclass (the cache folder name)."""
    return hashlib.sha1(json.dumps(dataclasses.asdict(setting), sort_keys=True).encode()).hexdigest()[:10]


def cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()`` once: its JSON result is stored at ``path`` and read back on later runs."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)  # atomic: a half-written file never counts as done
    return result


def cached_weights(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """:func:`cached` with the JSON next to the weights ``compute()`` writes to ``path``; redone when
    the JSON survived but the weights did not."""
    marker = path.with_suffix(".json")
    if marker.is_file() and not path.is_file():
        marker.unlink()
    return cached(marker, compute)


class Progress:
    """Prints each stage with elapsed time and an ETA from a cost model of the remaining work."""

    def __init__(self, name: str, total_cost: float) -> None:
        self.name = name
        self.total = max(total_cost, 1e-9)
        self.done = 0.0
        self.start = time.perf_counter()

    def stage(self, text: str) -> None:
        elapsed = time.perf_counter() - self.start
        frac = self.done / self.total
        eta = f", ~{elapsed / frac * max(1 - frac, 0) / 60:.1f} min left" if 0.02 < frac < 1 else ""
        print(f"[{self.name} {elapsed / 60:5.1f} min{eta}] {text}", flush=True)

    def advance(self, cost: float) -> None:
        self.done += cost


def step_seconds(width: int, depth: int, tokens: int, batch: int, kind: str = "train") -> float:
    """Rough seconds per optimizer step with 1 CPU thread on the (shared) machine this was calibrated on
    (a block has 12 d x d slices; ~40 GFLOP/s effective, plus a fixed overhead). Only used for estimates.
    ``kind``: ``"train"``, ``"mae"`` or ``"frozen"`` (encoder forward only)."""
    if kind == "mae":  # the encoder sees a quarter of the tokens; the light decoder costs about as much
        tokens = max(1, tokens // 4) * 2
    if kind == "frozen":  # forward only through the encoder
        batch = max(1, batch // 3)
    return 0.02 + 6 * 12 * width * width * depth * tokens * batch / 4e10


# -- data ----------------------------------------------------------------------------------------------
def subset(ds: ImageDataset, n: int | None, seed: int) -> ImageDataset:
    """A seeded subset of ``n`` images (all of ``ds`` when ``n`` is None or larger)."""
    return ds.subset(min(n, len(ds)), seed=seed) if n else ds


@dataclasses.dataclass(frozen=True)
class Splits:
    """The full train / test splits and the subsets every run uses (fixed across run seeds)."""

    full_train: ImageDataset
    full_test: ImageDataset
    pretrain: ImageDataset  # subset seed 0
    train: ImageDataset  # subset seed 1
    test: ImageDataset  # subset seed 2


def load_splits(setting: AblationSetting) -> Splits:
    """``setting.data``'s splits with the ``pretrain_subset`` / ``train_subset`` / ``test_subset`` subsets."""
    full_train, full_test = load_dataset(setting.data, "train"), load_dataset(setting.data, "test")
    return Splits(
        full_train,
        full_test,
        subset(full_train, setting.pretrain_subset, 0),
        subset(full_train, setting.train_subset, 1),
        subset(full_test, setting.test_subset, 2),
    )


# -- pre-training -------------------------------------------------------------------------------------
def pretrain_config(setting: AblationSetting, seed: int, device: str) -> TrainConfig:
    """The ``small_pretrain`` recipe (AdamW, 10 % warm-up + cosine, weight decay 0.05) for
    ``setting.pretrain_steps`` steps at the setting's lr."""
    steps = setting.pretrain_steps
    return get_recipe("small_pretrain").train_config(
        steps, setting.batch_size, lr=setting.pretrain_lr, seed=seed, device=device, log_every=max(1, steps // 5)
    )


def masked_model(encoder: nn.Module, decoder: tuple[int, int, int]) -> nn.Module:
    """The MAE wrapper of ``encoder``: mask ratio 0.75, decoder ``(dim, depth, heads)``."""
    dim, depth, heads = decoder
    return masked_model_for(encoder, mask_ratio=0.75, decoder_dim=dim, decoder_depth=depth, decoder_heads=heads)


def train_mae(
    encoder: nn.Module,
    data: ImageDataset,
    setting: AblationSetting,
    img_size: int,
    seed: int,
    device: str,
    hook: WidthScaling | None,
) -> dict[str, Any]:
    """MAE pre-training of ``encoder`` in place (``hook``: width scaling, or None); returns the final
    train loss, the held-out MAE loss (encoder in eval mode, as it will be used) and the seconds."""
    mae = masked_model(encoder, setting.decoder)
    loader = BatchLoader(data, setting.batch_size, image_size=img_size, augment=True, seed=seed)
    config = pretrain_config(setting, seed, device)
    result = train(mae, loader, masked_image_loss, config, before_step=hook.set_step if hook else None)
    mae.cpu().eval()  # eval: the scaling hook is off, the template is scored as it will be used
    held_out = mae_loss(mae, data, img_size, seed)
    return {"pretrain_loss": result.loss, "mae_heldout_loss": held_out, "seconds": result.elapsed_s}


@torch.no_grad()
def mae_loss(mae: nn.Module, data: ImageDataset, img_size: int, seed: int, n: int = 512) -> float:
    """Masked-patch MSE on ``n`` un-augmented images with fixed masks (lower = better reconstruction)."""
    held_out = data.subset(min(n, len(data)), seed=seed + 7)
    loader = BatchLoader(held_out, min(128, len(held_out)), image_size=img_size, shuffle=False, drop_last=False)
    gen = torch.Generator().manual_seed(seed)
    losses = [float(mae(x, generator=gen).loss) * len(x) for x, _ in loader]
    return sum(losses) / len(held_out)


# -- targets, probe, fine-tuning -------------------------------------------------------------------
def build_target(spec: ModelSpec, init: str, path: Path | None, seed: int, *, reset_head: bool = False) -> nn.Module:
    """A target of ``spec``: timm's init (``"random"``), the dense model saved at ``path`` (``"dense"``),
    or initialized from the template at ``path`` (with the head reset to timm's init if ``reset_head``)."""
    torch.manual_seed(seed)  # the same timm init under every method: fresh channels match the twin
    model = spec.build()
    if init == "dense":
        dense, _ = load_model(path)
        model.load_state_dict(dense.state_dict())
    elif init != "random":
        head = copy.deepcopy(model.head.state_dict()) if reset_head else None
        initialize(model, path, depth="interpolate", width="slice", seed=seed)
        if head is not None:
            model.head.load_state_dict(head)  # no trained classifier handed over
    return model


@torch.no_grad()
def pooled_features(model: nn.Module, data: ImageDataset, img_size: int) -> Tensor:
    """Mean of the patch tokens after the final norm (the usual MAE linear-probe feature), float64."""
    model.eval()
    loader = BatchLoader(data, min(256, len(data)), image_size=img_size, shuffle=False, drop_last=False)
    feats = [model.forward_features(x)[:, model.num_prefix_tokens :].mean(1) for x, _ in loader]
    return torch.cat(feats).double()


def linear_probe(model: nn.Module, train_set: ImageDataset, test_set: ImageDataset, img_size: int) -> float:
    """Top-1 (percent) of a multinomial logistic regression on standardized frozen features of the
    initialized encoder: full-batch L-BFGS with the L2 penalty of scikit-learn's default (C = 1), in
    torch because scikit-learn's solver took ~20 s per probe on the shared CPU."""
    x_train, x_test = pooled_features(model, train_set, img_size), pooled_features(model, test_set, img_size)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_train, y_test = train_set.labels, test_set.labels
    classes = int(max(y_train.max(), y_test.max())) + 1
    weight = torch.zeros(x_train.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x_train @ weight + bias, y_train) + 0.5 * weight.pow(2).sum() / len(x_train)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return 100.0 * float(((x_test @ weight + bias).argmax(1) == y_test).double().mean())


def block_norm_ratio(model: nn.Module, reference: nn.Module) -> float:
    """Frobenius norm of the block matrices (qkv, proj, fc1, fc2: the templated weights) of ``model``
    over those of ``reference`` (the same architecture at timm's init). A low-rank template reconstructs
    smaller weights than timm's init, which slows early fine-tuning."""
    ref = dict(reference.named_parameters())

    def total(params: dict[str, Tensor]) -> float:
        return sum(
            float(v.detach().double().pow(2).sum())
            for k, v in params.items()
            if k.startswith("blocks.") and v.ndim == 2
        )

    return math.sqrt(total(dict(model.named_parameters())) / total(ref))


def finetune_classifier(
    model: nn.Module,
    train_set: ImageDataset,
    test_set: ImageDataset,
    setting: AblationSetting,
    seed: int,
    device: str,
    *,
    eval_points: int | None = None,
) -> dict[str, Any]:
    """Fine-tune all weights (AdamW, warm-up + cosine, label smoothing 0.1); top-1 on ``test_set``.
    With ``eval_points``, also the top-1 curve at that many points (``"curve"``).

    The loaders are built here from data sets loaded once per script (``pipeline.finetune_model`` loads
    a named data set again on every call, ~3 s for Fashion-MNIST) and keep the test subset fixed.
    """
    steps = setting.finetune_steps
    train_loader = BatchLoader(train_set, setting.batch_size, image_size=setting.img_size, augment=True, seed=seed)
    test_loader = BatchLoader(
        test_set, min(256, len(test_set)), image_size=setting.img_size, shuffle=False, drop_last=False
    )
    config = get_recipe("small_finetune").train_config(
        steps,
        setting.batch_size,
        lr=setting.finetune_lr,
        eval_every=max(1, steps // eval_points) if eval_points else 0,
        seed=seed,
        device=device,
        log_every=max(1, steps // 5),
    )
    result = finetune(model, train_loader, test_loader, config)
    if eval_points:
        return {"top1": result.final_eval["top1"], "curve": result.curve("top1"), "seconds": result.elapsed_s}
    return {"top1": result.final_eval["top1"], "seconds": result.elapsed_s}


# -- comparisons ----------------------------------------------------------------------------------------
def noise_margin(a: dict[str, Any], b: dict[str, Any], n_test: int, key: str = "top1") -> float:
    """One standard error of the difference of two mean accuracies ``{key}_mean`` (points): from the
    spread over seeds when there are several, never below the binomial error of two accuracies on
    ``n_test`` test images (the only noise estimate a single seed has)."""
    p = min(max((a[f"{key}_mean"] + b[f"{key}_mean"]) / 200.0, 0.01), 0.99)
    binomial = 100.0 * math.sqrt(2 * p * (1 - p) / n_test)
    seeds = math.sqrt(a[f"{key}_std"] ** 2 / a["n"] + b[f"{key}_std"] ** 2 / b["n"])
    return max(binomial, seeds)


def verdict(delta: float, margin: float) -> str:
    """``"no clear difference"`` within ``margin``, else ``"better"`` or ``"worse"``."""
    if abs(delta) <= margin:
        return "no clear difference"
    return "better" if delta > 0 else "worse"
