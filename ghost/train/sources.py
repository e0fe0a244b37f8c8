"""Where the engine's batches come from: a recipe's data source per split (:mod:`ghost.data.sources`), and how a
global batch is shared out.

An epoch is drawn from one generator seeded by ``(seed, epoch)``. A global batch of ``B`` images is cut into
``world_size x accumulate`` micro-batches; the process of rank ``r`` takes micro-batches ``a * world_size + r``
for ``a = 0..accumulate-1`` (:class:`BatchPlan`). So ``N`` processes with ``k`` accumulation steps see exactly
the micro-batches that one process with ``N x k`` accumulation steps sees: results depend on the global
batch and the micro-batch size, not on how many processes share the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ghost.data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DeviceData,
    class_balanced_subset,
    data_fingerprint,
    data_label,
    describe_cifar10,
    load_cifar10,
    validation_split,
)
from ghost.data.imagefolder import scan_image_folder
from ghost.data.sources import BatchSource, ImageFolderSource
from ghost.recipes import Dataset, Recipe

__all__ = ["BatchPlan", "TrainingData", "data_copy_fingerprint", "load_data"]


@dataclass(frozen=True)
class BatchPlan:
    """How one global batch is shared out: ``world_size`` processes x ``accumulate`` micro-batches each."""

    global_batch: int
    accumulate: int = 1
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.accumulate < 1:
            raise ValueError(f"gradient accumulation needs >= 1 micro-batch per step, got {self.accumulate}")
        shares = self.accumulate * self.world_size
        if self.global_batch % shares:
            raise ValueError(
                f"the global batch of {self.global_batch} does not split into {self.world_size} processes x "
                f"{self.accumulate} accumulation steps; choose counts whose product divides {self.global_batch}"
            )

    @property
    def micro_batch(self) -> int:
        """Images per forward pass of one process."""
        return self.global_batch // (self.accumulate * self.world_size)

    def parts(self) -> tuple[slice, ...]:
        """This process's micro-batches, as slices of a global batch, in the order it runs them."""
        m = self.micro_batch
        return tuple(slice((a * self.world_size + self.rank) * m, (a * self.world_size + self.rank + 1) * m)
                     for a in range(self.accumulate))


@dataclass
class TrainingData:
    """The two splits of a run, what the model sees, and what the result records about the data."""

    train: BatchSource
    test: BatchSource
    num_classes: int
    input_size: tuple[int, int, int]
    info: dict[str, Any]
    fingerprint: str


def _subset(labels: list[int], subset: int | None, split: str, total: int) -> torch.Tensor:
    if subset is not None and subset > total:
        raise ValueError(
            f"a {split} subset of {subset} images exceeds the {total} images of the {split} split; "
            f"use at most {total} (or none for all)"
        )
    return class_balanced_subset(torch.tensor(labels), subset if subset is not None else total)


def _cifar10(recipe: Recipe, root: str | Path | None, cache_dir: str | Path | None, device: torch.device,
             validation: bool) -> TrainingData:
    train_images, train_labels = load_cifar10(root, train=True, cache_dir=cache_dir)
    if validation:
        kept, held_out = validation_split(train_labels)
        test_images, test_labels = train_images[held_out], train_labels[held_out]
        train_images, train_labels = train_images[kept], train_labels[kept]
    else:
        test_images, test_labels = load_cifar10(root, train=False, cache_dir=cache_dir)
    splits = []
    for images, labels, subset, split in ((train_images, train_labels, recipe.train_subset, "training"),
                                          (test_images, test_labels, recipe.test_subset, _eval_split(validation))):
        index = _subset(labels.tolist(), subset, split, len(labels))
        splits.append(DeviceData(images[index], labels[index], CIFAR10_MEAN, CIFAR10_STD, device, pad=4))
    info = describe_cifar10(root)
    return TrainingData(splits[0], splits[1], len(CIFAR10_CLASSES), (3, 32, 32),
                        {**info, "label": data_label(info)}, data_fingerprint(root))


def _eval_split(validation: bool) -> str:
    return "validation" if validation else "test"


def _imagefolder(recipe: Recipe, root: str | Path | None, device: torch.device, workers: int,
                 validation: bool) -> TrainingData:
    data = scan_image_folder(root)
    train, test = data.train, data.val
    if validation:
        kept, held_out = validation_split(torch.tensor([label for _, label in train]))
        train, test = [train[i] for i in kept.tolist()], [train[i] for i in held_out.tolist()]
    splits = []
    for samples, subset, split in ((train, recipe.train_subset, "training"),
                                   (test, recipe.test_subset, _eval_split(validation))):
        index = _subset([label for _, label in samples], subset, split, len(samples))
        picked = [samples[i] for i in index.tolist()]
        splits.append(ImageFolderSource(picked, recipe.train_crop, recipe.eval_resize, recipe.eval_crop, device,
                                        workers))
    info = data.describe()
    label = f"{data.root.name} (ImageFolder copy, {len(data.classes)} classes, {len(data.train)} train / " \
            f"{len(data.val)} val images, fingerprint {data.fingerprint()})"
    return TrainingData(splits[0], splits[1], len(data.classes), (3, recipe.eval_crop, recipe.eval_crop),
                        {**info, "label": label}, data.fingerprint())


def data_copy_fingerprint(dataset: Dataset, root: str | Path | None) -> str:
    """The fingerprint a run of ``dataset`` records for the copy at ``root`` (what :func:`load_data` records as
    ``TrainingData.fingerprint``), without decoding an image.

    Raises:
        ValueError: missing or malformed data.
    """
    return data_fingerprint(root) if dataset == Dataset.CIFAR10 else scan_image_folder(root).fingerprint()


def load_data(
    recipe: Recipe,
    root: str | Path | None,
    device: torch.device,
    *,
    cache_dir: str | Path | None = None,
    workers: int = 0,
    validation: bool = False,
) -> TrainingData:
    """The training and test splits of ``recipe``'s dataset from the copy at ``root``.

    Args:
        recipe: decides the dataset, the subsets and (ImageNet) the resolutions.
        root: the copy; ``None`` reads ``$GHOST_CIFAR10`` or ``$GHOST_IMAGENET``.
        device: where batches are built.
        cache_dir: where CIFAR-10's decoding is cached; workers: DataLoader workers (ImageNet).
        validation: evaluate on a validation split held out of the training images
            (:func:`ghost.data.validation_split`) and train on the rest, instead of evaluating on the test split
            (ImageNet: ``val/``); what recipes are chosen on.

    Raises:
        ValueError: missing or malformed data, or a subset larger than its split.
    """
    if workers < 0:
        raise ValueError(f"the number of data-loading workers must be >= 0, got {workers}")
    if recipe.dataset == Dataset.CIFAR10:
        return _cifar10(recipe, root, cache_dir, device, validation)
    return _imagefolder(recipe, root, device, workers, validation)
