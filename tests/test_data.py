"""Data sources and BatchLoader: real files, seeded, CPU, fast."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from _models import assert_close_rel

from tucker_init.training import data as D
from tucker_init.training.data import BatchLoader, ImageDataset, default_dataset, list_datasets, load_dataset

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">i", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _tiny_idx_root(tmp_path: Path, n: int = 5) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path, images, labels


def _toy(n: int = 20, c: int = 1, hw: int = 8) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, c, hw, hw), generator=g, dtype=torch.uint8)
    return ImageDataset("toy", images, torch.arange(n) % 3, ["a", "b", "c"])


# ----------------------------------------------------------------------------------------- sources


@pytest.mark.skipif(not DEBIAN_FMNIST.exists(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_debian(monkeypatch):
    monkeypatch.delenv("TUCKER_INIT_FASHION_MNIST", raising=False)
    train = load_dataset("fashion_mnist", "train")
    test = load_dataset("fashion_mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert int(train.labels.min()) == 0 and int(train.labels.max()) == 9 and len(train.classes) == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.images.float().std() > 50  # real pictures, not zeros
    assert default_dataset() == "fashion_mnist"


def test_idx_from_explicit_root(tmp_path, monkeypatch):
    monkeypatch.delenv("TUCKER_INIT_FASHION_MNIST", raising=False)
    root, images, labels = _tiny_idx_root(tmp_path)
    ds = load_dataset("fashion_mnist", "test", root=root)
    assert ds.images.shape == (5, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert ds.labels.tolist() == labels.tolist() and ds.labels.dtype == torch.int64
    # Same files through the environment variable.
    monkeypatch.setenv("TUCKER_INIT_FASHION_MNIST", str(root))
    assert torch.equal(load_dataset("fashion_mnist").images, ds.images)
    assert default_dataset() == "fashion_mnist"


def test_read_idx_rejects_bad_header(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="not an IDX file"):
        D.read_idx(bad)


def test_missing_dataset_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("TUCKER_INIT_FASHION_MNIST", raising=False)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", root=tmp_path, download=False)
    monkeypatch.setenv("TUCKER_INIT_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="TUCKER_INIT_FASHION_MNIST"):
        load_dataset("fashion_mnist", download=False)

    # No network here: the torchvision downloader's failure becomes a clear RuntimeError.
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(D, "_torchvision_download", offline)
    with pytest.raises(RuntimeError, match=r"download .* failed .*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", root=tmp_path)
    with pytest.raises(RuntimeError, match="TUCKER_INIT_CIFAR10"):
        load_dataset("cifar10", root=tmp_path)


def test_name_and_split_validation():
    assert {"fashion_mnist", "digits", "photos", "image_folder", "cifar10", "cifar100", "mnist"} == set(list_datasets())
    with pytest.raises(ValueError, match=r"name must be one of .*digits.*found 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'test'\], found 'val'"):
        load_dataset("digits", "val")
    with pytest.raises(ValueError, match="root is required"):
        load_dataset("image_folder")


def test_digits_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) == 1438 and len(test) == 359
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255
    again = load_dataset("digits", "train")
    assert torch.equal(again.images, train.images)
    x_all, _ = D._digits_all()
    assert len(train) + len(test) == len(x_all)
    full = torch.cat([train.images, test.images]).flatten(1)
    assert torch.equal(full.sort(0).values, x_all.flatten(1).sort(0).values)  # a partition of all images


def test_photos_real_and_reproducible():
    a = load_dataset("photos", n=64, size=16)
    b = load_dataset("photos", n=64, size=16)
    c = load_dataset("photos", "test", n=64, size=16)
    assert a.images.shape == (64, 3, 16, 16) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert "china" in a.classes and int(a.labels.max()) < len(a.classes)
    per_crop_std = a.images.float().flatten(1).std(1)
    assert (per_crop_std > 0).float().mean() > 0.9  # real content, not constant patches
    assert not torch.equal(load_dataset("photos", n=64, size=16, seed=1).images, a.images)


def test_image_folder(tmp_path):
    from PIL import Image

    colors = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    for cname, rgb in colors.items():
        (tmp_path / cname).mkdir()
        for i in range(3):
            arr = np.zeros((12, 10, 3), dtype=np.uint8) + np.array(rgb, dtype=np.uint8)
            arr[i, i] = 128
            Image.fromarray(arr).save(tmp_path / cname / f"{i}.png")
    train = load_dataset("image_folder", "train", root=tmp_path)
    test = load_dataset("image_folder", "test", root=tmp_path)
    assert train.classes == ["blue", "red"] and len(train) + len(test) == 6 and len(test) == 1
    assert train.images.shape[1:] == (3, 12, 10) and train.images.dtype == torch.uint8
    for img, lab in zip(train.images, train.labels, strict=True):
        assert img[2, 6, 6] == (255 if train.classes[lab] == "blue" else 0)
    sq = load_dataset("image_folder", "train", root=tmp_path, size=8)
    assert sq.images.shape[1:] == (3, 8, 8)


def test_subset():
    ds = _toy(20)
    s = ds.subset(7, seed=3)
    assert len(s) == 7 and torch.equal(s.images, ds.subset(7, seed=3).images)
    assert not torch.equal(s.labels, ds.subset(7, seed=4).labels) or not torch.equal(
        s.images, ds.subset(7, seed=4).images
    )
    with pytest.raises(ValueError, match=r"n must be in \[1, 20\].*found 21"):
        ds.subset(21)


# ------------------------------------------------------------------------------------------ loader


def test_loader_shapes_and_normalization():
    ds = _toy(20, c=1, hw=8)
    loader = BatchLoader(ds, 6, image_size=16, channels=3)
    batches = list(loader)
    assert len(batches) == len(loader) == 3 and loader.epoch == 1
    x, y = batches[0]
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x[:, 0], x[:, 1])  # grey repeated to 3 channels
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.5 and x.max() > 0.5
    # Same size: exact (pixels / 255 - mean) / std.
    x8, y8 = next(iter(BatchLoader(ds, 4, image_size=8, channels=1, shuffle=False, mean=0.2, std=0.3)))
    assert_close_rel(x8, (ds.images[:4].float() / 255 - 0.2) / 0.3)
    assert torch.equal(y8, ds.labels[:4])
    rgb = ImageDataset("rgb", torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), ["x"])
    assert next(iter(BatchLoader(rgb, 2, image_size=8, channels=1)))[0].shape == (2, 1, 8, 8)
    assert len(BatchLoader(ds, 6, drop_last=False)) == 4


def test_loader_determinism_and_epochs():
    ds = _toy(24)
    a = [y for _, y in BatchLoader(ds, 4, seed=5)]
    b = [y for _, y in BatchLoader(ds, 4, seed=5)]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    e0 = next(iter(BatchLoader(ds, 24, seed=5)))[0]
    loader = BatchLoader(ds, 24, seed=5)
    first = next(iter(loader))[0]
    second = next(iter(loader))[0]
    assert torch.equal(first, e0)
    assert not torch.equal(first, second)  # epoch 1 has another order
    assert torch.equal(first.sort(0).values, second.sort(0).values)  # ... of the same images
    assert not torch.equal(first, next(iter(BatchLoader(ds, 24, seed=6)))[0])


def test_loader_resume():
    ds = _toy(30)
    kwargs = dict(seed=2, augment=True, image_size=8)
    full = BatchLoader(ds, 4, **kwargs)
    stream = full.infinite()
    reference = [next(stream) for _ in range(17)]  # 7 batches per epoch: crosses two epoch boundaries

    run = BatchLoader(ds, 4, **kwargs)
    it = run.infinite()
    got = [next(it) for _ in range(9)]
    state = run.state_dict()
    assert state == {"epoch": 1, "batch": 2}
    resumed = BatchLoader(ds, 4, **kwargs)
    resumed.load_state_dict(state)
    it2 = resumed.infinite()
    got += [next(it2) for _ in range(8)]
    for (xa, ya), (xb, yb) in zip(reference, got, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)

    # A broken for-loop: state after the epoch's last batch points at the next epoch.
    loader = BatchLoader(ds, 4, **kwargs)
    for i, _ in enumerate(loader):
        if i == len(loader) - 1:
            break
    assert loader.state_dict() == {"epoch": 1, "batch": 0}


@pytest.mark.parametrize("augment", [False, True])
def test_loader_world_size_matches_single_process(augment):
    ds = _toy(26, hw=8)
    single = list(BatchLoader(ds, 8, seed=1, augment=augment, image_size=8))
    ranks = [list(BatchLoader(ds, 4, seed=1, augment=augment, image_size=8, rank=r, world_size=2)) for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 3
    for b, (xs, ys) in enumerate(single):
        (x0, y0), (x1, y1) = ranks[0][b], ranks[1][b]
        assert torch.equal(xs[0::2], x0) and torch.equal(xs[1::2], x1)
        assert torch.equal(ys[0::2], y0) and torch.equal(ys[1::2], y1)


def test_augmentation_changes_pixels_keeps_shape():
    ds = _toy(16, c=3, hw=32)
    plain = next(iter(BatchLoader(ds, 16, shuffle=False)))[0]
    aug = next(iter(BatchLoader(ds, 16, shuffle=False, augment=True)))[0]
    assert aug.shape == plain.shape == (16, 3, 32, 32)
    changed = (aug != plain).flatten(1).any(1)
    assert changed.float().mean() > 0.8
    assert torch.equal(aug, next(iter(BatchLoader(ds, 16, shuffle=False, augment=True)))[0])


def test_loader_validation():
    ds = _toy(10)
    with pytest.raises(ValueError, match="batch_size must be >= 1, found 0"):
        BatchLoader(ds, 0)
    with pytest.raises(TypeError, match="batch_size must be an int, found float"):
        BatchLoader(ds, 2.0)
    with pytest.raises(ValueError, match=r"batch_size \* world_size .* at most the dataset size 10"):
        BatchLoader(ds, 11)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), found 2"):
        BatchLoader(ds, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="channels must be 1 or 3, found 2"):
        BatchLoader(ds, 2, channels=2)
    with pytest.raises(ValueError, match="std must be a positive"):
        BatchLoader(ds, 2, std=0.0)
    floats = ImageDataset("f", ds.images.float(), ds.labels, ds.classes)
    with pytest.raises(TypeError, match=r"dataset.images must be a uint8 tensor .* found torch.float32"):
        BatchLoader(floats, 2)
    with pytest.raises(ValueError, match=r"state\['batch'\] must be in \[0, 5\]"):
        BatchLoader(ds, 2).load_state_dict({"epoch": 0, "batch": 6})
