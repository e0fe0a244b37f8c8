"""What the analysis runs on: a model's weights (a trained run, a weights file, or an honest fallback to
random initialisation) and preprocessed images for its input size (CIFAR-10 or ImageNet samples)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ghost.data import CIFAR10_MEAN, CIFAR10_STD, data_label, describe_cifar10, load_cifar10
from ghost.data.batches import DeviceData, class_balanced_subset
from ghost.data.imagenet import load_imagenet_samples
from ghost.models import default_input_size
from ghost.runs import ModelSpec, load_trained

__all__ = ["AnalysisInputs", "LoadedModel", "load_inputs", "load_model", "weights_kind"]


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode with ``weights``, a one-line description of where its weights came from:
    ``"trained: <run> (<scale>; test accuracy ...%)"``, ``"weights: <file>"`` or ``"untrained (random init, ...)"``."""

    model: nn.Module
    weights: str

    @property
    def trained(self) -> bool:
        """Whether the weights were learned (not a random initialisation)."""
        return not self.weights.startswith("untrained")


def weights_kind(weights: str) -> str:
    """``"trained"``, ``"smoke-trained"`` (a smoke-scale run), ``"untrained"`` or ``"weights"`` (a file) from a
    :class:`LoadedModel` description."""
    kind = weights.split(" ")[0].rstrip(":")
    return "smoke-trained" if kind == "trained" and "smoke" in weights else kind


@dataclass(frozen=True)
class AnalysisInputs:
    """Preprocessed images ``[N, 3, H, W]``, which images they are, and which data copy they came from."""

    images: torch.Tensor
    description: str
    data: str


def load_model(
    name: str, checkpoint: str | Path | None = None, *, ratio: int = 2, dw_size: int = 3, seed: int = 0
) -> LoadedModel:
    """Build ``name`` (a :func:`ghost.models.create_model` name) with the weights of ``checkpoint``.

    Which training run to analyse is the caller's choice (``python -m experiments.redundancy`` picks one
    under ``runs/``); this function loads exactly what it is given.

    Args:
        name: e.g. ``"vgg16_cifar"`` or ``"ghost_vgg16_cifar"``.
        checkpoint: a finished training run folder of ``name`` (with ``final.json``) or a ``state_dict`` file
            of this model; ``None``: random initialisation.
        ratio, dw_size: ``s`` and ``d`` of a Ghost model built for a ``state_dict`` file or at random (a run
            folder's own configuration decides for a run).
        seed: seed of the random initialisation when ``checkpoint`` is None.

    Returns:
        The model in eval mode on the CPU and the description of its weights; without a checkpoint it is
        randomly initialised and the description starts with ``"untrained"``.

    Raises:
        ValueError: a checkpoint that does not exist, cannot be read, is a run of another model, or does not
            fit the model.
    """
    spec = ModelSpec.named(name, ratio, dw_size)
    if checkpoint is None:
        with torch.random.fork_rng():  # seeded, without touching the caller's random state
            torch.manual_seed(seed)
            model = spec.build()
        return LoadedModel(model.eval(), f"untrained (random init, seed {seed})")
    trained = load_trained(checkpoint, spec)
    record = trained.record
    if record is None:
        return LoadedModel(trained.model, f"weights: {trained.source}")
    return LoadedModel(trained.model,
                       f"trained: {trained.source} ({record.scale}; {'validation' if record.validation else 'test'} "
                       f"accuracy {record.test_acc:.4g}%)")


def load_inputs(
    name: str, count: int, *, cifar10: str | Path | None = None, imagenet: str | Path | None = None
) -> AnalysisInputs:
    """``count`` preprocessed images for the model ``name``'s input size.

    - 32x32 models: CIFAR-10 test images, class-balanced (the first of each class, by
      :func:`ghost.data.batches.class_balanced_subset`), normalised as in training; ``cifar10`` or
      ``$GHOST_CIFAR10`` locates the copy.
    - 224x224 models: the first ``count`` ImageNet samples
      (:func:`ghost.data.imagenet.load_imagenet_samples`); ``imagenet`` or ``$GHOST_IMAGENET_SAMPLES``
      locates the folder.

    Raises:
        ValueError: ``count < 1`` or another input size; ``DataNotFoundError`` (a ``ValueError``) if the data
            is missing.
    """
    if count < 1:
        raise ValueError(f"the number of images must be at least 1, got {count}")
    size = default_input_size(name)
    if size == (3, 32, 32):
        images, labels = load_cifar10(cifar10, train=False)
        picked = class_balanced_subset(labels, count)
        batch = next(DeviceData(images[picked], labels[picked], CIFAR10_MEAN, CIFAR10_STD).eval_batches(count))
        description = f"CIFAR-10 test split, {len(picked)} images (class-balanced, first of each class)"
        return AnalysisInputs(batch[0], description, data_label(describe_cifar10(cifar10)))
    if size == (3, 224, 224):
        samples = load_imagenet_samples(imagenet, limit=count)
        description = f"ImageNet samples, first {len(samples.labels)} of labels.csv (224x224 centre crops)"
        return AnalysisInputs(samples.images, description, f"{samples.root.name} (real ImageNet JPEGs)")
    raise ValueError(f"{name} expects {size} inputs; only 32x32 (CIFAR-10) and 224x224 (ImageNet) models work")
