"""Classifying image files with trained weights: the top classes with their names and probabilities.

A :class:`Classifier` is a model in eval mode, its class names and the recipe whose evaluation preprocessing
it was trained with (ImageNet-format recipes: resize the shorter side to ``eval_resize``, center-crop
``eval_crop``, ImageNet normalisation, exactly as the training engine evaluates). :func:`load_classifier`
builds one from a weights file (the 1000 ImageNet classes, named by torchvision's offline metadata) or from a
finished run folder of the training engine (the class list its ``final.json`` records). Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import nn

from ghost.data.imagefolder import EXTENSIONS, check_readable
from ghost.data.sources import ImageFolderSource
from ghost.recipes import Dataset, Recipe, load_recipe
from ghost.runs import Trained, load_trained

__all__ = ["DEFAULT_RECIPE", "Classifier", "imagenet_categories", "load_classifier"]

DEFAULT_RECIPE = "imagenet-ghostnet"
"""The recipe of a weights file that records none: the published ImageNet evaluation (resize 256, crop 224)."""

IMAGENET_CLASSES = 1000


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order (torchvision's metadata; nothing is downloaded)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A model in eval mode on the CPU, the names of its outputs, and the recipe that sets its preprocessing."""

    model: nn.Module
    classes: list[str]
    recipe: Recipe

    def preprocess(self, path: str | os.PathLike) -> torch.Tensor:
        """The normalised ``[1, 3, eval_crop, eval_crop]`` input for the image file ``path``.

        Raises:
            ValueError: a missing file, a format the decoder does not read, or a file that is not an image.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"image {path} does not exist; pass image files")
        if path.suffix.lower() not in EXTENSIONS:
            raise ValueError(f"image {path}: only {', '.join(EXTENSIONS)} files are read; convert it to one")
        check_readable([(str(path), 0)])
        recipe = self.recipe
        source = ImageFolderSource([(str(path), 0)], recipe.train_crop, recipe.eval_resize, recipe.eval_crop,
                                   torch.device("cpu"))
        try:
            return next(source.eval_batches(1))[0]
        except RuntimeError as error:  # a damaged file whose header reads but whose pixels do not decode
            raise ValueError(f"image {path} cannot be decoded ({str(error)[:120]}); replace it") from error

    @torch.no_grad()
    def top(self, path: str | os.PathLike, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable classes of the image at ``path`` (at most all classes), most probable first,
        as ``(name, probability)`` pairs."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        probabilities = self.model(self.preprocess(path)).softmax(dim=1)[0]
        best = probabilities.topk(min(k, len(self.classes)))
        return [(self.classes[i], p) for p, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)]


def _imagenet_recipe(recipe: Recipe) -> Recipe:
    if recipe.dataset != Dataset.IMAGENET:
        raise ValueError(
            f"recipe {recipe.name!r} trains on {recipe.dataset} (32x32 images) and has no preprocessing for image "
            "files; classify with a model trained by an ImageNet-format recipe"
        )
    return recipe


def _from_run(trained: Trained, recipe: str | os.PathLike | None) -> Classifier:
    record = trained.record
    if record.class_names is None:
        raise ValueError(
            f"{trained.source} records no class names (its record predates them); train the run again to classify "
            "with it"
        )
    spec = load_recipe(recipe) if recipe is not None else record.recipe
    return Classifier(trained.model, list(record.class_names), _imagenet_recipe(spec))


def load_classifier(
    name: str, weights: str | os.PathLike, recipe: str | os.PathLike | None = None
) -> Classifier:
    """A :class:`Classifier` for the model ``name`` (see :func:`ghost.models.create_model`) with ``weights``.

    Args:
        name: the model the weights belong to.
        weights: a finished run folder of the training engine (its model, class list and recipe), or a weights
            file of an ImageNet-1k classifier (see :mod:`ghost.models.weights` for the layouts).
        recipe: the recipe (name or JSON path) whose evaluation preprocessing to use; ``None``: the run's, or
            :data:`DEFAULT_RECIPE` for a weights file.

    Raises:
        ValueError: unknown model or recipe, a CIFAR-10 recipe, unreadable weights or weights that do not fit
            ``name``, a run of another model or one that records no class names.
    """
    trained = load_trained(weights, name, num_classes=IMAGENET_CLASSES)
    if trained.record is not None:
        return _from_run(trained, recipe)
    spec = _imagenet_recipe(load_recipe(recipe if recipe is not None else DEFAULT_RECIPE))
    return Classifier(trained.model, imagenet_categories(), spec)
