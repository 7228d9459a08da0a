"""Real image data, held in memory as uint8 tensors, and a seeded, resumable batch loader.

Sources (see :func:`list_datasets`):

- ``fashion_mnist`` / ``mnist``: IDX files (gzip or raw). Lookup order: explicit ``root`` ->
  environment variable (``TUCKER_INIT_FASHION_MNIST`` / ``TUCKER_INIT_MNIST``) -> Debian package location
  (``/usr/share/datasets/fashion-mnist``, from ``apt-get install dataset-fashion-mnist``) -> files
  already downloaded into the cache directory -> torchvision downloader -> an error saying how to install.
- ``cifar10`` / ``cifar100``: torchvision's downloader (needs a network the first time), with the same
  ``root`` -> environment variable -> cache lookup.
- ``digits``: scikit-learn's bundled 8x8 digits, a deterministic 80/20 split (seed 0).
- ``photos``: random square crops of the natural photos bundled with scikit-learn and scikit-image
  (no download needed), labelled by source photo.
- ``image_folder``: any ``root/<class>/<image>`` directory (listed by timm's folder reader), decoded
  into memory with PIL here, or, with ``stream=True`` / through the pipeline, streamed from disk by
  :mod:`tucker_init.training.streaming` (worker processes, resumable rank-sharded sampler).

Every dataset is an :class:`ImageDataset` with ``images`` uint8 ``(N, C, H, W)`` and ``labels`` int64
``(N,)``. :class:`BatchLoader` turns it into float batches, with augmentation done on whole batches.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .streaming import FolderDataset

__all__ = [
    "BatchLoader",
    "ImageDataset",
    "default_dataset",
    "list_datasets",
    "list_image_folder",
    "load_dataset",
    "streamed_datasets",
]

SPLITS = ("train", "test")
DEBIAN_ROOT = Path("/usr/share/datasets")
# Where the torchvision downloader puts files when no root is given.
CACHE_ENV = "TUCKER_INIT_DATA"

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# name -> (env var, Debian directory name, torchvision class name, torchvision sub-folder with raw IDX files)
_IDX_SOURCES: dict[str, tuple[str, str, str, str]] = {
    "fashion_mnist": ("TUCKER_INIT_FASHION_MNIST", "fashion-mnist", "FashionMNIST", "FashionMNIST/raw"),
    "mnist": ("TUCKER_INIT_MNIST", "mnist", "MNIST", "MNIST/raw"),
}
_TORCHVISION_ONLY: dict[str, tuple[str, str]] = {
    "cifar10": ("TUCKER_INIT_CIFAR10", "CIFAR10"),
    "cifar100": ("TUCKER_INIT_CIFAR100", "CIFAR100"),
}
_INSTALL_HINT = {
    "fashion_mnist": "sudo apt-get install dataset-fashion-mnist, or pass root=..., "
    "or set TUCKER_INIT_FASHION_MNIST to a folder with the IDX files",
    "mnist": "pass root=... (a folder with the MNIST IDX files), or set TUCKER_INIT_MNIST, "
    "or run once with network access so torchvision can download it",
    "cifar10": "pass root=... (a folder torchvision's CIFAR10 can read), or set TUCKER_INIT_CIFAR10, "
    "or run once with network access so torchvision can download it",
    "cifar100": "pass root=... (a folder torchvision's CIFAR100 can read), or set TUCKER_INIT_CIFAR100, "
    "or run once with network access so torchvision can download it",
}

# Photos bundled in the scikit-learn / scikit-image wheels (no pooch download needed).
_SKLEARN_PHOTOS = ("china", "flower")
_SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


# --------------------------------------------------------------------------------------------- dataset


@dataclass
class ImageDataset:
    """A labelled image set held in memory.

    Attributes:
        name: dataset name (e.g. ``"fashion_mnist"``).
        images: uint8 tensor ``(N, C, H, W)``, C is 1 (grey) or 3 (RGB).
        labels: int64 tensor ``(N,)``; for ``photos`` it is the index of the source photo.
        classes: class names, ``classes[labels[i]]`` names image ``i``.
    """

    name: str
    images: Tensor
    labels: Tensor
    classes: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def fingerprint(self) -> dict[str, Any]:
        """``{"images": N, "labels_sha256": first 16 hex digits of the sha256 of the int64 labels}``:
        recorded by training jobs so that a resume on other data is refused."""
        labels = self.labels.detach().cpu().to(torch.int64).contiguous().numpy().tobytes()
        return {"images": len(self), "labels_sha256": hashlib.sha256(labels).hexdigest()[:16]}

    def subset(self, n: int, seed: int = 0) -> ImageDataset:
        """A seeded random subset of ``n`` images (not class-balanced), kept in the original order."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, found {type(n).__name__} {n!r}")
        if not 0 < n <= len(self):
            raise ValueError(f"n must be in [1, {len(self)}] (the dataset size), found {n}")
        g = torch.Generator().manual_seed(_mix(seed, 0x5B5E7))
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        return ImageDataset(self.name, self.images[idx], self.labels[idx], list(self.classes))


# ------------------------------------------------------------------------------------------- registry


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return ["fashion_mnist", "digits", "photos", "image_folder", "cifar10", "cifar100", "mnist"]


def default_dataset() -> str:
    """``"fashion_mnist"`` when its files are available locally (env var set or Debian package), else
    ``"digits"`` (always available, bundled with scikit-learn)."""
    env = os.environ.get("TUCKER_INIT_FASHION_MNIST")
    if env:
        return "fashion_mnist"
    if _find_idx_dir(DEBIAN_ROOT / "fashion-mnist", "train") is not None:
        return "fashion_mnist"
    return "digits"


def streamed_datasets() -> list[str]:
    """Names of :func:`list_datasets` that can be read lazily from disk (``load_dataset(..., stream=True)``,
    streamed by :class:`~tucker_init.training.streaming.StreamingLoader`); the pipeline streams these and keeps the
    others in memory."""
    return ["image_folder"]


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    stream: bool = False,
    **kwargs: Any,
) -> ImageDataset | FolderDataset:
    """Load a dataset fully into memory, or (``stream=True``) list it for streaming from disk.

    Args:
        name: one of :func:`list_datasets`.
        split: ``"train"`` or ``"test"``.
        root: folder to read from (required for ``image_folder``; for the named datasets it overrides
            the environment variable and the Debian location, and is where a download goes).
        **kwargs: per dataset:
            ``photos``: ``n`` (crops, default 10000), ``size`` (crop side, default 32), ``seed`` (default 0;
            train uses seed ``2*seed``, test ``2*seed+1``, so the splits are disjoint draws).
            ``image_folder``: ``size`` (resize shorter side then center-crop; needed when images differ in
            size), ``mode`` (``"RGB"`` default or ``"L"``), ``holdout`` (fraction for test when the folder
            has no ``train``/``test`` sub-folders, default 0.2).
            ``fashion_mnist``/``mnist``/``cifar10``/``cifar100``: ``download`` (default True).
        stream: return a :class:`~tucker_init.training.streaming.FolderDataset` (file paths and labels only,
            nothing decoded; kwargs: ``holdout``) instead of decoding every image into memory. Only for
            :func:`streamed_datasets`.

    Returns:
        An :class:`ImageDataset` with uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``; with
        ``stream=True`` a :class:`~tucker_init.training.streaming.FolderDataset`.
    """
    names = list_datasets()
    if not isinstance(name, str) or name not in names:
        raise ValueError(f"name must be one of {names}, found {name!r}")
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, found {split!r}")
    if not isinstance(stream, bool):
        raise TypeError(f"stream must be a bool, found {type(stream).__name__} {stream!r}")
    if stream:
        if name not in streamed_datasets():
            raise ValueError(
                f"stream=True is available for {streamed_datasets()} (read from disk); {name!r} is held in "
                "memory: pass stream=False"
            )
        from .streaming import FolderDataset

        unknown = sorted(set(kwargs) - {"holdout"})
        if unknown:
            raise TypeError(
                f"load_dataset({name!r}, stream=True) takes only holdout= (images are resized by the loader's "
                f"transform), found {unknown}"
            )
        return FolderDataset(root, split, **kwargs)
    if name in _IDX_SOURCES:
        return _load_idx_dataset(name, split, root, **kwargs)
    if name in _TORCHVISION_ONLY:
        return _load_cifar(name, split, root, **kwargs)
    if name == "digits":
        _no_kwargs(name, kwargs)
        return _load_digits(split)
    if name == "photos":
        return _load_photos(split, **kwargs)
    return _load_image_folder(split, root, **kwargs)


def _no_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"load_dataset({name!r}) takes no extra keyword arguments, found {sorted(kwargs)}")


def _cache_dir(name: str) -> Path:
    base = os.environ.get(CACHE_ENV)
    return (Path(base) if base else Path.home() / ".cache" / "tucker_init") / name


# ------------------------------------------------------------------------------------- IDX (MNIST-like)


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _find_idx_dir(folder: Path, split: str) -> tuple[Path, Path] | None:
    """Image and label files of ``split`` directly in ``folder``, or ``None``."""
    prefix = "train" if split == "train" else "t10k"
    images = _find_file(folder, f"{prefix}-images-idx3-ubyte")
    labels = _find_file(folder, f"{prefix}-labels-idx1-ubyte")
    return (images, labels) if images is not None and labels is not None else None


def _find_idx(root: Path, name: str, split: str) -> tuple[Path, Path] | None:
    """Look in ``root`` itself and in the layouts torchvision and Debian use below it."""
    _, debian, _, tv_raw = _IDX_SOURCES[name]
    for folder in (root, root / tv_raw, root / debian):
        found = _find_idx_dir(folder, split)
        if found is not None:
            return found
    return None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) of unsigned bytes into a numpy array.

    Format: 2 zero bytes, a type byte (0x08 = uint8), the number of dimensions, then one big-endian int32
    per dimension, then the data in C order.
    """
    path = Path(path)
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file: expected magic bytes 00 00, found {data[:2].hex()}")
    if data[2] != 0x08:
        raise ValueError(f"{path}: expected IDX type byte 0x08 (unsigned byte), found 0x{data[2]:02x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape)) if shape else 0
    if len(data) - header != expected:
        raise ValueError(f"{path}: header shape {shape} needs {expected} data bytes, found {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=8)
def _decode_idx_pair(images_path: str, labels_path: str, mtimes: tuple[float, float]) -> tuple[Tensor, Tensor]:
    # Cached per process: decompressing Fashion-MNIST train takes ~0.5 s and tests load it repeatedly.
    # mtimes is part of the key so a rewritten file is re-read.
    del mtimes
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"IDX files {images_path} / {labels_path}: expected images (N, H, W) and labels (N,), "
            f"found {images.shape} and {labels.shape}"
        )
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, H, W)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def _torchvision_download(tv_class: str, root: Path, train: bool) -> Any:
    """Download (or just verify) a torchvision dataset into ``root``; returns the torchvision object."""
    import torchvision.datasets as tvd

    return getattr(tvd, tv_class)(str(root), train=train, download=True)


def _download_failed(name: str, root: Path, err: BaseException) -> RuntimeError:
    return RuntimeError(
        f"dataset {name!r} was not found and the torchvision download into {root} failed "
        f"({type(err).__name__}: {err}). To install: {_INSTALL_HINT[name]}"
    )


def _not_found(name: str, searched: list[Path]) -> FileNotFoundError:
    where = ", ".join(str(p) for p in searched)
    return FileNotFoundError(
        f"dataset {name!r} not found (searched {where}; download disabled). To install: {_INSTALL_HINT[name]}"
    )


def _load_idx_dataset(name: str, split: str, root: str | os.PathLike | None, download: bool = True) -> ImageDataset:
    env_var, debian, tv_class, _ = _IDX_SOURCES[name]
    env = os.environ.get(env_var)
    found: tuple[Path, Path] | None = None
    if root is not None:
        # An explicit root is honoured alone: silently reading another copy would hide a typo.
        searched = [Path(root)]
        download_root = Path(root)
    elif env:
        searched = [Path(env)]
        download_root = Path(env)
    else:
        searched = [DEBIAN_ROOT / debian, _cache_dir(name)]
        download_root = _cache_dir(name)
    for folder in searched:
        found = _find_idx(folder, name, split)
        if found is not None:
            break
    if found is None:
        if not download:
            raise _not_found(name, searched)
        try:
            _torchvision_download(tv_class, download_root, split == "train")
        except Exception as err:  # network errors come as URLError, OSError, RuntimeError, ...
            raise _download_failed(name, download_root, err) from err
        found = _find_idx(download_root, name, split)
        if found is None:
            raise _not_found(name, [download_root])
    img_path, lab_path = found
    x, y = _decode_idx_pair(str(img_path), str(lab_path), (img_path.stat().st_mtime, lab_path.stat().st_mtime))
    classes = FASHION_MNIST_CLASSES if name == "fashion_mnist" else [str(i) for i in range(10)]
    n_cls = int(y.max()) + 1 if len(y) else 0
    if n_cls > len(classes):
        classes = [str(i) for i in range(n_cls)]
    # Clone so callers may modify their copy without corrupting the in-process cache.
    return ImageDataset(name, x.clone(), y.clone(), list(classes))


# ------------------------------------------------------------------------------------------- CIFAR


def _load_cifar(name: str, split: str, root: str | os.PathLike | None, download: bool = True) -> ImageDataset:
    env_var, tv_class = _TORCHVISION_ONLY[name]
    env = os.environ.get(env_var)
    folder = Path(root) if root is not None else Path(env) if env else _cache_dir(name)
    try:
        import torchvision.datasets as tvd

        if download:
            ds = _torchvision_download(tv_class, folder, split == "train")
        else:
            ds = getattr(tvd, tv_class)(str(folder), train=split == "train", download=False)
    except Exception as err:
        if not download:
            raise _not_found(name, [folder]) from err
        raise _download_failed(name, folder, err) from err
    x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    y = torch.as_tensor(ds.targets, dtype=torch.int64)
    return ImageDataset(name, x, y, list(ds.classes))


# ------------------------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _digits_all() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    # 17 grey levels 0..16 -> 0..255 so every dataset shares the same uint8 pixel scale.
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(d.target.astype(np.int64))


def _load_digits(split: str) -> ImageDataset:
    x, y = _digits_all()
    n = len(y)
    n_test = round(0.2 * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    idx = perm[n_test:] if split == "train" else perm[:n_test]
    idx = idx.sort().values
    return ImageDataset("digits", x[idx].clone(), y[idx].clone(), [str(i) for i in range(10)])


# ------------------------------------------------------------------------------------------- photos


@functools.lru_cache(maxsize=1)
def _bundled_photos() -> tuple[tuple[str, Tensor], ...]:
    """The bundled photos as uint8 ``(3, H, W)`` tensors; ones that fail to load offline are skipped."""
    photos: list[tuple[str, Tensor]] = []
    try:
        from sklearn.datasets import load_sample_image

        for fname in _SKLEARN_PHOTOS:
            photos.append((fname, torch.from_numpy(load_sample_image(f"{fname}.jpg").copy()).permute(2, 0, 1)))
    except Exception:  # pragma: no cover - depends on the installed wheels
        pass
    try:
        import skimage.data as skd

        for fname in _SKIMAGE_PHOTOS:
            try:
                img = np.asarray(getattr(skd, fname)())
            except Exception:  # pragma: no cover - image missing from this wheel
                continue
            if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
                photos.append((fname, torch.from_numpy(img.copy()).permute(2, 0, 1)))
    except ImportError:  # pragma: no cover - scikit-image is optional
        pass
    if not photos:  # pragma: no cover
        raise RuntimeError("no bundled photos could be loaded: install scikit-learn (and scikit-image)")
    return tuple((n, p.contiguous()) for n, p in photos)


def _load_photos(split: str, n: int = 10000, size: int = 32, seed: int = 0) -> ImageDataset:
    for arg, val in (("n", n), ("size", size)):
        if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
            raise ValueError(f"{arg} must be a positive int, found {val!r}")
    photos = _bundled_photos()
    # Pyramid per photo: downscale by 1, 2, 4, ... while the short side stays >= 2*size, so crops cover
    # several scales (textures at full resolution, whole objects when downscaled).
    pyramids: list[list[Tensor]] = []
    for pname, p in photos:
        if min(p.shape[1:]) < size:
            raise ValueError(f"size must be at most the shortest photo side ({pname}: {tuple(p.shape)}), found {size}")
        levels = [p]
        while min(levels[-1].shape[1:]) // 2 >= 2 * size:
            lvl = F.interpolate(levels[-1][None].float(), scale_factor=0.5, mode="bilinear", antialias=True)
            levels.append(lvl[0].round().clamp(0, 255).to(torch.uint8))
        pyramids.append(levels)

    g = torch.Generator().manual_seed(_mix(2 * seed + (0 if split == "train" else 1), 0x9407))
    src = torch.randint(len(photos), (n,), generator=g)
    u_level, u_y, u_x = torch.rand(3, n, generator=g, dtype=torch.float64)
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    ar = torch.arange(size)
    for i, levels in enumerate(pyramids):
        sel = (src == i).nonzero().flatten()
        if sel.numel() == 0:
            continue
        lev = (u_level[sel] * len(levels)).long().clamp_max(len(levels) - 1)
        for j, img in enumerate(levels):
            s = sel[lev == j]
            if s.numel() == 0:
                continue
            h, w = img.shape[1:]
            y0 = (u_y[s] * (h - size + 1)).long()
            x0 = (u_x[s] * (w - size + 1)).long()
            rows = (y0[:, None] + ar)[:, :, None]  # (k, size, 1)
            cols = (x0[:, None] + ar)[:, None, :]  # (k, 1, size)
            out[s] = img[:, rows, cols].permute(1, 0, 2, 3)  # (3, k, size, size) -> (k, 3, size, size)
    return ImageDataset("photos", out, src.to(torch.int64), [name for name, _ in photos])


# ------------------------------------------------------------------------------------- image folder


def list_image_folder(
    split: str, root: str | os.PathLike | None, holdout: float = 0.2
) -> tuple[list[tuple[str, int]], list[str], Path]:
    """The image files of one split of an image folder, without decoding any: ``(files, classes, folder)``
    with ``files`` a list of ``(path, label)``.

    Listing is timm's (``find_images_and_targets`` of its folder reader): files are found recursively,
    labelled by their leaf folder, classes and files in natural order ("img2" before "img10"). Hidden
    folders and files lying directly in the split folder are skipped. With ``root/train`` and
    ``root/test`` the split is that sub-folder; otherwise a deterministic holdout (seed 0) of
    ``holdout`` of the files is the test split. Both :func:`load_dataset` (in memory) and the streaming
    loader use this listing, so they agree on files, labels and split.
    """
    from timm.data.readers.reader_image_folder import find_images_and_targets

    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, found {split!r}")
    if root is None:
        raise ValueError("root is required for 'image_folder': expected a folder of class sub-folders, found None")
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be in (0, 1), found {holdout!r}")
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"root must be an existing folder of class sub-folders, found {str(base)!r}")
    has_splits = (base / "train").is_dir() and (base / "test").is_dir()
    folder = base / split if has_splits else base
    found, class_to_idx = find_images_and_targets(str(folder), types=_IMAGE_SUFFIXES)
    # Skip files directly in the folder (label "") and anything below a hidden folder or hidden.
    idx_to_class = {i: c for c, i in class_to_idx.items()}
    prefix = len(os.path.join(str(folder), ""))  # timm joins the walked folder and the file name
    kept = [
        (path, idx_to_class[label])
        for path, label in found
        if idx_to_class[label] and not any(p.startswith(".") for p in path[prefix:].split(os.sep))
    ]
    classes = sorted({c for _, c in kept}, key=class_to_idx.__getitem__)  # timm's natural order
    index = {c: i for i, c in enumerate(classes)}
    files = [(path, index[c]) for path, c in kept]
    if not files:
        raise FileNotFoundError(
            f"root must contain class sub-folders with images ({', '.join(_IMAGE_SUFFIXES)}); "
            f"found none under {str(folder)!r}"
        )
    if not has_splits:
        # No train/test sub-folders: deterministic seeded holdout split, like 'digits'.
        perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
        n_test = max(1, round(holdout * len(files))) if len(files) > 1 else 0
        keep = sorted(perm[n_test:] if split == "train" else perm[:n_test])
        files = [files[i] for i in keep]
        if not files:
            raise ValueError(f"split {split!r} of {str(folder)!r} is empty: the folder has too few images")
    return files, classes, folder


def _load_image_folder(
    split: str,
    root: str | os.PathLike | None,
    size: int | None = None,
    mode: str = "RGB",
    holdout: float = 0.2,
) -> ImageDataset:
    from PIL import Image

    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be one of ['RGB', 'L'], found {mode!r}")
    files, classes, folder = list_image_folder(split, root, holdout)
    arrays = []
    for f, _ in files:
        with Image.open(f) as im:
            im = im.convert(mode)
            if size is not None:
                # Shorter side -> size, then center crop to size x size.
                scale = size / min(im.size)
                new = (max(size, round(im.size[0] * scale)), max(size, round(im.size[1] * scale)))
                im = im.resize(new, Image.BILINEAR)
                left, top = (new[0] - size) // 2, (new[1] - size) // 2
                im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.uint8)
        arrays.append(arr[:, :, None] if arr.ndim == 2 else arr)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images under {str(folder)!r} differ in size {sorted(shapes)[:4]}: pass size=<int>")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([c for _, c in files], dtype=torch.int64)
    return ImageDataset("image_folder", x, y, classes)


# ------------------------------------------------------------------------------------------ loader


def _mix(*values: int) -> int:
    """Deterministic 63-bit seed from integers (splitmix64 steps), so nearby tuples give unrelated seeds."""
    h = 0x9E3779B97F4A7C15
    mask = (1 << 64) - 1
    for v in values:
        h = (h ^ (int(v) & mask)) & mask
        h = (h + 0x9E3779B97F4A7C15) & mask
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & mask
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & mask
        h ^= h >> 31
    return h & ((1 << 63) - 1)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, found {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, found {value}")
    return value


class BatchLoader:
    """In-memory, seeded, resumable batch iterator with augmentation done on whole batches (tensor ops,
    no per-image Python loop).

    Each iteration over the loader is one epoch and yields ``(x, y)``: ``x`` float32
    ``(B, channels, image_size, image_size)`` equal to ``(pixels / 255 - mean) / std``, ``y`` int64 ``(B,)``.
    Grey images are repeated to 3 channels when ``channels == 3`` (RGB is converted to luminance when
    ``channels == 1``); images are resized with bilinear ``F.interpolate`` (antialiased when downsampling).

    Distributed sharding, precisely: ``batch_size`` is the per-process batch size and the *global* batch is
    ``G = batch_size * world_size``. The epoch order is ``torch.randperm(N)`` from a generator seeded by
    ``(seed, epoch)`` (identity order when ``shuffle=False``), the same on every rank. Global batch ``b`` is
    ``order[b*G:(b+1)*G]`` and rank ``r`` takes positions ``r::world_size`` of it. So ``world_size``
    processes with ``batch_size`` each see, together, exactly the images that one process with
    ``batch_size * world_size`` sees, batch by batch. Augmentation parameters are drawn for the whole
    global batch from a generator seeded by ``(seed, epoch, b)`` and sliced the same way, so augmented
    pixels match too. With ``drop_last=False`` the last global batch may be short; rank ``r`` then gets
    its ``r::world_size`` share, which can be smaller on some ranks (even empty) — every rank still yields
    the same number of batches.

    ``augment=True``: random crop after zero padding by ``round(4 * image_size / 32)`` pixels (4 px at 32)
    and horizontal flip with probability 1/2, independently per image.

    Resuming: the loader records ``epoch`` and how many batches of it were yielded; a new iteration starts
    from that position. ``state_dict()``/``load_state_dict()`` save and restore it, so a restored loader
    yields exactly the remaining batches of the interrupted run.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        image_size: int = 32,
        channels: int = 3,
        augment: bool = False,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        mean: float = 0.5,
        std: float = 0.5,
    ) -> None:
        if not isinstance(dataset, ImageDataset):
            raise TypeError(f"dataset must be an ImageDataset, found {type(dataset).__name__}")
        images, labels = dataset.images, dataset.labels
        if not isinstance(images, Tensor) or images.dtype != torch.uint8:
            found = images.dtype if isinstance(images, Tensor) else type(images).__name__
            raise TypeError(f"dataset.images must be a uint8 tensor (N, C, H, W), found {found}")
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"dataset.images must have shape (N, C, H, W) with C in (1, 3), found {tuple(images.shape)}"
            )
        if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            found = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"dataset.labels must be a tensor of shape ({images.shape[0]},), found {found}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(f"dataset.labels must be an integer tensor, found {labels.dtype}")
        _check_int("batch_size", batch_size, 1)
        _check_int("image_size", image_size, 1)
        _check_int("world_size", world_size, 1)
        _check_int("rank", rank, 0)
        _check_int("seed", seed, 0)
        if rank >= world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), found {rank}")
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"channels must be 1 or 3, found {channels!r}")
        if not (isinstance(std, int | float) and math.isfinite(std) and std > 0):
            raise ValueError(f"std must be a positive finite number, found {std!r}")
        if not (isinstance(mean, int | float) and math.isfinite(mean)):
            raise ValueError(f"mean must be a finite number, found {mean!r}")
        n = len(dataset)
        global_batch = batch_size * world_size
        if n == 0:
            raise ValueError("dataset must not be empty, found 0 images")
        if drop_last and global_batch > n:
            raise ValueError(
                f"batch_size * world_size ({batch_size} * {world_size} = {global_batch}) must be at most the "
                f"dataset size {n} when drop_last=True, found larger"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.image_size = image_size
        self.channels = channels
        self.augment = bool(augment)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.mean = float(mean)
        self.std = float(std)
        self.global_batch = global_batch
        self.epoch = 0
        self._batch = 0  # batches already yielded in the current epoch
        self._labels = labels.to(torch.int64)

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        n = len(self.dataset)
        return n // self.global_batch if self.drop_last else math.ceil(n / self.global_batch)

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": int, "batch": int}``: position of the next batch (batches already yielded in the
        current epoch)."""
        if self._batch >= len(self):  # the epoch was consumed completely: the next batch is in the next one
            return {"epoch": self.epoch + 1, "batch": 0}
        return {"epoch": self.epoch, "batch": self._batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position from :meth:`state_dict`; the next iteration resumes exactly there."""
        if not isinstance(state, dict) or not {"epoch", "batch"} <= set(state):
            raise ValueError(f"state must be a dict with keys 'epoch' and 'batch', found {state!r}")
        epoch = _check_int("state['epoch']", state["epoch"], 0)
        batch = _check_int("state['batch']", state["batch"], 0)
        if batch > len(self):
            raise ValueError(f"state['batch'] must be in [0, {len(self)}] (batches per epoch), found {batch}")
        self.epoch, self._batch = epoch, batch

    def _order(self, epoch: int) -> Tensor:
        n = len(self.dataset)
        if not self.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(_mix(self.seed, epoch, 0x5F0F))
        return torch.randperm(n, generator=g)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self._batch >= len(self):  # previous epoch fully consumed but not closed (loop broken at the end)
            self.epoch, self._batch = self.epoch + 1, 0
        order = self._order(self.epoch)
        start = self._batch
        for b in range(start, len(self)):
            global_idx = order[b * self.global_batch : (b + 1) * self.global_batch]
            positions = torch.arange(self.rank, len(global_idx), self.world_size)
            x = self._make_batch(global_idx, positions, self.epoch, b)
            y = self._labels[global_idx[positions]]
            self._batch = b + 1  # count before yielding, so state_dict() taken after receiving it is exact
            yield x, y
        self.epoch, self._batch = self.epoch + 1, 0

    def infinite(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches across epochs forever (step-based training); resumable through :meth:`state_dict`."""
        while True:
            yield from self

    def _make_batch(self, global_idx: Tensor, positions: Tensor, epoch: int, b: int) -> Tensor:
        """Float batch ``(k, channels, S, S)`` for positions ``positions`` of global batch ``global_idx``."""
        x = self.dataset.images[global_idx[positions]].float().div_(255.0)  # (k, C, H, W) in [0, 1]
        if x.shape[1] != self.channels:
            if self.channels == 3:
                x = x.repeat(1, 3, 1, 1)
            else:  # RGB -> luminance (ITU-R 601)
                w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
                x = (x * w).sum(1, keepdim=True)
        s = self.image_size
        h, w_ = x.shape[-2:]
        if (h, w_) != (s, s) and x.shape[0] > 0:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=s < max(h, w_))
            x = x.clamp_(0.0, 1.0)  # bilinear/antialias can overshoot slightly
        if self.augment:
            x = self._augment(x, len(global_idx), positions, epoch, b)
        return x.sub_(self.mean).div_(self.std).contiguous()

    def _augment(self, x: Tensor, n_global: int, positions: Tensor, epoch: int, b: int) -> Tensor:
        s = self.image_size
        pad = max(1, round(4 * s / 32))
        # Draw for the whole global batch, then slice this rank's positions: identical across world sizes.
        g = torch.Generator().manual_seed(_mix(self.seed, epoch, b, 0xA06))
        off = torch.randint(0, 2 * pad + 1, (2, n_global), generator=g)[:, positions]
        flip = (torch.rand(n_global, generator=g) < 0.5)[positions]
        k = x.shape[0]
        if k == 0:
            return x
        xp = F.pad(x, (pad, pad, pad, pad))  # zero (black) padding, as in the usual CIFAR recipe
        ar = torch.arange(s)
        rows = (off[0][:, None] + ar)[:, :, None]  # (k, s, 1)
        cols = (off[1][:, None] + ar)[:, None, :]  # (k, 1, s)
        # Advanced indexing gathers every image's own crop in one op: result (k, s, s, C).
        out = xp[torch.arange(k)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
        return torch.where(flip[:, None, None, None], out.flip(-1), out)
