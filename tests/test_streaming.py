"""Streaming image folders (tucker_init.training.streaming): real PNG / JPEG files, DataLoader workers,
seeded order and augmentation, rank sharding, exact resume, the pipeline end to end. CPU, fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tucker_init import pipeline
from tucker_init.training.data import BatchLoader, load_dataset, streamed_datasets
from tucker_init.training.streaming import FolderDataset, ResumableBatchSampler, StreamingLoader, default_workers

CLASSES = ("apple", "banana", "cherry")
PER_CLASS = 20


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """3 classes x 20 real images from scikit-learn digits, upscaled to 24 x 20 (varied sizes would
    work too): PNG and JPEG, RGB and grey, so decoding and the grey -> RGB conversion are exercised."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("folder")
    digits = load_digits()
    for c, cname in enumerate(CLASSES):
        (root / cname).mkdir()
        images = digits.images[digits.target == c][:PER_CLASS]
        for i, img in enumerate(images):
            grey = np.kron(np.rint(img * 255 / 16), np.ones((3, 3)))[:, :].astype(np.uint8)  # 24 x 24
            grey = grey[:, 2:22]  # 24 x 20: not square, so crops and resizes do something
            if i % 3 == 0:
                Image.fromarray(grey, mode="L").save(root / cname / f"img{i}.png")
            else:
                rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1)
                fmt = "png" if i % 3 == 1 else "jpg"
                Image.fromarray(rgb).save(root / cname / f"img{i}.{fmt}")
    (root / ".hidden").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / ".hidden" / "skip.png")  # ignored
    return root


def _batches(loader, n: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i, batch in enumerate(loader):
        if n is not None and i >= n:
            break
        out.append(batch)
    return out


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True)
    )


# ------------------------------------------------------------------------------------------ dataset


def test_folder_dataset_lists_lazily_and_matches_in_memory(folder):
    train, test = FolderDataset(folder, "train"), FolderDataset(folder, "test")
    assert train.classes == list(CLASSES) and len(train) + len(test) == 3 * PER_CLASS and len(test) == 12
    assert train.labels.dtype == torch.int64 and not hasattr(train, "images")  # nothing decoded
    assert all(".hidden" not in f for f in train.files + test.files)
    assert not set(train.files) & set(test.files)
    mem = load_dataset("image_folder", "train", root=folder)  # the in-memory source: same listing and split
    assert mem.classes == train.classes and torch.equal(mem.labels, train.labels)
    assert mem.fingerprint().items() <= train.fingerprint().items()
    assert "files_sha256" in train.fingerprint()
    streamed = load_dataset("image_folder", "test", root=folder, stream=True)
    assert isinstance(streamed, FolderDataset) and streamed.files == test.files
    assert streamed_datasets() == ["image_folder"]
    sub = train.subset(10, seed=3)
    assert len(sub) == 10 and sub.files == train.subset(10, seed=3).files
    assert torch.equal(sub.labels, mem.subset(10, seed=3).labels)  # same indices as ImageDataset.subset
    img = train.load(0)
    assert img.mode == "RGB" and img.size == (20, 24)


def test_order_is_batchloaders(folder):
    """Same seed -> the same global order as the in-memory BatchLoader (labels batch by batch)."""
    ds = FolderDataset(folder, "train")
    mem = load_dataset("image_folder", "train", root=folder)
    stream = StreamingLoader(ds, 8, image_size=16, seed=4, workers=0)
    memory = BatchLoader(mem, 8, image_size=16, seed=4)
    for _ in range(2):  # two epochs
        assert [y.tolist() for _, y in stream] == [y.tolist() for _, y in memory]
    sampler = ResumableBatchSampler(len(ds), 8, seed=4)
    assert torch.equal(sampler.order(5), memory._order(5))


# ------------------------------------------------------------------------------------------ loader


def test_streams_with_workers_reproducibly(folder):
    ds = FolderDataset(folder, "train")
    kwargs = {"image_size": 16, "transform": "mae", "seed": 7}
    with StreamingLoader(ds, 8, workers=2, **kwargs) as loader:
        assert loader.workers == 2 and len(loader) == 6
        two = _batches(loader)
        second_epoch = _batches(loader)  # persistent workers, next epoch
    assert len(two) == 6
    x, y = two[0]
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= -1.0 - 1e-6 and float(x.max()) <= 1.0 + 1e-6  # 0.5 / 0.5 normalization
    zero = _batches(StreamingLoader(ds, 8, workers=0, **kwargs))
    assert _same(two, zero)  # pixels do not depend on the number of workers
    assert _same(two, _batches(StreamingLoader(ds, 8, workers=2, **kwargs)))  # same seed, same batches
    assert not _same(two, second_epoch)  # a new epoch: new order and new crops
    other = _batches(StreamingLoader(ds, 8, workers=0, **{**kwargs, "seed": 8}))
    assert not _same(two, other)


def test_augmentation_is_per_image_not_per_position(folder):
    """An image's crop depends on (seed, epoch, image), not on its place in a batch."""
    ds = FolderDataset(folder, "train")
    a = StreamingLoader(ds, 8, image_size=16, transform="mae", seed=1, workers=0)
    b = StreamingLoader(ds, 4, image_size=16, transform="mae", seed=1, workers=0)
    xa = torch.cat([x for x, _ in a])
    xb = torch.cat([x for x, _ in b])  # same order (same seed), other batch boundaries
    assert torch.equal(xa, xb[: len(xa)])
    ev = StreamingLoader(ds, 8, image_size=16, transform="eval", shuffle=False, workers=0)
    assert _same(_batches(ev), _batches(ev))  # eval: no randomness, identical epochs


def test_main_process_rng_untouched(folder):
    ds = FolderDataset(folder, "train")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _batches(StreamingLoader(ds, 8, image_size=16, transform="finetune", workers=0))
    assert torch.equal(torch.rand(3), expected)


def test_grey_and_channels(folder):
    ds = FolderDataset(folder, "train")
    from PIL import Image

    kinds = [Image.open(f).mode for f in ds.files]
    assert {"L", "RGB"} <= set(kinds)
    x3 = torch.cat([x for x, _ in StreamingLoader(ds, 6, image_size=8, shuffle=False, workers=0)])
    assert x3.shape == (len(ds), 3, 8, 8)
    for x, mode in zip(x3, kinds, strict=True):  # grey files give 3 equal channels, the RGB ones do not
        assert (torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])) == (mode == "L")
    x1 = next(iter(StreamingLoader(ds, 6, image_size=8, channels=1, shuffle=False, workers=0)))[0]
    assert x1.shape == (6, 1, 8, 8)
    cfg = {"mean": (0.1, 0.2, 0.3), "std": (0.5, 0.5, 0.5), "crop_pct": 0.875, "interpolation": "bilinear"}
    loader = StreamingLoader(ds, 6, image_size=8, shuffle=False, workers=0, pretrained_cfg=cfg)
    assert loader.mean == (0.1, 0.2, 0.3) and next(iter(loader))[0].shape == (6, 3, 8, 8)


def test_ranks_shard_the_global_batch(folder):
    ds = FolderDataset(folder, "train")
    kwargs = {"image_size": 16, "transform": "mae", "seed": 2}
    single = _batches(StreamingLoader(ds, 8, workers=0, **kwargs))
    ranks = [_batches(StreamingLoader(ds, 4, rank=r, world_size=2, workers=1 - r, **kwargs)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for (x, y), (x0, y0), (x1, y1) in zip(single, *ranks, strict=True):
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
    seen = [set(ds.files[i] for i in _indices(ds, 4, r, 2, 2)) for r in (0, 1)]
    assert not seen[0] & seen[1]


def _indices(ds, batch_size, rank, world_size, seed):
    sampler = ResumableBatchSampler(len(ds), batch_size, rank=rank, world_size=world_size, seed=seed)
    return [i for batch in sampler for _, i in batch]


def test_short_last_batch_on_ranks(folder):
    """drop_last=False: the last global batch is short; a rank may get an empty share."""
    ds = FolderDataset(folder, "test")  # 12 images
    full = _batches(StreamingLoader(ds, 10, shuffle=False, drop_last=False, transform="eval", workers=0))
    assert [len(y) for _, y in full] == [10, 2]
    parts = [
        _batches(StreamingLoader(ds, 2, rank=r, world_size=5, shuffle=False, drop_last=False, workers=0))
        for r in range(5)
    ]
    assert [[len(y) for _, y in p] for p in parts] == [[2, 1], [2, 1], [2, 0], [2, 0], [2, 0]]
    assert parts[4][1][0].shape == (0, 3, 32, 32) and parts[4][1][1].dtype == torch.int64
    assert torch.equal(torch.cat([p[1][1] for p in parts]), full[1][1])


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_is_exact(folder, workers):
    ds = FolderDataset(folder, "train")
    kwargs = {"image_size": 16, "transform": "mae", "seed": 5, "workers": workers}
    reference = StreamingLoader(ds, 8, **kwargs)
    stream = reference.infinite()
    expected = [next(stream) for _ in range(9)]  # crosses into the second epoch (6 batches each)
    reference.close()
    run = StreamingLoader(ds, 8, **kwargs)
    stream = run.infinite()
    got = [next(stream) for _ in range(4)]  # interrupted after 4 batches (workers prefetch more)
    state = run.state_dict()
    assert state == {"epoch": 0, "batch": 4}
    run.close()
    resumed = StreamingLoader(ds, 8, **kwargs)
    resumed.load_state_dict(state)
    stream = resumed.infinite()
    got += [next(stream) for _ in range(5)]
    assert resumed.state_dict() == {"epoch": 1, "batch": 3}
    resumed.close()
    assert _same(got, expected)
    # Epoch iteration resumes too, and a finished epoch's state points at the next one.
    epoch = StreamingLoader(ds, 8, **kwargs)
    epoch.load_state_dict({"epoch": 1, "batch": 2})
    rest = _batches(epoch)
    assert len(rest) == 4 and _same(rest[:1], expected[8:])
    assert epoch.state_dict() == {"epoch": 2, "batch": 0}


# ---------------------------------------------------------------------------------------- pipeline


def test_pipeline_chooses_the_streaming_loader(folder, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    train = pipeline.make_train_loader("image_folder", 8, image_size=16, root=str(folder), workers=0)
    assert isinstance(train, StreamingLoader) and train.transform_name == "mae" and len(train) == 6
    plain = pipeline.make_train_loader("image_folder", 8, root=str(folder), augment=False, workers=0, train_subset=16)
    assert plain.transform_name == "eval" and len(plain.dataset) == 16
    tr, te = pipeline.make_loaders("image_folder", 8, image_size=16, root=str(folder), workers=0)
    assert tr.transform_name == "finetune" and te.transform_name == "eval"
    assert sum(len(y) for _, y in te) == 12 and not te.shuffle
    assert isinstance(pipeline.make_train_loader("digits", 8), BatchLoader)  # in-memory sets stay in memory
    with pytest.raises(ValueError, match="root is required"):
        pipeline.make_train_loader("image_folder", 8)
    with pytest.raises(ValueError, match=r"transform must be one of \['mae', 'finetune', 'eval'\], found 'crop'"):
        pipeline.make_train_loader("image_folder", 8, root=str(folder), transform="crop")
    with pytest.raises(ValueError, match="pass test_data"):
        pipeline.make_loaders(FolderDataset(folder), 8)


def test_pretrain_on_an_image_folder_end_to_end(folder, tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("TUCKER_INIT_WORKERS", "1")
    spec = pipeline.ModelSpec("vit", depth=2, width=64, num_classes=3, img_size=16, patch_size=4)
    out = tmp_path / "pre"
    kwargs = {"ranks": (8, 16, 16), "batch_size": 4, "device": "cpu", "data_root": str(folder)}
    result = pipeline.pretrain(spec, "image_folder", out, steps=2, **kwargs)
    assert result.train.step == 2 and result.path.is_file()
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["loader"] == {"epoch": 0, "batch": 2}
    assert ckpt["job"]["data_fingerprint"]["files_sha256"] == FolderDataset(folder).fingerprint()["files_sha256"]


def test_cli_pretrain_image_folder(folder, tmp_path, monkeypatch):
    from tucker_init.cli import main

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TUCKER_INIT_WORKERS", "2")
    out = tmp_path / "cli"
    argv = ["pretrain", "--data", "image_folder", "--data-root", str(folder), "--steps", "2", "--batch-size", "4"]
    argv += ["--depth", "2", "--width", "64", "--ranks", "8", "16", "16", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    assert (out / "template.safetensors").is_file()


# -------------------------------------------------------------------------------------- validation


def test_bad_arguments(folder, monkeypatch):
    ds = FolderDataset(folder, "train")
    with pytest.raises(TypeError, match="dataset must be a FolderDataset, found ImageDataset"):
        StreamingLoader(load_dataset("digits"), 4)
    with pytest.raises(ValueError, match="batch_size must be positive, found 0"):
        StreamingLoader(ds, 0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        StreamingLoader(ds, 2.0)
    with pytest.raises(ValueError, match=r"batch_size \* world_size .* at most the dataset size 48"):
        StreamingLoader(ds, 49)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), found 2"):
        StreamingLoader(ds, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="channels must be 1 or 3, found 2"):
        StreamingLoader(ds, 4, channels=2)
    with pytest.raises(ValueError, match="transform must be one of"):
        StreamingLoader(ds, 4, transform="random")
    with pytest.raises(ValueError, match="workers must be at least 0, found -1"):
        StreamingLoader(ds, 4, workers=-1)
    with pytest.raises(ValueError, match="std must be positive"):
        StreamingLoader(ds, 4, std=0.0)
    with pytest.raises(ValueError, match="mean must be a finite number or 3 of them"):
        StreamingLoader(ds, 4, mean=(0.5, 0.5))
    with pytest.raises(TypeError, match="pretrained_cfg must be a mapping"):
        StreamingLoader(ds, 4, pretrained_cfg=[0.5])
    with pytest.raises(TypeError, match="pin_memory must be a bool or None"):
        StreamingLoader(ds, 4, pin_memory=1)
    with pytest.raises(TypeError, match="shuffle must be a bool"):
        StreamingLoader(ds, 4, shuffle=1)
    with pytest.raises(ValueError, match=r"state\['batch'\] must be in \[0, 12\]"):
        StreamingLoader(ds, 4).load_state_dict({"epoch": 0, "batch": 13})
    with pytest.raises(ValueError, match="state must be a dict with keys 'epoch' and 'batch'"):
        StreamingLoader(ds, 4).load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="root is required"):
        FolderDataset(None)
    with pytest.raises(FileNotFoundError, match="root must be an existing folder"):
        FolderDataset(folder / "missing")
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'test'\], found 'val'"):
        FolderDataset(folder, "val")
    with pytest.raises(ValueError, match="holdout must be in"):
        FolderDataset(folder, holdout=1.0)
    with pytest.raises(ValueError, match="stream=True is available for"):
        load_dataset("digits", stream=True)
    with pytest.raises(TypeError, match=r"takes only holdout= .* found \['size'\]"):
        load_dataset("image_folder", root=folder, stream=True, size=8)
    with pytest.raises(TypeError, match="stream must be a bool"):
        load_dataset("image_folder", root=folder, stream="yes")
    with pytest.raises(ValueError, match=r"n must be in \[1, 48\]"):
        ds.subset(0)
    monkeypatch.setenv("TUCKER_INIT_WORKERS", "many")
    with pytest.raises(ValueError, match="TUCKER_INIT_WORKERS must be an int"):
        default_workers()
    monkeypatch.setenv("TUCKER_INIT_WORKERS", "3")
    assert default_workers() == 3 and StreamingLoader(ds, 4).workers == 3
