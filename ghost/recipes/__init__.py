"""Named training recipes, one JSON file each in ``ghost/recipes/`` (shared by the library and CLIs).

A recipe fixes everything about how a model is trained, on which kind of data (``dataset``: ``cifar10`` for
the GPU-resident CIFAR-10 loader, ``imagenet`` for an ImageFolder-style copy streamed by a DataLoader) and at
which ``scale`` (``full``: the published recipe; ``budget``: reduced so that it finishes on a small machine,
its accuracies are real but not the paper's; ``smoke``: only shows that the pipeline runs). Its length is
given either in ``iterations`` or in ``epochs`` (exactly one of them), and ``milestones`` of the step
schedule are in the same unit. ``batch_size`` is the global batch (over all processes and accumulation
steps) that ``lr`` is meant for. ``bf16``, ``channels_last`` and ``compile`` apply on CUDA; on the CPU
``cpu_bf16``, ``cpu_channels_last`` and ``cpu_compile`` decide instead (bf16 autocast pays off only on CPUs with
native bf16 matrix units, e.g. Intel AMX; elsewhere it is emulated and slow; :meth:`Recipe.device_settings`).
``precise_bn_batches`` > 0 recomputes every BatchNorm's running statistics on that many training batches before
each evaluation (precise BN, ``fvcore.nn.update_bn_stats``), so that a short run is never scored with the stale
statistics of its first epochs (a BN momentum of 0.01, as in torchvision's MobileNetV3, remembers them for
hundreds of steps; each test point also records the score with the running statistics as they were,
``test_acc_running_bn``); 0 evaluates with the running statistics as they are. ImageNet recipes set the input
resolutions: ``train_crop`` (random resized crop), ``eval_resize`` (shorter side) and ``eval_crop`` (center crop);
CIFAR-10 recipes leave them ``null`` (32x32 with a pad-4 random crop).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from pathlib import Path
from typing import Any

from ghost.io import read_json_object

RECIPES_DIR = Path(__file__).resolve().parent


class Schedule(enum.StrEnum):
    """Learning-rate schedule after warmup: ``step`` (x gamma at each milestone) or ``cosine`` (to 0)."""

    STEP = "step"
    COSINE = "cosine"


class Scale(enum.StrEnum):
    """How far a recipe's numbers can be compared with the paper's (see the module docstring)."""

    FULL = "full"
    BUDGET = "budget"
    SMOKE = "smoke"


def _fits(value: Any, annotation: str) -> bool:
    """Whether a JSON value has the type a field is annotated with (``int`` excludes ``bool``; enums are checked
    by value elsewhere)."""
    kinds = {"int": int, "float": (int, float), "bool": bool, "str": str, "None": type(None)}
    parts = [part.strip() for part in annotation.split("|")]
    if any(part not in kinds and part != "tuple[int, ...]" for part in parts):
        return True
    if isinstance(value, bool):
        return "bool" in parts
    if "tuple[int, ...]" in parts:
        return isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return any(isinstance(value, kinds[part]) for part in parts)


class Dataset(enum.StrEnum):
    """The kind of data a recipe trains on."""

    CIFAR10 = "cifar10"
    IMAGENET = "imagenet"


_IMAGENET_SIZES = ("train_crop", "eval_resize", "eval_crop")


@dataclasses.dataclass(frozen=True)
class DeviceSettings:
    """Speed settings of a recipe on one kind of device: bf16 autocast, channels_last, ``torch.compile``."""

    bf16: bool
    channels_last: bool
    compile: bool

    @property
    def label(self) -> str:
        """``fp32`` or ``bf16``, then ``+channels_last`` and ``+compile`` when on (as tables print it)."""
        return ("bf16" if self.bf16 else "fp32") + ("+channels_last" if self.channels_last else "") + \
            ("+compile" if self.compile else "")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training recipe (see the JSON files in ``ghost/recipes/`` for documented examples)."""

    name: str
    description: str
    dataset: Dataset
    scale: Scale
    batch_size: int  # global batch that lr is meant for
    iterations: int | None
    epochs: int | None
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: Schedule
    milestones: tuple[int, ...]
    gamma: float
    warmup_epochs: float  # linear warmup from lr/steps to lr
    label_smoothing: float
    train_subset: int | None  # class-balanced subset of the training images; None = all
    test_subset: int | None  # class-balanced subset of the test images; None = all
    eval_every: int  # epochs between test evaluations (the final epoch is always evaluated)
    eval_batch_size: int
    precise_bn_batches: int  # training batches that recompute the BN statistics before each evaluation; 0 = off
    bf16: bool
    channels_last: bool
    compile: bool
    cpu_bf16: bool  # bf16 autocast when training on the CPU
    cpu_channels_last: bool | None  # channels_last tensors when training on the CPU; None: the probe decides
    cpu_compile: bool | None  # torch.compile of the model when training on the CPU; None: the probe decides
    train_crop: int | None  # ImageNet only: side of the random resized crop used for training
    eval_resize: int | None  # ImageNet only: shorter side before the evaluation center crop
    eval_crop: int | None  # ImageNet only: side of the evaluation center crop

    def __post_init__(self) -> None:
        fields = dataclasses.fields(self)
        problems = [f"'{f.name}' must be {f.type}" for f in fields if not _fits(getattr(self, f.name), f.type)]
        if problems:
            raise ValueError(f"recipe {self.name!r} is invalid: {'; '.join(problems)}")
        for key, kind in (("dataset", Dataset), ("scale", Scale), ("schedule", Schedule)):
            try:
                object.__setattr__(self, key, kind(getattr(self, key)))
            except ValueError:
                problems.append(f"'{key}' must be one of {', '.join(kind)}")
        sizes = [getattr(self, key) for key in _IMAGENET_SIZES]
        if self.dataset == Dataset.IMAGENET and any(size is None or size < 1 for size in sizes):
            problems.append(f"an imagenet recipe needs {', '.join(_IMAGENET_SIZES)} >= 1")
        if self.dataset == Dataset.CIFAR10 and any(size is not None for size in sizes):
            problems.append(f"a cifar10 recipe has null {', '.join(_IMAGENET_SIZES)} (32x32 images)")
        if (self.iterations is None) == (self.epochs is None):
            problems.append("give exactly one of 'iterations' and 'epochs'")
        length = self.iterations if self.epochs is None else self.epochs
        for key in ("batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, key) < 1:
                problems.append(f"'{key}' must be >= 1")
        if length is not None and length < 1:
            problems.append("the length ('iterations' or 'epochs') must be >= 1")
        if any(not 0 < m <= (length or 0) for m in self.milestones) or list(self.milestones) != sorted(
            self.milestones
        ):
            problems.append("'milestones' must be increasing and within the length")
        for key in ("train_subset", "test_subset"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                problems.append(f"'{key}' must be null or >= 1")
        if not 0 <= self.label_smoothing < 1:
            problems.append("'label_smoothing' must be in [0, 1)")
        if self.precise_bn_batches < 0:
            problems.append("'precise_bn_batches' must be >= 0 (0 = off)")
        if self.lr <= 0 or self.warmup_epochs < 0 or self.weight_decay < 0:
            problems.append("'lr' must be > 0, 'warmup_epochs' and 'weight_decay' >= 0")
        if problems:
            raise ValueError(f"recipe {self.name!r} is invalid: {'; '.join(problems)}")

    def device_candidates(self, device_type: str) -> list[DeviceSettings]:
        """The settings this recipe allows on ``device_type`` (``"cuda"`` or ``"cpu"``): one when it pins them all,
        else every combination of the CPU settings it leaves ``null`` (the engine's probe measures them and trains
        with the fastest; precision is always the recipe's decision)."""
        if device_type == "cuda":
            return [DeviceSettings(bf16=self.bf16, channels_last=self.channels_last, compile=self.compile)]
        return [DeviceSettings(self.cpu_bf16, channels_last, compile)
                for channels_last in ((False, True) if self.cpu_channels_last is None else (self.cpu_channels_last,))
                for compile in ((False, True) if self.cpu_compile is None else (self.cpu_compile,))]

    def device_settings(self, device_type: str) -> DeviceSettings:
        """What this recipe turns on when training on ``device_type``; raises when it leaves the choice to the
        engine's probe (:meth:`device_candidates`)."""
        candidates = self.device_candidates(device_type)
        if len(candidates) > 1:
            raise ValueError(f"recipe {self.name!r} leaves its {device_type} settings to the engine's probe; "
                             "pin cpu_channels_last and cpu_compile to choose one")
        return candidates[0]

    @property
    def length(self) -> tuple[int, str]:
        """The length and its unit: ``(64000, "iterations")`` or ``(400, "epochs")``."""
        return (self.iterations, "iterations") if self.epochs is None else (self.epochs, "epochs")

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run for a given number of batches per epoch."""
        length, unit = self.length
        return length if unit == "iterations" else length * steps_per_epoch

    def num_epochs(self, steps_per_epoch: int) -> int:
        """Epochs (passes over the data) of the run; the last one may be partial for iteration lengths."""
        return math.ceil(self.total_steps(steps_per_epoch) / steps_per_epoch)

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        total = self.total_steps(steps_per_epoch)
        warmup = round(self.warmup_epochs * steps_per_epoch)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        if self.schedule == Schedule.COSINE:
            progress = (step - warmup) / max(1, total - warmup)
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        length, _ = self.length
        passed = sum(step * length >= m * total for m in self.milestones)  # exact integer boundaries
        return self.lr * self.gamma**passed

    def with_overrides(
        self, epochs: int | None = None, train_subset: int | None = None, batch_size: int | None = None
    ) -> Recipe:
        """This recipe with a different length in epochs (milestones scaled along), training subset and/or
        global batch size (the learning rate scaled linearly with it, Goyal et al. 2017)."""
        changes: dict[str, Any] = {}
        if batch_size is not None:
            if batch_size < 1:
                raise ValueError(f"the batch size must be >= 1, got {batch_size}")
            changes.update(batch_size=batch_size, lr=self.lr * batch_size / self.batch_size)
        if epochs is not None:
            if epochs < 1:
                raise ValueError(f"the number of epochs must be >= 1, got {epochs}")
            length, _ = self.length
            changes.update(epochs=epochs, iterations=None)
            changes["milestones"] = tuple(
                max(1, min(epochs, round(m * epochs / length))) for m in self.milestones
            )
        if train_subset is not None:
            if train_subset < 1:
                raise ValueError(f"the training subset must be >= 1 images, got {train_subset}")
            changes["train_subset"] = train_subset
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a JSON-ready dict (the format of the recipe files)."""
        data = dataclasses.asdict(self)
        data["milestones"] = list(self.milestones)
        for key in ("dataset", "scale", "schedule"):
            data[key] = str(data[key])
        return data


def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``ghost/recipes/``."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def recipe_from_dict(data: dict[str, Any], source: str = "<dict>") -> Recipe:
    """Build a :class:`Recipe` from a dict with exactly the recipe's fields."""
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown, missing = set(data) - fields, fields - set(data)
    problems = [f"unknown keys {', '.join(sorted(unknown))}"] if unknown else []
    problems += [f"missing keys {', '.join(sorted(missing))}"] if missing else []
    if problems:
        raise ValueError(f"recipe {source} is invalid: {'; '.join(problems)}")
    try:
        return Recipe(**{**data, "milestones": tuple(data["milestones"])})
    except TypeError as error:
        raise ValueError(f"recipe {source} is invalid: a value has the wrong type ({error})") from error


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name (see :func:`list_recipes`) or a recipe JSON file by path."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = RECIPES_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ValueError(
                f"unknown recipe {str(name_or_path)!r}; known recipes: {', '.join(list_recipes())}"
            )
    data = read_json_object(path, "fix or remove the recipe file")
    return recipe_from_dict(data, source=str(path))
