"""What a run is asked to be: the model (:class:`ModelSpec`) and the run (:class:`RunSpec`: model, recipe, seed).

A model name is a :func:`ghost.models.create_model` name; a Ghost model (``ghost_<host>``) also takes the ratio s
and the cheap operation's kernel size d, :data:`DEFAULT_RATIO` and :data:`DEFAULT_DW_SIZE` unless given. Its label
(``ghost_vgg16_cifar-s2-d3``, a plain model's is its name) names its run folder and is how the CLIs take it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from torch import nn

from ghost.layers import check_dw_size, check_ratio
from ghost.models import GHOST_PREFIX, create_model, default_input_size
from ghost.recipes import Recipe

__all__ = ["DEFAULT_DW_SIZE", "DEFAULT_RATIO", "ModelSpec", "RunSpec", "build_model", "run_identity"]

DEFAULT_RATIO = 2
"""The ratio s of a Ghost model that names none (the paper's)."""
DEFAULT_DW_SIZE = 3
"""The kernel size d of a Ghost model's cheap operation when none is named (the paper's)."""
_SUFFIX = re.compile(r"-s(?P<ratio>\d+)-d(?P<dw_size>\d+)$")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model name with, for a Ghost model, its ratio s and kernel size d (defaults filled in; a plain model
    takes neither).

    Raises:
        ValueError: an unknown model, an invalid s or d, or s/d given for a plain model.
    """

    name: str
    ratio: int | None = None
    dw_size: int | None = None

    def __post_init__(self) -> None:
        default_input_size(self.name)  # raises for an unknown model
        if self.is_ghost:
            object.__setattr__(self, "ratio", check_ratio(DEFAULT_RATIO if self.ratio is None else self.ratio))
            object.__setattr__(self, "dw_size",
                               check_dw_size(DEFAULT_DW_SIZE if self.dw_size is None else self.dw_size))
        elif self.ratio is not None or self.dw_size is not None:
            raise ValueError(
                f"ratio and dw_size apply only to Ghost models ('{GHOST_PREFIX}...'), not to {self.name!r}; "
                f"drop them or use '{GHOST_PREFIX}{self.name}'"
            )

    @classmethod
    def parse(cls, label: str) -> ModelSpec:
        """The model a :attr:`label` names: ``vgg16_cifar``, ``ghost_vgg16_cifar`` (s and d by default) or
        ``ghost_vgg16_cifar-s4-d3``."""
        match = _SUFFIX.search(label)
        if match is None:
            return cls(label)
        if not label.startswith(GHOST_PREFIX):
            raise ValueError(f"{label!r}: the -s<s>-d<d> suffix names a Ghost model's s and d; drop it or use "
                             f"'{GHOST_PREFIX}{label}'")
        return cls(label[: match.start()], int(match["ratio"]), int(match["dw_size"]))

    @classmethod
    def named(cls, name: str, ratio: int | None = None, dw_size: int | None = None) -> ModelSpec:
        """``name`` with ``ratio`` and ``dw_size`` when it is a Ghost model; a plain model ignores them."""
        return cls(name, ratio, dw_size) if name.startswith(GHOST_PREFIX) else cls(name)

    @property
    def is_ghost(self) -> bool:
        """Whether this is a Ghost model (``ghost_<host>``)."""
        return self.name.startswith(GHOST_PREFIX)

    @property
    def host(self) -> str:
        """The plain model a Ghost model converts (``vgg16_cifar`` for ``ghost_vgg16_cifar``), else the name."""
        return self.name.removeprefix(GHOST_PREFIX)

    @property
    def label(self) -> str:
        """The name with a Ghost model's ``-s<s>-d<d>`` (the name of its run folder)."""
        return f"{self.name}-s{self.ratio}-d{self.dw_size}" if self.is_ghost else self.name

    def build(self, num_classes: int | None = None) -> nn.Module:
        """A freshly initialised model (``num_classes``: the builder's default when ``None``)."""
        options: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
        if self.is_ghost:
            options.update(ratio=self.ratio, dw_size=self.dw_size)
        return create_model(self.name, **options)


def build_model(
    model: str, ratio: int | None = None, dw_size: int | None = None, num_classes: int = 10
) -> nn.Module:
    """A freshly initialised ``model`` (:class:`ModelSpec`; ``ratio``/``dw_size`` are ignored for a plain model)."""
    return ModelSpec.named(model, ratio, dw_size).build(num_classes)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What one run trains: a model (see :class:`ModelSpec`: Ghost models take ``ratio`` s and ``dw_size`` d,
    default 2 and 3; plain models take neither), a recipe and a seed; ``validation``: train on the training split
    minus a held-out validation split and evaluate on that (:func:`ghost.data.validation_split`, what recipes
    are chosen on), instead of evaluating on the test split."""

    model: str
    recipe: Recipe
    seed: int = 0
    ratio: int | None = None
    dw_size: int | None = None
    validation: bool = False

    def __post_init__(self) -> None:
        spec = ModelSpec(self.model, self.ratio, self.dw_size)  # raises for an unknown model, before any data
        object.__setattr__(self, "ratio", spec.ratio)
        object.__setattr__(self, "dw_size", spec.dw_size)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @property
    def model_spec(self) -> ModelSpec:
        """The model this run trains."""
        return ModelSpec(self.model, self.ratio, self.dw_size)

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same run (JSON-ready); the device is deliberately not part of it. A validation
        run adds ``"validation": true`` (a test-split run's identity is what it was before the option existed)."""
        identity = {
            "model": self.model,
            "ratio": self.ratio,
            "dw_size": self.dw_size,
            "seed": self.seed,
            "recipe": self.recipe.name,
            "recipe_spec": self.recipe.to_dict(),
        }
        return {**identity, "validation": True} if self.validation else identity


def run_identity(config: RunSpec, fingerprint: str, micro_batch: int) -> dict[str, Any]:
    """The identity a run of ``config`` records (its record's ``identity``) when trained on the data copy with
    ``fingerprint`` (:func:`ghost.train.sources.data_copy_fingerprint`) in micro-batches of ``micro_batch``
    images: two runs with equal identities are the same run."""
    identity = {**config.identity(), "data": fingerprint, "micro_batch": micro_batch}
    return json.loads(json.dumps(identity))
