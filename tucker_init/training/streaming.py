"""Image folders streamed from disk: a ``torch.utils.data.DataLoader`` with worker processes and a
seeded, resumable, rank-sharded batch sampler, behind the interface of :class:`~tucker_init.training.data.BatchLoader`.

Nothing is decoded up front: :class:`FolderDataset` holds only file paths and labels (listed by timm's
folder reader, :func:`tucker_init.training.data.list_image_folder`), so memory stays flat as the folder grows.
:class:`StreamingLoader` decodes each image with PIL in a worker and runs a timm transform on it
(``timm.data.create_transform``):

- ``"mae"``: ``RandomResizedCrop(scale=(0.2, 1.0))`` + horizontal flip (the MAE recipe, no colour jitter);
- ``"finetune"``: timm's training transform (``RandomResizedCrop(scale=(0.08, 1.0))``, flip, colour jitter 0.4);
- ``"eval"``: resize the shorter side to ``image_size / crop_pct`` and center-crop ``image_size``.

Order and sharding are exactly :class:`~tucker_init.training.data.BatchLoader`'s: the epoch order is a
permutation seeded by ``(seed, epoch)``, global batch ``b`` is ``order[b*G:(b+1)*G]`` with
``G = batch_size * world_size`` and rank ``r`` takes positions ``r::world_size`` of it, so W ranks
together see what one process with ``W * batch_size`` sees. Augmentation is reproducible per image:
before the transform runs, torch's CPU generator, ``random`` and numpy are seeded from
``(seed, epoch, index)``, so the pixels do not depend on the number of workers, on which worker
decoded an image, on the world size or on a resume (the main process's RNG states are restored
around it when ``workers=0``, so training draws are not disturbed).

Example::

    from tucker_init.training.streaming import FolderDataset, StreamingLoader

    train = FolderDataset("/data/imagenet", "train")
    loader = StreamingLoader(train, 64, image_size=224, transform="mae", workers=8)
    for x, y in loader:  # one epoch; loader.state_dict() -> {"epoch", "batch"} at any point
        ...
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from ..validation import check_choice, check_int
from .data import _mix, list_image_folder

__all__ = [
    "TRANSFORMS",
    "FolderDataset",
    "ResumableBatchSampler",
    "StreamingLoader",
    "build_transform",
    "default_workers",
]

TRANSFORMS = ("mae", "finetune", "eval")
WORKERS_ENV = "TUCKER_INIT_WORKERS"
_ORDER_SALT = 0x5F0F  # BatchLoader's: the same seed gives the same epoch order
_SAMPLE_SALT = 0x57E4


def default_workers() -> int:
    """Worker processes per loader when none are given: ``$TUCKER_INIT_WORKERS`` if set, else half
    of the CPU cores available to this process divided among the local ranks of a torchrun job
    (``LOCAL_WORLD_SIZE``), at most 8 and at least 1."""
    env = os.environ.get(WORKERS_ENV)
    if env is not None and env.strip():
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"{WORKERS_ENV} must be an int >= 0, found {env!r}") from None
        if value < 0:
            raise ValueError(f"{WORKERS_ENV} must be an int >= 0, found {env!r}")
        return value
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(8, cores // (2 * local)))


# ------------------------------------------------------------------------------------------- dataset


class FolderDataset:
    """One split of an image folder as a list of files and labels; nothing is decoded until
    :meth:`load` (memory grows with the number of file names only).

    Args:
        root: a folder of class sub-folders (``root/<class>/<image>``), or with ``train`` / ``test``
            sub-folders that each hold class sub-folders.
        split: ``"train"`` or ``"test"``; without ``train``/``test`` sub-folders, a deterministic
            holdout of ``holdout`` of the files is the test split (the same as ``load_dataset``).
        holdout: fraction in (0, 1).

    Attributes:
        name: ``"image_folder"``. root: the folder listed (``root`` or ``root/<split>``).
        labels: int64 tensor ``(N,)``. classes: class names (leaf folder names, natural order).

    File names are kept in one numpy byte array (relative to ``root``), not a list of Python strings,
    so forked DataLoader workers do not copy them page by page as reference counts change.
    """

    name = "image_folder"

    def __init__(self, root: str | os.PathLike, split: str = "train", *, holdout: float = 0.2) -> None:
        files, classes, folder = list_image_folder(split, root, holdout)
        self.root = str(folder)
        self.split = split
        prefix = len(os.path.join(self.root, ""))
        self._names = np.array([os.fsencode(path[prefix:]) for path, _ in files], dtype=np.bytes_)
        self.labels = torch.tensor([label for _, label in files], dtype=torch.int64)
        self.classes = classes

    def __len__(self) -> int:
        return len(self._names)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def filename(self, index: int) -> str:
        """The path of image ``index``."""
        return os.path.join(self.root, os.fsdecode(self._names[index]))

    @property
    def files(self) -> list[str]:
        """All image paths, in order (built on demand)."""
        return [self.filename(i) for i in range(len(self))]

    def load(self, index: int, mode: str = "RGB") -> Any:
        """Image ``index`` decoded with PIL and converted to ``mode`` (``"RGB"`` or ``"L"``)."""
        from PIL import Image

        with Image.open(self.filename(index)) as im:
            return im.convert(mode)

    def fingerprint(self) -> dict[str, Any]:
        """Like :meth:`ImageDataset.fingerprint <tucker_init.training.data.ImageDataset.fingerprint>` (image
        count, sha256 of the labels) plus ``files_sha256`` of the file names relative to the folder:
        recorded by training jobs so that a resume on another folder is refused."""
        labels = self.labels.contiguous().numpy().tobytes()
        return {
            "images": len(self),
            "labels_sha256": hashlib.sha256(labels).hexdigest()[:16],
            "files_sha256": hashlib.sha256(b"\n".join(self._names.tolist())).hexdigest()[:16],
        }

    def subset(self, n: int, seed: int = 0) -> FolderDataset:
        """A seeded random subset of ``n`` files, kept in the original order (the same indices as
        ``ImageDataset.subset`` draws for a set of the same size)."""
        n = check_int("n", n)
        if not 0 < n <= len(self):
            raise ValueError(f"n must be in [1, {len(self)}] (the dataset size), found {n}")
        g = torch.Generator().manual_seed(_mix(seed, 0x5B5E7))
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        ds = FolderDataset.__new__(FolderDataset)
        ds.root, ds.split, ds.classes = self.root, self.split, list(self.classes)
        ds._names, ds.labels = self._names[idx.numpy()], self.labels[idx]
        return ds

    def __repr__(self) -> str:
        return f"FolderDataset({self.root!r}, split={self.split!r}, images={len(self)}, classes={self.num_classes})"


# ----------------------------------------------------------------------------------------- transform


def _per_channel(name: str, value: Any, channels: int) -> tuple[float, ...]:
    values = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else (value,)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise ValueError(f"{name} must be a finite number or {channels} of them (one per channel), found {value!r}")
    return tuple(float(v) for v in values)


def build_transform(
    kind: str,
    image_size: int,
    *,
    channels: int = 3,
    mean: Any = 0.5,
    std: Any = 0.5,
    crop_pct: float = 1.0,
    interpolation: str = "bicubic",
    options: Mapping[str, Any] | None = None,
) -> Any:
    """The timm transform (``timm.data.create_transform``) of ``kind`` (see :data:`TRANSFORMS`): PIL
    image in, float32 tensor ``(channels, image_size, image_size)`` equal to ``(pixels / 255 - mean) / std``
    out. ``options`` go to ``create_transform`` for the training kinds (a recipe's ``scale``,
    ``auto_augment``, ``re_prob``, ...); the eval transform takes none."""
    from timm.data import create_transform

    check_choice("transform", kind, TRANSFORMS)
    image_size = check_int("image_size", image_size, 1)
    mean = _per_channel("mean", mean, channels)
    std = _per_channel("std", std, channels)
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, found {std!r}")
    if isinstance(crop_pct, bool) or not isinstance(crop_pct, int | float) or not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be a number in (0, 1], found {crop_pct!r}")
    common = {"input_size": (channels, image_size, image_size), "mean": mean, "std": std}
    common["interpolation"] = interpolation
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"options must be a mapping of create_transform arguments or None, found {options!r}")
    if kind == "mae":
        mae = {"scale": (0.2, 1.0), "hflip": 0.5, "color_jitter": None} | dict(options or {})
        return create_transform(**common, is_training=True, **mae)
    if kind == "finetune":
        return create_transform(**common, is_training=True, **dict(options or {}))
    return create_transform(**common, is_training=False, crop_pct=float(crop_pct))


class _SeededSamples(Dataset):
    """``dataset[(epoch, index)] -> (image tensor, label)``, with the transform's randomness seeded from
    ``(seed, epoch, index)``."""

    def __init__(self, folder: FolderDataset, transform: Any, seed: int, mode: str) -> None:
        self.folder = folder
        self.transform = transform
        self.seed = seed
        self.mode = mode

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        epoch, index = key
        image = self.folder.load(index, self.mode)
        s = _mix(self.seed, epoch, index, _SAMPLE_SALT)
        in_main = get_worker_info() is None
        if in_main:  # the training process's own streams must not move
            saved = (torch.default_generator.get_state(), random.getstate(), np.random.get_state())
        try:
            torch.default_generator.manual_seed(s)  # CPU only: CUDA generators are left alone
            random.seed(s)
            np.random.seed(s & 0xFFFFFFFF)
            x = self.transform(image)
        finally:
            if in_main:
                torch.default_generator.set_state(saved[0])
                random.setstate(saved[1])
                np.random.set_state(saved[2])
        return x, int(self.folder.labels[index])


class _Collate:
    """Stack ``(x, y)`` pairs; an empty list (a rank's share of a short last batch) gives empty tensors."""

    def __init__(self, channels: int, image_size: int) -> None:
        self.shape = (0, channels, image_size, image_size)

    def __call__(self, items: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
        if not items:
            return torch.empty(self.shape), torch.empty(0, dtype=torch.int64)
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)


# ------------------------------------------------------------------------------------------- sampler


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """This rank's batches of ``(epoch, index)`` keys, starting at a settable position.

    The order is :class:`~tucker_init.training.data.BatchLoader`'s (see the module docstring). An iteration
    yields the rest of the epoch set by :meth:`set_position`, or, with ``infinite=True``, continues
    through the following epochs forever.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        self.n = check_int("n", n, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.world_size = check_int("world_size", world_size, 1)
        self.rank = check_int("rank", rank, 0)
        self.seed = check_int("seed", seed, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), found {self.rank}")
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, found {type(flag).__name__} {flag!r}")
        self.shuffle, self.drop_last = shuffle, drop_last
        self.global_batch = self.batch_size * self.world_size
        if drop_last and self.global_batch > self.n:
            raise ValueError(
                f"batch_size * world_size ({self.batch_size} * {self.world_size} = {self.global_batch}) must be "
                f"at most the dataset size {self.n} when drop_last=True, found larger"
            )
        self.epoch, self.batch, self.infinite = 0, 0, False

    def __len__(self) -> int:
        return self.n // self.global_batch if self.drop_last else math.ceil(self.n / self.global_batch)

    def order(self, epoch: int) -> Tensor:
        """The epoch's order of all ``n`` indices (the same on every rank)."""
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(_mix(self.seed, epoch, _ORDER_SALT)))

    def set_position(self, epoch: int, batch: int, infinite: bool = False) -> None:
        """Where the next iteration starts (batch ``batch`` of epoch ``epoch``)."""
        self.epoch = check_int("epoch", epoch, 0)
        self.batch = check_int("batch", batch, 0)
        if self.batch > len(self):
            raise ValueError(f"batch must be in [0, {len(self)}] (batches per epoch), found {self.batch}")
        self.infinite = bool(infinite)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start, g = self.epoch, self.batch, self.global_batch
        while True:
            if start < len(self):
                order = self.order(epoch)
                for b in range(start, len(self)):
                    mine = order[b * g : (b + 1) * g][self.rank :: self.world_size].tolist()
                    yield [(epoch, i) for i in mine]
            if not self.infinite:
                return
            epoch, start = epoch + 1, 0


# -------------------------------------------------------------------------------------------- loader


class StreamingLoader:
    """Seeded, resumable, rank-sharded batches of an image folder, decoded by DataLoader workers.

    The same interface as :class:`~tucker_init.training.data.BatchLoader`: iterating gives one epoch (from the
    current position) of ``(x, y)``, ``x`` float32 ``(B, channels, image_size, image_size)``, ``y`` int64
    ``(B,)``; :meth:`infinite` runs across epochs (without draining the workers at epoch ends);
    :meth:`state_dict` / :meth:`load_state_dict` save and restore ``{"epoch", "batch"}`` (batches handed
    out, not batches prefetched), so a restored loader yields exactly the remaining batches, bit for bit.
    One iteration at a time: a new one (or ``load_state_dict``) supersedes the previous.

    Args:
        dataset: a :class:`FolderDataset`.
        batch_size: images per batch on this process (the global batch is ``batch_size * world_size``).
        image_size: side of the output images.
        channels: 3 (grey images are converted to RGB) or 1 (RGB to luminance, ITU-R 601, as PIL's "L").
        transform: one of :data:`TRANSFORMS` (see the module docstring).
        shuffle, drop_last, seed, rank, world_size: as for ``BatchLoader``.
        workers: DataLoader worker processes (0 decodes in this process); ``None`` takes
            :func:`default_workers`. Workers stay alive between epochs (``persistent_workers``).
        mean, std: normalization, a number or one per channel; ``None`` takes ``pretrained_cfg``'s, else 0.5.
        pretrained_cfg: a timm model's ``pretrained_cfg`` (mean, std, crop_pct, interpolation), optional.
        pin_memory: ``None``: when CUDA is available.
        prefetch_factor: batches each worker prepares ahead.
        transform_options: more ``create_transform`` arguments of the training transforms (a
            recipe's crop scale, RandAugment policy, random erasing), see :func:`build_transform`.

    Raises:
        TypeError / ValueError: naming the argument that is wrong.
    """

    def __init__(
        self,
        dataset: FolderDataset,
        batch_size: int,
        *,
        image_size: int = 32,
        channels: int = 3,
        transform: str = "eval",
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        workers: int | None = None,
        mean: Any = None,
        std: Any = None,
        pretrained_cfg: Mapping[str, Any] | None = None,
        pin_memory: bool | None = None,
        prefetch_factor: int = 2,
        transform_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(dataset, FolderDataset):
            raise TypeError(f"dataset must be a FolderDataset, found {type(dataset).__name__}")
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.image_size = check_int("image_size", image_size, 1)
        self.world_size = check_int("world_size", world_size, 1)
        self.rank = check_int("rank", rank, 0)
        self.seed = check_int("seed", seed, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), found {self.rank}")
        if isinstance(channels, bool) or channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, found {channels!r}")
        self.transform_name = check_choice("transform", transform, TRANSFORMS)
        self.workers = default_workers() if workers is None else check_int("workers", workers, 0)
        self.prefetch_factor = check_int("prefetch_factor", prefetch_factor, 1)
        if pin_memory is not None and not isinstance(pin_memory, bool):
            raise TypeError(f"pin_memory must be a bool or None, found {type(pin_memory).__name__} {pin_memory!r}")
        if pretrained_cfg is not None and not isinstance(pretrained_cfg, Mapping):
            found = type(pretrained_cfg).__name__
            raise TypeError(f"pretrained_cfg must be a mapping (a timm model's pretrained_cfg) or None, found {found}")
        cfg = dict(pretrained_cfg or {})
        self.channels = channels
        self.mean = _per_channel("mean", cfg.get("mean", 0.5) if mean is None else mean, channels)
        self.std = _per_channel("std", cfg.get("std", 0.5) if std is None else std, channels)
        self.dataset = dataset
        self.sampler = ResumableBatchSampler(
            len(dataset),
            self.batch_size,
            world_size=self.world_size,
            rank=self.rank,
            seed=self.seed,
            shuffle=shuffle,
            drop_last=drop_last,
        )
        self.shuffle, self.drop_last = shuffle, drop_last
        self.global_batch = self.sampler.global_batch
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self._transform = build_transform(
            self.transform_name,
            self.image_size,
            channels=channels,
            mean=self.mean,
            std=self.std,
            crop_pct=cfg.get("crop_pct", 1.0),
            interpolation=cfg.get("interpolation", "bicubic"),
            options=transform_options,
        )
        self.epoch = 0
        self._batch = 0  # batches handed out in the current epoch
        self._loader: DataLoader | None = None

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        return len(self.sampler)

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": int, "batch": int}``: the position of the next batch."""
        if self._batch >= len(self):
            return {"epoch": self.epoch + 1, "batch": 0}
        return {"epoch": self.epoch, "batch": self._batch}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Restore a position from :meth:`state_dict`; the next iteration resumes exactly there."""
        if not isinstance(state, Mapping) or not {"epoch", "batch"} <= set(state):
            raise ValueError(f"state must be a dict with keys 'epoch' and 'batch', found {state!r}")
        epoch = check_int("state['epoch']", state["epoch"], 0)
        batch = check_int("state['batch']", state["batch"], 0)
        if batch > len(self):
            raise ValueError(f"state['batch'] must be in [0, {len(self)}] (batches per epoch), found {batch}")
        self.epoch, self._batch = epoch, batch

    def _dataloader(self) -> DataLoader:
        if self._loader is None:
            workers = self.workers
            self._loader = DataLoader(
                _SeededSamples(self.dataset, self._transform, self.seed, "RGB" if self.channels == 3 else "L"),
                batch_sampler=self.sampler,
                num_workers=workers,
                collate_fn=_Collate(self.channels, self.image_size),
                pin_memory=self.pin_memory,
                persistent_workers=workers > 0,
                prefetch_factor=self.prefetch_factor if workers > 0 else None,
                # Its own generator: DataLoader draws a base seed per iteration, which would otherwise
                # come from (and move) the global torch RNG that training uses.
                generator=torch.Generator().manual_seed(_mix(self.seed, 0xD1)),
            )
        return self._loader

    def _stream(self, infinite: bool) -> Iterator[tuple[Tensor, Tensor]]:
        if self._batch >= len(self):  # previous epoch fully consumed but not closed
            self.epoch, self._batch = self.epoch + 1, 0
        self.sampler.set_position(self.epoch, self._batch, infinite)
        for x, y in self._dataloader():
            if self._batch >= len(self):  # infinite: this batch opens the next epoch
                self.epoch, self._batch = self.epoch + 1, 0
            self._batch += 1  # count before yielding, so state_dict() taken after receiving it is exact
            yield x, y

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        yield from self._stream(infinite=False)
        self.epoch, self._batch = self.epoch + 1, 0

    def infinite(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches across epochs forever (step-based training); resumable through :meth:`state_dict`."""
        yield from self._stream(infinite=True)

    def close(self) -> None:
        """Stop the worker processes (they are started again by the next iteration)."""
        loader, self._loader = self._loader, None
        iterator = getattr(loader, "_iterator", None)  # the persistent workers' iterator, if started
        if iterator is not None and callable(getattr(iterator, "_shutdown_workers", None)):
            iterator._shutdown_workers()

    def __enter__(self) -> StreamingLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"StreamingLoader({self.dataset!r}, batch_size={self.batch_size}, image_size={self.image_size}, "
            f"transform={self.transform_name!r}, workers={self.workers}, rank={self.rank}/{self.world_size})"
        )
