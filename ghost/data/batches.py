"""Batches built on the training device from uint8 tensors: no DataLoader, no worker processes.

The whole split lives on the device (150 MB of uint8 for CIFAR-10's training set); each epoch draws one
permutation, one crop offset and one flip per image from a CPU generator (so the data order is the same on
every device), and every batch is gathered, cropped, flipped and normalized with a few tensor ops.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

VALIDATION_FRACTION = 0.1
"""The share of each class of a training set that :func:`validation_split` holds out."""


def validation_split(labels: torch.Tensor, fraction: float = VALIDATION_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(kept, held_out)`` of a training set: per class, ``round(fraction * count)`` images (at least
    one) drawn by a generator of fixed seed 0 are held out as a validation split, the rest are kept for training.

    The split is a function of the labels alone (the same on every machine and for every run seed), so recipes
    can be chosen on it without ever reading the test set. Both index tensors are sorted.

    Raises:
        ValueError: ``fraction`` outside (0, 1), or a class with fewer than two images (nothing left to train on).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must be between 0 and 1, got {fraction}")
    generator = torch.Generator().manual_seed(0)
    held = []
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < 2:
            raise ValueError(f"class {int(c)} has {len(members)} training image(s); a validation split needs at "
                             "least two per class (one to hold out, one to train on)")
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        held.append(members[torch.randperm(len(members), generator=generator)[:count]])
    held_out = torch.sort(torch.cat(held)).values
    kept = torch.ones(len(labels), dtype=torch.bool)
    kept[held_out] = False
    return torch.nonzero(kept).flatten(), held_out


def class_balanced_subset(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the first ``n // C`` images of every class (the remainder to the lowest classes), sorted.

    Deterministic and independent of any seed, so every run on a subset sees the same images; for CIFAR-10 it
    picks the same images from the official batches and from a class-folder copy in the official order.
    """
    if n >= len(labels):
        return torch.arange(len(labels))
    classes = torch.unique(labels)
    share, extra = divmod(n, len(classes))
    picked = [
        torch.nonzero(labels == c).flatten()[: share + (1 if i < extra else 0)] for i, c in enumerate(classes)
    ]
    return torch.sort(torch.cat(picked)).values


class Normalize:
    """uint8 ``[N, 3, H, W]`` batches to float, normalized per channel on ``device`` (optionally in
    ``torch.channels_last`` memory format)."""

    def __init__(
        self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, channels_last: bool = False
    ) -> None:
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.device = torch.device(device)
        self.channels_last = channels_last
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float() * self._scale + self._shift
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class DeviceData:
    """One dataset split held on ``device`` that yields normalized (and, for training, augmented) batches.

    Args:
        images: uint8 ``[N, 3, H, W]``.
        labels: int64 ``[N]``.
        mean, std: per-channel normalization on the 0..1 scale.
        device: where the data lives and batches are built.
        pad: zero padding of the random crop (pad-``pad`` random crop + horizontal flip when augmenting).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device | str = "cpu",
        pad: int = 4,
    ) -> None:
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.pad = pad
        self.normalize = Normalize(mean, std, self.device)
        self._padded: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Training batches per epoch (the last incomplete batch is dropped)."""
        return len(self) // batch_size

    def train_batches(
        self, batch_size: int, generator: torch.Generator, parts: tuple[slice, ...] = (slice(None),)
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled, augmented batches of ``batch_size``; all randomness comes from ``generator``.

        Each batch is yielded as its ``parts`` (slices of the batch, e.g. this process's micro-batches), so
        every process draws the same epoch and takes its own share of it.
        """
        n, (_, _, h, w) = len(self), self.images.shape
        order = torch.randperm(n, generator=generator)
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5
        order, offsets, flips = (t.to(self.device) for t in (order, offsets, flips))
        if self._padded is None:
            self._padded = F.pad(self.images, (self.pad,) * 4)
        rows = torch.arange(h, device=self.device)
        cols = torch.arange(w, device=self.device)
        channels = torch.arange(self.images.shape[1], device=self.device).view(1, -1, 1, 1)
        for step in range(self.steps_per_epoch(batch_size)):
            start = step * batch_size
            for part in parts:
                batch = range(start, start + batch_size)[part]
                batch = slice(batch.start, batch.stop)
                idx = order[batch]
                r = (offsets[batch, 0:1] + rows).view(-1, 1, h, 1)
                c = (offsets[batch, 1:2] + cols).view(-1, 1, 1, w)
                x = self._padded[idx.view(-1, 1, 1, 1), channels, r, c]
                x = torch.where(flips[batch].view(-1, 1, 1, 1), x.flip(3), x)
                yield self.normalize(x), self.labels[idx]

    def eval_batches(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's share (every ``world_size``-th image from ``rank``), normalized, not augmented."""
        images, labels = self.images[rank::world_size], self.labels[rank::world_size]
        for start in range(0, len(labels), batch_size):
            yield self.normalize(images[start : start + batch_size]), labels[start : start + batch_size]
