"""What a finished run recorded: :class:`RunRecord`, the typed form of its ``final.json``.

The record is written once, when the run finishes (its presence marks the run finished), as indented JSON with
the keys in the order of :class:`RunRecord`'s fields. Reading accepts every record written so far: the engine's
(``data.root`` before the copy's folder name was recorded as ``data.name``; no ``test_acc_running_bn`` without
precise BN; no ``validation`` in runs on the test split) and the partial records tools write for tests (only
``config``, ``test_acc`` and ``scale`` are required). Where a format changed, the property that reads the value
knows both (:attr:`RunRecord.data_name`, :attr:`RunRecord.num_classes`...), so no caller patches it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ghost.io import read_json_object
from ghost.recipes import Dataset, DeviceSettings, Recipe, recipe_from_dict
from ghost.runs.spec import ModelSpec

__all__ = ["FINAL", "RunRecord", "read_final"]

FINAL = "final.json"
"""The record's file in a run folder."""
_REQUIRED = ("test_acc", "scale", "config")
_CONFIGURATION_KEYS = ("model", "ratio", "dw_size", "seed")


def read_final(run: str | Path) -> dict[str, Any]:
    """The record of the finished run folder ``run`` as the JSON dict it is stored as.

    Raises:
        ValueError: ``run`` holds no record (it is not finished) or a corrupt one.
    """
    path = Path(run) / FINAL
    if not path.is_file():
        raise ValueError(f"{run} is not a finished run (no {FINAL}); train it first")
    return read_json_object(path, f"delete the run folder {run} and train it again")


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """A finished run's result with its full provenance; ``None``: not recorded (see the module docstring).

    ``config`` is the run's identity plus how it trained (dataset, sizes, batch, device settings...), ``data``
    what the data copy was, ``identity`` what makes two runs the same run (:func:`ghost.runs.run_identity`).
    """

    test_acc: float
    scale: str
    config: dict[str, Any]
    test_acc_running_bn: float | None = None
    test_top5: float | None = None
    test_loss: float | None = None
    train_acc: float | None = None
    train_loss: float | None = None
    params: int | None = None
    macs: int | None = None
    data: dict[str, Any] | None = None
    hardware: str | None = None
    torch: str | None = None
    commit: str | None = None
    wall_time_s: float | None = None
    command: str | None = None
    finished_at: str | None = None
    identity: dict[str, Any] | None = None

    _ORDER = (
        "test_acc", "test_acc_running_bn", "test_top5", "test_loss", "train_acc", "train_loss", "params", "macs",
        "scale", "config", "data", "hardware", "torch", "commit", "wall_time_s", "command", "finished_at",
        "identity",
    )  # fmt: skip
    """The order of the keys in ``final.json``."""

    @classmethod
    def from_dict(cls, final: dict[str, Any], source: str = "<dict>") -> RunRecord:
        """The record a ``final.json`` dict holds (``source``, named in errors).

        Raises:
            ValueError: a required key is missing or an unknown key is present.
        """
        missing = [key for key in _REQUIRED if key not in final]
        unknown = sorted(set(final) - set(cls._ORDER))
        if missing or unknown or not isinstance(final.get("config"), dict) or "model" not in final["config"]:
            problems = [f"missing {', '.join(missing)}"] if missing else []
            problems += [f"unknown keys {', '.join(unknown)}"] if unknown else []
            raise ValueError(f"{source} is not a run record ({'; '.join(problems) or 'no config.model'}); "
                             "delete the run folder and train it again")
        return cls(**final)

    @classmethod
    def read(cls, run: str | Path) -> RunRecord:
        """The record of the finished run folder ``run`` (see :func:`read_final`)."""
        return cls.from_dict(read_final(run), str(Path(run) / FINAL))

    def to_dict(self) -> dict[str, Any]:
        """The ``final.json`` dict: the recorded keys in their order (what :meth:`from_dict` read, unchanged)."""
        return {key: getattr(self, key) for key in self._ORDER if getattr(self, key) is not None}

    def to_json(self) -> str:
        """The text of ``final.json``."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @property
    def model(self) -> ModelSpec:
        """The model the run trained."""
        config = self.config
        return ModelSpec(config["model"], config.get("ratio"), config.get("dw_size"))

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self.config["seed"]

    @property
    def dataset(self) -> Dataset:
        """The kind of data the run trained on (CIFAR-10 for records that predate ImageNet-format data)."""
        return Dataset(self.config.get("dataset", Dataset.CIFAR10))

    @property
    def num_classes(self) -> int:
        """The classes of the trained model (10 for records that predate other datasets)."""
        return self.config.get("num_classes", 10)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """The input size the model trained at (3x32x32 for records that predate ImageNet-format data)."""
        return tuple(self.config.get("input_size", (3, 32, 32)))

    @property
    def validation(self) -> bool:
        """Whether the run evaluated on a validation split held out of the training images."""
        return bool(self.config.get("validation", False))

    @property
    def recipe(self) -> Recipe:
        """The recipe the run trained with, rebuilt from its identity.

        Raises:
            ValueError: a record without an identity, or whose recipe this code can no longer build.
        """
        if self.identity is None or "recipe_spec" not in self.identity:
            raise ValueError(f"the record of the {self.config.get('recipe')!r} run holds no recipe_spec; train "
                             "the run again to rebuild its recipe")
        return recipe_from_dict(self.identity["recipe_spec"], source=f"of the run ({self.config.get('recipe')})")

    @property
    def setting(self) -> str:
        """How the run trained (:attr:`DeviceSettings.label`, e.g. ``bf16+channels_last``)."""
        config = self.config
        return DeviceSettings(bool(config.get("bf16")), bool(config.get("channels_last")),
                              bool(config.get("compile"))).label

    @property
    def data_name(self) -> str | None:
        """The data copy's folder name (records before it was recorded name its path, ``data.root``)."""
        if self.data is None:
            return None
        return self.data.get("name") or Path(self.data["root"]).name

    @property
    def class_names(self) -> list[str] | None:
        """The names of the model's outputs in class order; ``None`` for records that predate them."""
        return None if self.data is None else self.data.get("class_names")

    @property
    def shared_identity(self) -> dict[str, Any]:
        """The identity without the configuration (model, ratio, dw_size, seed): what every run of one table
        shares (recipe, data copy, micro-batch)."""
        return {k: v for k, v in (self.identity or {}).items() if k not in _CONFIGURATION_KEYS}
