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
from ghost.models import GHOST_PREFIX, create_model, default_input_size
from ghost.train import DEFAULT_RUNS_DIR, find_runs, load_final, load_trained

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


def _chosen_run(name: str, runs: Path, ratio: int, dw_size: int) -> Path | None:
    """The finished run of ``name`` (a Ghost model: with this ratio and dw_size) to analyse, or None.

    Full-scale runs are preferred to smoke-scale ones, then the lowest seed, then the newest. Test accuracy
    plays no part, so the choice never depends on the test set.
    """
    chosen: tuple[bool, int, float, Path] | None = None
    for run in find_runs(runs):
        final = load_final(run)
        config = final["config"]
        same_ghost = (config.get("ratio"), config.get("dw_size")) == (ratio, dw_size)
        if config.get("model") == name and (same_ghost or not name.startswith(GHOST_PREFIX)):
            key = ("smoke" in str(final.get("scale", "")), int(config.get("seed", 0)),
                   -(run / "final.json").stat().st_mtime, run)
            chosen = key if chosen is None or key[:3] < chosen[:3] else chosen
    return None if chosen is None else chosen[3]


def load_model(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    runs: str | Path | None = DEFAULT_RUNS_DIR,
    ratio: int = 2,
    dw_size: int = 3,
    seed: int = 0,
) -> LoadedModel:
    """Build ``name`` (a :func:`ghost.models.create_model` name) with trained weights when available.

    Args:
        name: e.g. ``"vgg16_cifar"`` or ``"ghost_vgg16_cifar"``.
        checkpoint: a finished training run folder (with ``final.json``) or a ``state_dict`` file of this
            model; ``None`` uses a finished run of ``name`` under ``runs`` (full scale before smoke scale, then
            the lowest seed, then the newest; never chosen by test accuracy).
        runs: where training runs are looked up (``None``: never; a missing folder holds no runs).
        ratio, dw_size: ``s`` and ``d`` of a Ghost model (runs must match them too).
        seed: seed of the random initialisation when no weights are found.

    Returns:
        The model in eval mode on the CPU and the description of its weights; without a checkpoint or a
        run it is randomly initialised and the description starts with ``"untrained"``.

    Raises:
        ValueError: a checkpoint that does not exist, is a run of another model, or does not fit the model.
    """
    options = {"ratio": ratio, "dw_size": dw_size} if name.startswith(GHOST_PREFIX) else {}
    if checkpoint is None and runs is not None and Path(runs).is_dir():
        checkpoint = _chosen_run(name, Path(runs), ratio, dw_size)
    if checkpoint is None:
        with torch.random.fork_rng():  # seeded, without touching the caller's random state
            torch.manual_seed(seed)
            model = create_model(name, **options)
        return LoadedModel(model.eval(), f"untrained (random init, seed {seed})")
    path = Path(checkpoint)
    if path.is_dir():
        model, final = load_trained(path)
        if final["config"]["model"] != name:
            raise ValueError(f"{path} is a run of {final['config']['model']}, not {name}; pass a run of {name}")
        trained = f"trained: {path} ({final['scale']}; test accuracy {final['test_acc']:.4g}%)"
        return LoadedModel(model.eval(), trained)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist; pass a training run folder or a state_dict file")
    model = create_model(name, **options)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, KeyError, TypeError, AttributeError) as error:
        first = str(error).splitlines()[0]
        raise ValueError(f"{path} is not a state_dict of {name} ({first}); pass that model's weights") from None
    return LoadedModel(model.eval(), f"weights: {path}")


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
