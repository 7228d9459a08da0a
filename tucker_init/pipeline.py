"""The jobs a user runs, composed from the library: pre-train a template, initialize a
target, fine-tune it, and the end-to-end demo. The CLI and the experiments call these.

Every job is seeded, writes its outputs atomically under an output folder, and can be
resumed (``resume=True``) from the checkpoint it leaves there.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from .models import ModelSpec
from .objectives.distill import DISTILL_TARGETS, Distillation
from .objectives.mae import masked_model_for
from .objectives.stochastic import WidthScaling
from .objectives.subnet import SubnetTraining, choose_subnet_sizes
from .resize.initialize import initialize
from .resize.learn import LearnConfig
from .resize.plan import PLAN_DEPTH_RULES
from .resize.report import InitReport
from .templates.factorized import FactorizedModel, factorize
from .templates.io import FORMAT as TEMPLATE_FORMAT
from .templates.io import read_safetensors, save_template, write_model_card, write_safetensors_atomic
from .templates.kinds import get_kind
from .templates.template import WeightTemplate, as_template
from .training import TrainConfig, TrainResult, finetune, masked_image_loss, train
from .training.checkpoint import LAST, load_checkpoint
from .training.data import BatchLoader, ImageDataset, load_dataset, streamed_datasets
from .training.recipes import Recipe, get_recipe
from .training.streaming import TRANSFORMS, FolderDataset, StreamingLoader
from .validation import check_choice

__all__ = [
    "ModelSpec",
    "PretrainResult",
    "check_model_path",
    "check_run_dir",
    "finetune_model",
    "init_model",
    "load_dense",
    "load_model",
    "lossless_rules",
    "lossless_template",
    "make_loaders",
    "make_train_loader",
    "pretrain",
    "save_model",
]

SCALING_MODES = ("off", "prefix", "rank", "subnet")
OBJECTIVES = ("mae", "distill")
MODEL_FORMAT = "tucker_init.model"


# -- dense model files -----------------------------------------------------------------------------
def save_model(path: str | os.PathLike, model: nn.Module, spec: ModelSpec, extra: dict | None = None) -> Path:
    """Write a dense model's state dict (safetensors, atomically) with its spec as metadata, and
    under ``"timm"`` the timm model name and kwargs that rebuild it with timm alone
    (:meth:`ModelSpec.timm_equivalent`)::

        meta = json.loads(safe_open(path, "pt").metadata()["timm"])
        overlay = dict(file=path, num_classes=meta["kwargs"]["num_classes"])
        model = timm.create_model(meta["name"], pretrained=True, pretrained_cfg_overlay=overlay, **meta["kwargs"])

    Raises:
        IsADirectoryError, ValueError: see :func:`check_model_path`.
    """
    path = check_model_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    extra = {} if extra is None else extra
    name, kwargs = spec.timm_equivalent()
    metadata = {
        "format": MODEL_FORMAT,
        "spec": json.dumps(asdict(spec)),
        "extra": json.dumps(extra),
        "timm": json.dumps({"name": name, "kwargs": kwargs}),
    }
    write_safetensors_atomic(path, tensors, metadata)
    return path


def _file_format(path: Path) -> str | None:
    """The ``format`` metadata of a safetensors file; ``None`` for any other file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format")
    except Exception:  # not safetensors at all
        return None


def check_model_path(path: str | os.PathLike) -> Path:
    """``path`` as a place :func:`save_model` may write: not a folder, and not an existing file
    other than a tucker_init model file (a template, a checkpoint, metrics, ... are kept).

    Raises:
        IsADirectoryError: ``path`` is a folder. ValueError: ``path`` is another kind of file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"model file {str(path)!r} is a folder; expected the path of a .safetensors file")
    if path.exists():
        found = _file_format(path)
        if found != MODEL_FORMAT:
            raise ValueError(
                f"{str(path)!r} exists and is not a tucker_init model file (format {found!r}); "
                "refusing to overwrite it: choose another path"
            )
    return path


def load_model(path: str | os.PathLike, **kwargs: Any) -> tuple[nn.Module, ModelSpec]:
    """Rebuild a model written by :func:`save_model` (``kwargs`` as in :meth:`ModelSpec.build`).

    Raises:
        FileNotFoundError: no such file. ValueError: not a tucker_init model file, a damaged one,
            or one holding NaN / Inf (the tensor is named).
    """
    path = Path(path)
    metadata, tensors = read_safetensors(path, "model file")
    if metadata.get("format") != MODEL_FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a tucker_init model file (format {metadata.get('format')!r}); "
            "template files are read with load_template()"
        )
    try:
        spec = ModelSpec(**json.loads(metadata["spec"]))
        model = spec.build(**kwargs)
        model.load_state_dict(tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # load_state_dict raises RuntimeError
        raise ValueError(f"{str(path)!r}: damaged model file: {type(err).__name__}: {err}") from err
    return model, spec


def load_dense(source: str | os.PathLike | nn.Module, argument: str = "teacher") -> nn.Module:
    """A dense model from a module (as it is), a tucker_init model file, or a timm model name
    (``timm.create_model(name, pretrained=True)``: the weights must be in timm's cache).

    Raises:
        TypeError: ``source`` is none of these. ValueError: a file that is not a model file, or
            a timm name whose pre-trained weights cannot be had (named in ``argument``).
    """
    if isinstance(source, nn.Module):
        return source
    if not isinstance(source, str | os.PathLike):
        found = type(source).__name__
        raise TypeError(f"{argument} must be a model file, a timm model name or an nn.Module, found {found}")
    if Path(source).is_file():
        return load_model(source)[0]
    import timm

    name = str(source)
    if not timm.is_model(name):
        raise ValueError(f"{argument} {name!r} is neither a model file nor a timm model name")
    try:
        return timm.create_model(name, pretrained=True)
    except Exception as err:  # timm raises several kinds when weights are missing offline
        raise ValueError(f"{argument} {name!r}: timm could not load its pre-trained weights ({err})") from err


def lossless_template(source: str | os.PathLike | nn.Module, argument: str = "source") -> FactorizedModel:
    """A dense model (as :func:`load_dense` takes it) held by its lossless template,
    ``factorize(model, ranks="full", share=False)``: the path that measured best in the README's
    equal-cost benchmark with its longer sources. A core per weight group, since a lossless
    template has nothing to share and a CNN's stages differ in size (a ViT has one group).
    Initialized with depth ``first`` and width ``select`` (at or below the model's width) it is
    weight selection's model; wider targets take width ``interpolate``.

    Raises:
        TypeError, ValueError: as :func:`load_dense`; ValueError for a template file (it is one
            already: initialize from it directly, ``--template`` on the command line).
    """
    if isinstance(source, str | os.PathLike) and _file_format(Path(source)) == TEMPLATE_FORMAT:
        raise ValueError(
            f"{argument} {str(source)!r} is a template file, not a dense model: initialize from it directly "
            "(the command line's --template)"
        )
    return factorize(load_dense(source, argument), ranks="full", share=False)


def lossless_rules(source: ModelSpec, target: ModelSpec) -> dict[str, str]:
    """The ``initialize`` rules for a dense model's :func:`lossless_template` that the README recommends:
    weight selection's two, depth ``first`` and width ``select`` (evenly spaced channels), where
    they reach; depth ``interpolate`` for a deeper target (1.0 above depth ``identity``, whose new
    blocks start as the identity, at L12 w192 from L6 w128, README); width ``zero_fanout`` for a
    wider one (the trained channels in place, the new ones features of their own that nothing reads
    yet: +1.7 over ``interpolate`` and +1.9 over random init at L3 w192, README)."""
    return {
        "depth": "first" if target.depth <= source.depth else "interpolate",
        "width": "select" if target.width <= source.width else "zero_fanout",
    }


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 (16 hex digits) of a model's state: names, shapes, dtypes and values."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# -- data ------------------------------------------------------------------------------------------------
def _dist() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def make_train_loader(
    data: str | ImageDataset | FolderDataset,
    batch_size: int,
    *,
    image_size: int = 32,
    seed: int = 0,
    augment: bool = True,
    train_subset: int | None = None,
    root: str | None = None,
    transform: str = "mae",
    workers: int | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    transform_options: Mapping[str, Any] | None = None,
) -> BatchLoader | StreamingLoader:
    """The training loader of ``data`` (a data set name, whose "train" split is used, an
    :class:`ImageDataset` or a :class:`~tucker_init.training.streaming.FolderDataset`); under torchrun each
    rank gets its shard of the global ``batch_size``. ``train_subset`` trains on a subset of that
    size, drawn with ``seed``.

    Image folders (``data="image_folder"`` with ``root``, or a ``FolderDataset``) are streamed from
    disk by a :class:`~tucker_init.training.streaming.StreamingLoader`: ``workers`` DataLoader processes
    (default :func:`~tucker_init.training.streaming.default_workers`, or ``$TUCKER_INIT_WORKERS``), the timm
    ``transform`` (``"mae"``: random-resized crop of 20-100 % + flip; ``"finetune"``: timm's training
    transform; ``augment=False``: ``"eval"``, resize + center crop), mean / std from
    ``pretrained_cfg`` when given, else 0.5. The in-memory sets (fashion_mnist, digits, photos, ...)
    use a :class:`BatchLoader` (``augment``: pad-crop + flip on whole batches); ``transform``,
    ``workers``, ``pretrained_cfg`` and ``transform_options`` (more timm ``create_transform``
    arguments, e.g. a recipe's ``auto_augment``) do not apply to them.
    """
    check_choice("transform", transform, TRANSFORMS)
    rank, world = _dist()
    if batch_size % world:
        raise ValueError(f"batch_size must be divisible by the {world} processes, found {batch_size}")
    if isinstance(data, str):
        train_set = load_dataset(data, "train", root=root, stream=data in streamed_datasets())
    else:
        train_set = data
    if train_subset is not None:
        train_set = train_set.subset(min(train_subset, len(train_set)), seed=seed)
    if isinstance(train_set, FolderDataset):
        return StreamingLoader(
            train_set,
            batch_size // world,
            image_size=image_size,
            transform=transform if augment else "eval",
            seed=seed,
            rank=rank,
            world_size=world,
            workers=workers,
            pretrained_cfg=pretrained_cfg,
            transform_options=transform_options,
        )
    return BatchLoader(
        train_set, batch_size // world, image_size=image_size, augment=augment, seed=seed, rank=rank, world_size=world
    )


def make_loaders(
    data: str | ImageDataset | FolderDataset,
    batch_size: int,
    *,
    image_size: int = 32,
    seed: int = 0,
    augment: bool = True,
    train_subset: int | None = None,
    test_subset: int | None = None,
    root: str | None = None,
    test_data: ImageDataset | FolderDataset | None = None,
    transform: str = "finetune",
    workers: int | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    transform_options: Mapping[str, Any] | None = None,
) -> tuple[BatchLoader | StreamingLoader, BatchLoader | StreamingLoader]:
    """Train and test loaders (see :func:`make_train_loader`; image folders are streamed, the
    training split with timm's ``"finetune"`` transform by default, the test split with ``"eval"``).

    Args:
        test_data: the held-out set when ``data`` is an :class:`ImageDataset` or a ``FolderDataset``
            (required then); for a data set name its "test" split is used.
        test_subset: evaluate on a subset of this size, drawn with a fixed seed, so runs with
            different seeds are scored on the same images.
    """
    train_loader = make_train_loader(
        data,
        batch_size,
        image_size=image_size,
        seed=seed,
        augment=augment,
        train_subset=train_subset,
        root=root,
        transform=transform,
        workers=workers,
        pretrained_cfg=pretrained_cfg,
        transform_options=transform_options,
    )
    if isinstance(data, str):
        test_set = load_dataset(data, "test", root=root, stream=data in streamed_datasets())
    elif test_data is None:
        kind = type(data).__name__
        article = "an" if kind[:1] in "AEIOU" else "a"
        raise ValueError(f"data is {article} {kind}: pass test_data= as well (a held-out set), found None")
    else:
        test_set = test_data
    if test_subset is not None:
        test_set = test_set.subset(min(test_subset, len(test_set)), seed=0)
    rank, world = _dist()
    common = {"shuffle": False, "drop_last": False, "seed": seed, "rank": rank, "world_size": world}
    batch = min(batch_size // world, len(test_set))
    if isinstance(test_set, FolderDataset):
        streamed = {"transform": "eval", "workers": workers, "pretrained_cfg": pretrained_cfg}
        return train_loader, StreamingLoader(test_set, batch, image_size=image_size, **streamed, **common)
    return train_loader, BatchLoader(test_set, batch, image_size=image_size, **common)


# -- jobs ----------------------------------------------------------------------------------------------
@dataclass
class PretrainResult:
    """Where a pre-training run left its outputs."""

    path: Path
    train: TrainResult
    history: list[dict[str, Any]] = field(default_factory=list)


def check_run_dir(out_dir: str | os.PathLike, kind: str, resume: bool) -> Path:
    """``out_dir`` as the folder of a ``kind`` training job (``"pretrain"`` | ``"finetune"``).

    Raises:
        NotADirectoryError: ``out_dir`` is a file. ValueError: without ``resume``, it holds the
            checkpoint of another kind of job (with ``resume``, :func:`~tucker_init.training.train`
            compares the whole recorded job and names what differs).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir {str(out)!r} is a file; expected a folder for the {kind} job's outputs")
    ckpt = out / LAST
    if resume or not ckpt.is_file():
        return out
    found = (load_checkpoint(ckpt).get("job") or {}).get("kind")
    if found is not None and found != kind:
        raise ValueError(
            f"out_dir {str(out)!r} holds the checkpoint of a {found} job ({str(ckpt)!r}); a {kind} job "
            "would overwrite it: choose another folder"
        )
    return out


def _data_job(data: str | ImageDataset, data_root: str | None, loader: BatchLoader, subset: int | None) -> dict:
    """The data fields of a job record: name, root, subset and the fingerprint of the images used."""
    return {
        "data": data if isinstance(data, str) else data.name,
        "data_root": None if data_root is None else str(Path(data_root).resolve()),
        "train_subset": subset,
        "data_fingerprint": loader.dataset.fingerprint(),
    }


def _architecture(model: nn.Module) -> str:
    """A model's class, size and a hash of its parameter names and shapes."""
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    digest = hashlib.sha256(repr(shapes).encode()).hexdigest()[:16]
    count = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__}, {count} parameters, shapes sha256 {digest}"


def _transform_options(recipe: Recipe) -> dict[str, Any]:
    """The recipe's augmentation of streamed image folders, as timm ``create_transform`` arguments."""
    options = {"scale": recipe.crop_scale, "auto_augment": recipe.auto_augment, "re_prob": recipe.reprob or None}
    return {k: v for k, v in options.items() if v is not None}


def _train_config(
    recipe: Recipe,
    steps: int,
    batch_size: int,
    *,
    lr: float | None,
    warmup_steps: int | None,
    engine: Mapping[str, Any] | None,
    **fixed: Any,
) -> TrainConfig:
    """The recipe's :class:`TrainConfig`, with the caller's overrides (``None``: the recipe's)
    and the job's own bookkeeping fields."""
    overrides = {k: v for k, v in (("lr", lr), ("warmup_steps", warmup_steps)) if v is not None}
    clash = sorted(set(engine or {}) & (set(fixed) | {"steps", "batch_size", "lr", "warmup_steps"}))
    if clash:
        raise ValueError(f"engine must not set {clash}: they are arguments of the job itself")
    return recipe.train_config(steps, batch_size, **overrides, **fixed, **dict(engine or {}))


def _load_start(model: nn.Module, init_from: str | os.PathLike | nn.Module) -> str:
    """Load the dense weights ``init_from`` into ``model`` (same architecture); returns their
    fingerprint for the job record."""
    start = load_dense(init_from, "init_from")
    try:
        model.load_state_dict(start.state_dict())
    except RuntimeError as err:
        raise ValueError(f"init_from must be a model of the job's spec; its weights do not fit: {err}") from err
    return weights_fingerprint(start)


def _encoder(
    model: nn.Module, dense: bool, ranks: Any, method: str, init: str, scaling: str, seed: int
) -> tuple[nn.Module, WidthScaling | None]:
    """The trained module (the dense model or its factorization) and the width-scaling hook."""
    if dense:
        return model, None
    # "random" draws a template whose weights have timm's RMS. A low-rank HOSVD of timm's
    # random init keeps only ~40 % of its norm (its spectrum is flat), and a short
    # pre-training does not restore it (experiments/stochastic_scaling.py, norm_ratio).
    encoder = factorize(model, ranks=ranks, method=method, init=init, seed=seed)
    if scaling in ("prefix", "rank") and get_kind(method).width_scaling:
        return encoder, WidthScaling(scaling, seed=seed).attach(encoder)
    return encoder, None


@dataclass(frozen=True)
class SubnetChoice:
    """What ``scaling="subnet"`` trains beside the full model: sizes (None: the defaults), the
    sandwich rule, the depth rule."""

    sizes: Sequence[tuple[int, int]] | None
    sandwich: bool
    depth: str


def _with_subnets(
    task: nn.Module,
    encoder: nn.Module,
    spec: ModelSpec,
    make_objective: Any,
    subnets: SubnetChoice,
    seed: int,
) -> tuple[SubnetTraining, list[list[int]]]:
    """``task`` plus the objectives of smaller models of ``spec`` built from the template."""
    if not isinstance(encoder, FactorizedModel):
        raise ValueError("scaling='subnet' trains a template's sub-networks: it needs dense=False")
    if spec.depth is None or spec.width is None:
        raise ValueError(f"scaling='subnet' needs a model family with depth and width, found {spec.family!r}")
    multiple = max(4, encoder.adapter.width_multiple(encoder.backbone))
    chosen = choose_subnet_sizes(spec.depth, spec.width, multiple, subnets.sizes)
    models = {f"L{d}w{w}": replace(spec, depth=d, width=w).build() for d, w in chosen}
    training = SubnetTraining(
        task, encoder, models, make_objective, sandwich=subnets.sandwich, seed=seed, depth=subnets.depth
    )
    return training, [list(s) for s in chosen]


def _objective_text(objective: str, teacher: Any, target: str, init_from: Any) -> str:
    """The model card's objective line."""

    def name(x: Any) -> str:
        return str(x) if isinstance(x, str | os.PathLike) else type(x).__name__

    text = "masked image modeling (MAE)" if objective == "mae" else f"distillation of {name(teacher)} ({target})"
    return text if init_from is None else f"HOSVD of {name(init_from)}, refined by {text}"


def pretrain(
    spec: ModelSpec,
    data: str | ImageDataset,
    out_dir: str | os.PathLike,
    *,
    ranks: tuple[int, int, int] | str = (36, 64, 64),
    method: str = "tucker",
    init: str = "random",
    scaling: str = "off",
    dense: bool = False,
    objective: str = "mae",
    teacher: str | os.PathLike | nn.Module | None = None,
    distill_target: str = "features",
    temperature: float = 1.0,
    init_from: str | os.PathLike | nn.Module | None = None,
    subnet_sizes: Sequence[tuple[int, int]] | None = None,
    sandwich: bool = False,
    subnet_depth: str = "select",
    steps: int = 1000,
    batch_size: int = 64,
    recipe: str | Recipe = "small_pretrain",
    lr: float | None = None,
    warmup_steps: int | None = None,
    mask_ratio: float | None = None,
    norm_pix_loss: bool | None = None,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    max_time_s: float | None = None,
    train_subset: int | None = None,
    data_root: str | None = None,
    workers: int | None = None,
    engine: Mapping[str, Any] | None = None,
    tensorboard: bool = False,
) -> PretrainResult:
    """Pre-train a weight template (or, with ``dense=True``, a dense model of the same shape)
    with the masked-image objective (``objective="mae"``) or by distilling a ``teacher``
    (``objective="distill"``: a model file, a timm name with pre-trained weights or a module;
    ``distill_target`` ``"features"`` | ``"logits"`` | ``"both"``, see :mod:`tucker_init.objectives.distill`).

    ``init_from`` (a dense model of ``spec``: file, timm name or module) compresses, then refines:
    the template starts from the HOSVD of those weights (and the remainder from them) instead of
    ``init``, then trains with the objective.

    Writes ``out_dir/template.safetensors`` (or ``out_dir/dense.safetensors``), plus
    ``last.pt`` (checkpoint) and ``metrics.jsonl``.

    The hyper-parameters come from the named ``recipe`` (:mod:`tucker_init.training.recipes`:
    ``"small_pretrain"`` for short CPU runs, ``"mae"`` for the MAE paper's); ``lr``,
    ``warmup_steps``, ``mask_ratio`` and ``norm_pix_loss`` override it when given, ``engine``
    any other :class:`~tucker_init.training.TrainConfig` field (``compile``, ``channels_last``,
    ``grad_clip``, ...). ``workers``: DataLoader processes for streamed image folders;
    ``tensorboard``: also log to ``out_dir/tensorboard``.

    ``scaling`` (width-wise stochastic scaling, ``"off"`` | ``"prefix"`` | ``"rank"``) defaults to
    ``"off"``: in ``experiments/stochastic_scaling.py --quick --seeds 0 1 2`` prefix masks and rank
    dropout gave 4-5 points lower fine-tuned top-1 than no masks at the template's width and at a
    wider one, and no gain at a narrower one. ``"subnet"`` trains real smaller models built from the
    template beside the full one each step (:mod:`tucker_init.objectives.subnet`): ``subnet_sizes`` as
    ``[(depth, width), ...]`` (default half depth and / or half width), ``sandwich`` the smallest
    plus one random size per step, ``subnet_depth`` the depth rule that builds them (``"select"``,
    ``"first"``, ``"interpolate"``; initialize targets with the same).

    The checkpoint records the job (spec, ranks, method, init, scaling, dense, mask ratio, data
    set, root and fingerprint); ``resume=True`` with any of them changed is refused, naming them.
    """
    check_choice("scaling", scaling, SCALING_MODES)
    check_choice("objective", objective, OBJECTIVES)
    check_choice("distill_target", distill_target, DISTILL_TARGETS)
    check_choice("subnet_depth", subnet_depth, PLAN_DEPTH_RULES)
    if (objective == "distill") != (teacher is not None):
        raise ValueError(
            f"objective={objective!r} {'needs a teacher' if teacher is None else 'takes no teacher'}: "
            f"found teacher={'None' if teacher is None else 'given'} (use objective='distill' with teacher=...)"
        )
    recipe = get_recipe(recipe, kind="pretrain")
    mask_ratio = recipe.mask_ratio if mask_ratio is None else mask_ratio
    norm_pix_loss = recipe.norm_pix_loss if norm_pix_loss is None else norm_pix_loss
    out = check_run_dir(out_dir, "pretrain", resume)
    torch.manual_seed(seed)
    model = spec.build()
    start = None if init_from is None else _load_start(model, init_from)
    encoder, step_hook = _encoder(model, dense, ranks, method, "hosvd" if start else init, scaling, seed)
    teacher_model = None if teacher is None else load_dense(teacher, "teacher")
    if teacher_model is not None:

        def make_objective(student: nn.Module) -> nn.Module:
            return Distillation(
                student, teacher_model, target=distill_target, temperature=temperature, image_size=spec.img_size
            )
    else:

        def make_objective(student: nn.Module) -> nn.Module:
            return masked_model_for(
                student, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss, image_size=spec.img_size
            )

    task = make_objective(encoder)
    sizes = None
    if scaling == "subnet":
        subnets = SubnetChoice(subnet_sizes, sandwich, subnet_depth)
        task, sizes = _with_subnets(task, encoder, spec, make_objective, subnets, seed)
        step_hook = task
    elif subnet_sizes is not None or sandwich or subnet_depth != "select":
        raise ValueError(f"subnet_sizes / sandwich / subnet_depth apply to scaling='subnet', found scaling={scaling!r}")
    train_loader = make_train_loader(
        data,
        batch_size,
        image_size=spec.img_size,
        seed=seed,
        train_subset=train_subset,
        root=data_root,
        transform="mae",
        workers=workers,
        transform_options=_transform_options(recipe),
    )
    config = _train_config(
        recipe,
        steps,
        batch_size,
        lr=lr,
        warmup_steps=warmup_steps,
        engine=engine,
        seed=seed,
        device=device,
        out_dir=str(out),
        max_time_s=max_time_s,
        log_every=max(1, min(50, steps // 20)),
        checkpoint_every=max(1, steps // 5),
        find_unused_parameters=True,
    )
    factorized = {"ranks": ranks, "method": method, "init": init, "scaling": scaling, "subnet_sizes": sizes}
    factorized["sandwich"] = sandwich if sizes else None
    if sizes and subnet_depth != "select":  # recorded only when not the default: older checkpoints still resume
        factorized["subnet_depth"] = subnet_depth
    job = {
        "kind": "pretrain",
        **asdict(spec),
        "dense": dense,
        **{k: None if dense else v for k, v in factorized.items()},  # a dense run has none of them
        "objective": objective,
        "mask_ratio": mask_ratio if objective == "mae" else None,
        "norm_pix_loss": norm_pix_loss if objective == "mae" else None,
        "teacher": None if teacher_model is None else weights_fingerprint(teacher_model),
        "distill_target": distill_target if teacher_model is not None else None,
        "temperature": temperature if teacher_model is not None else None,
        "init_from": start,
        "recipe": recipe.name,
        **_data_job(data, data_root, train_loader, train_subset),
    }
    result = train(
        task,
        train_loader,
        masked_image_loss,
        config,
        resume=resume,
        before_step=step_hook.set_step if step_hook is not None else None,
        job=job,
        tensorboard=out / "tensorboard" if tensorboard else None,
    )
    task.cpu()
    if dense:
        path = save_model(out / "dense.safetensors", model, spec, {"steps": result.step})
    else:
        path = save_template(out / "template.safetensors", encoder)
        facts = {"objective": _objective_text(objective, teacher, distill_target, init_from), "recipe": recipe.name}
        facts["data"] = job["data"]
        facts |= {"images": job["data_fingerprint"].get("images"), "steps": f"{result.step} of {result.total_steps}"}
        facts["command"] = f"`{' '.join(sys.argv)}`" if sys.argv and sys.argv[0] else "pipeline.pretrain(...)"
        write_model_card(path, as_template(encoder), facts)
    return PretrainResult(path=path, train=result, history=result.history)


def init_model(
    spec: ModelSpec,
    source: str | os.PathLike | WeightTemplate | FactorizedModel,
    *,
    depth: str = "interpolate",
    width: str = "slice",
    learn_steps: int = 0,
    data: str | ImageDataset | None = None,
    batch_size: int = 64,
    seed: int = 0,
    data_root: str | None = None,
) -> tuple[nn.Module, InitReport]:
    """A model of ``spec`` initialized from ``source`` (a template file or object; a dense model
    through :func:`lossless_template`); with
    ``learn_steps > 0`` its scalers are first learned on ``data`` (classification loss).

    Raises:
        ValueError: ``learn_steps`` not an int >= 0; ``data`` missing with learn steps, or given
            (with ``data_root``) without them, where it would be unused.
    """
    if isinstance(learn_steps, bool) or not isinstance(learn_steps, int) or learn_steps < 0:
        raise ValueError(f"learn_steps must be an int >= 0, found {learn_steps!r}")
    if learn_steps == 0 and (data is not None or data_root is not None):
        raise ValueError(
            f"data / data_root are used only with learn_steps > 0 (to learn the scalers), found learn_steps=0 "
            f"and data={data if isinstance(data, str) or data is None else data.name!r}, data_root={data_root!r}"
        )
    torch.manual_seed(seed)
    target = spec.build()
    learn = None
    if learn_steps > 0:
        if data is None:
            raise ValueError("learn_steps > 0 needs data= (a data set name) to learn the scalers on")
        loader = make_train_loader(data, batch_size, image_size=spec.img_size, seed=seed, root=data_root)
        learn = LearnConfig(data=loader, steps=learn_steps)
    model, report = initialize(target, source, depth=depth, width=width, learn=learn, return_report=True, seed=seed)
    return model, report


def finetune_model(
    model: nn.Module,
    data: str | ImageDataset,
    *,
    steps: int = 300,
    batch_size: int = 64,
    recipe: str | Recipe = "small_finetune",
    lr: float | None = None,
    warmup_steps: int | None = None,
    label_smoothing: float | None = None,
    eval_every: int = 0,
    image_size: int = 32,
    seed: int = 0,
    device: str = "auto",
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
    data_root: str | None = None,
    test_data: ImageDataset | None = None,
    job: Mapping[str, Any] | None = None,
    workers: int | None = None,
    engine: Mapping[str, Any] | None = None,
    tensorboard: bool = False,
) -> TrainResult:
    """Fine-tune a classifier with the named ``recipe`` (``"small_finetune"``: AdamW, 10 %
    warm-up + cosine, label smoothing 0.1; ``"mae_finetune"`` / ``"deit"``: layer decay, mixup /
    cutmix, ...) and evaluate top-1. ``lr``, ``warmup_steps`` and ``label_smoothing`` override the
    recipe when given, ``engine`` any other :class:`~tucker_init.training.TrainConfig` field. The
    recipe's ``drop_path`` applies where the model is built (:meth:`ModelSpec.build`).

    The checkpoint records the job: the model's architecture, image size, data set, root and the
    fingerprints of the train and test images, plus the caller's ``job`` fields (e.g. the model
    spec and the weights file); ``resume=True`` with any of them changed is refused, naming them.
    """
    recipe = get_recipe(recipe, kind="finetune")
    if out_dir is not None:
        check_run_dir(out_dir, "finetune", resume)
    train_loader, test_loader = make_loaders(
        data,
        batch_size,
        image_size=image_size,
        seed=seed,
        train_subset=train_subset,
        test_subset=test_subset,
        root=data_root,
        test_data=test_data,
        workers=workers,
        transform_options=_transform_options(recipe),
    )
    if label_smoothing is not None:
        engine = {**(engine or {}), "label_smoothing": label_smoothing}
    config = _train_config(
        recipe,
        steps,
        batch_size,
        lr=lr,
        warmup_steps=warmup_steps,
        engine=engine,
        eval_every=eval_every,
        seed=seed,
        device=device,
        out_dir=None if out_dir is None else str(out_dir),
        log_every=max(1, min(50, steps // 10)),
        checkpoint_every=max(1, steps // 4) if out_dir is not None else 0,
    )
    record = {
        "kind": "finetune",
        "recipe": recipe.name,
        "model": _architecture(model),
        "img_size": image_size,
        **_data_job(data, data_root, train_loader, train_subset),
        "test_subset": test_subset,
        "test_fingerprint": test_loader.dataset.fingerprint(),
        **({} if job is None else dict(job)),
    }
    if tensorboard and out_dir is None:
        raise ValueError("tensorboard=True needs out_dir (the log goes to out_dir/tensorboard), found None")
    board = Path(out_dir) / "tensorboard" if tensorboard else None
    return finetune(model, train_loader, test_loader, config, resume=resume, job=record, tensorboard=board)
