"""The images every run of every script uses: the data set's splits and their subsets, each drawn
with its own fixed seed, the same whatever the run's seed, so runs with other seeds are trained and
scored on the same images.

The test subset uses seed 0, the rule of ``pipeline.make_loaders`` (and so of
``pipeline.finetune_model(test_subset=n)`` and the CLI): a script and a library job score on the
same test images. (Before the harness, the scripts drew it with seed 1 or 2.)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from tucker_init import BatchLoader, ImageDataset, load_dataset

__all__ = [
    "PRETRAIN_SUBSET_SEED",
    "PROBE_SUBSET_SEED",
    "TEST_SUBSET_SEED",
    "TRAIN_SUBSET_SEED",
    "Splits",
    "fixed_test_loader",
    "load_split",
    "load_splits",
    "subset",
]

PRETRAIN_SUBSET_SEED = 0  # unlabelled pre-training images of every source
TRAIN_SUBSET_SEED = 1  # labelled fine-tuning (and scaler-learning) images
TEST_SUBSET_SEED = 0  # = pipeline.make_loaders' test subset
PROBE_SUBSET_SEED = 3  # linear-probe training images


@functools.lru_cache(maxsize=8)
def load_split(data: str, split: str) -> ImageDataset:
    """``load_dataset(data, split)``, loaded once per process (Fashion-MNIST takes ~3 s)."""
    return load_dataset(data, split)


def subset(ds: ImageDataset, n: int | None, seed: int) -> ImageDataset:
    """A seeded subset of ``n`` images (all of ``ds`` when ``n`` is None or not smaller)."""
    return ds.subset(min(n, len(ds)), seed=seed) if n else ds


@dataclass(frozen=True)
class Splits:
    """A data set's full splits and the fine-tuning subsets of a setting."""

    full_train: ImageDataset
    full_test: ImageDataset
    train: ImageDataset  # TRAIN_SUBSET_SEED
    test: ImageDataset  # TEST_SUBSET_SEED

    def probe(self, n: int | None) -> ImageDataset:
        """Linear-probe training images."""
        return subset(self.full_train, n, PROBE_SUBSET_SEED)


def load_splits(data: str, *, train_subset: int | None = None, test_subset: int | None = None) -> Splits:
    """``data``'s splits with the fixed ``train_subset`` / ``test_subset`` subsets (None: all)."""
    full_train, full_test = load_split(data, "train"), load_split(data, "test")
    return Splits(
        full_train,
        full_test,
        subset(full_train, train_subset, TRAIN_SUBSET_SEED),
        subset(full_test, test_subset, TEST_SUBSET_SEED),
    )


def fixed_test_loader(test: ImageDataset, image_size: int, batch_size: int = 256) -> BatchLoader:
    """An evaluation loader over ``test`` (in order, every image)."""
    return BatchLoader(test, min(batch_size, len(test)), image_size=image_size, shuffle=False, drop_last=False)
