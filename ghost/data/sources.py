"""The two implementations of :class:`BatchSource`, one split that yields normalized batches on the training
device: CIFAR-10 held on the device (:class:`ghost.data.DeviceData`) and an ImageFolder-style copy streamed by a
``DataLoader`` with workers (:class:`ImageFolderSource`). Either way an epoch is drawn from one generator: the
order of the images and every augmentation; a global batch is yielded as the ``parts`` a process takes of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Sampler

from ghost.data.batches import Normalize
from ghost.data.imagefolder import SeededImageDataset, eval_transform, train_transform
from ghost.data.imagenet import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["BatchSource", "ImageFolderSource", "MicroBatchSampler"]


class BatchSource(Protocol):
    """One split that yields normalized batches on the training device."""

    normalize: Normalize

    def __len__(self) -> int: ...

    def steps_per_epoch(self, batch_size: int) -> int: ...

    def train_batches(
        self, batch_size: int, generator: torch.Generator, parts: tuple[slice, ...] = ...
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def eval_batches(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class MicroBatchSampler(Sampler[list[tuple[int, int]]]):
    """One epoch's micro-batches of ``(index, seed)`` pairs: the epoch's order and per-image seeds are drawn
    from ``generator``; each global batch of ``batch_size`` positions yields its ``parts``."""

    def __init__(
        self, num_images: int, batch_size: int, generator: torch.Generator, parts: tuple[slice, ...]
    ) -> None:
        self.order = torch.randperm(num_images, generator=generator).tolist()
        self.seeds = torch.randint(0, 2**62, (num_images,), generator=generator).tolist()
        self.batch_size, self.parts = batch_size, parts
        self.steps = num_images // batch_size

    def __len__(self) -> int:
        return self.steps * len(self.parts)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.steps):
            batch = range(step * self.batch_size, (step + 1) * self.batch_size)
            for part in self.parts:
                yield [(self.order[i], self.seeds[i]) for i in batch[part]]


class ImageFolderSource:
    """A split of an ImageFolder copy streamed by a ``DataLoader`` with ``workers`` processes.

    Args:
        samples: ``(path, label)`` pairs.
        train_crop: side of the training crop; eval_resize, eval_crop: the evaluation preprocessing.
        device: where batches are normalized (and the model runs).
        workers: DataLoader worker processes (0: load in this process).
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        train_crop: int,
        eval_resize: int,
        eval_crop: int,
        device: torch.device,
        workers: int = 0,
    ) -> None:
        self.samples = samples
        self.train_set = SeededImageDataset(samples, train_transform(train_crop))
        self.eval_set = SeededImageDataset(samples, eval_transform(eval_resize, eval_crop))
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD, device)
        self.workers = workers
        self._pin = device.type == "cuda"

    def __len__(self) -> int:
        return len(self.samples)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Training batches per epoch (the last incomplete batch is dropped)."""
        return len(self) // batch_size

    def _loader(self, dataset: SeededImageDataset, batches: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(
            dataset, batch_sampler=batches, num_workers=self.workers, pin_memory=self._pin,
            persistent_workers=False,
        )
        for images, labels in loader:
            yield self.normalize(images), labels.to(self.normalize.device, non_blocking=True)

    def train_batches(
        self, batch_size: int, generator: torch.Generator, parts: tuple[slice, ...] = (slice(None),)
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of augmented micro-batches (see :class:`MicroBatchSampler`)."""
        sampler = MicroBatchSampler(len(self), batch_size, generator, parts)
        yield from self._loader(self.train_set, sampler)

    def eval_batches(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's share (every ``world_size``-th image from ``rank``), center-cropped."""
        mine = [(i, 0) for i in range(rank, len(self), world_size)]
        yield from self._loader(self.eval_set, [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)])
