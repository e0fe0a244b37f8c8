"""Loading trained weights from local files (nothing is ever downloaded); :func:`load_trained` is the loader every
caller uses: it decides whether it was given a finished run folder (the model its record names) or weights for a
model it is told.

:func:`load_weights` loads a checkpoint strictly into a model, whichever of the usual layouts it is saved in:

- a raw ``state_dict`` (the official GhostNet PyTorch checkpoint, ``timm.create_model(...).state_dict()``, this
  project's ``model.pt``);
- a dict wrapping it under ``"state_dict"`` or ``"model"`` (timm's and torchvision's training scripts, this
  project's ``checkpoint.pt``), at any depth;
- keys prefixed by ``module.`` (DistributedDataParallel) or ``_orig_mod.`` (``torch.compile``);
- a run folder of this project's training engine (its ``model.pt`` once finished, else its last
  ``checkpoint.pt``).

Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, no pickled code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ghost.runs.folder import CHECKPOINT, MODEL
from ghost.runs.record import FINAL, RunRecord
from ghost.runs.spec import ModelSpec

__all__ = [
    "NO_DOWNLOAD", "Trained", "load_state", "load_trained", "load_weights", "read_state_dict", "resolve_weights",
]

_WRAPPER_KEYS = ("state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 5  # keys named per kind of mismatch in an error message

NO_DOWNLOAD = (
    "no pretrained weights can be downloaded here (this project ships none and never downloads); download a "
    "checkpoint yourself and pass its local path as weights=PATH (a state_dict file in the official GhostNet, "
    "timm or this project's layout, or a run folder of this project's training engine)"
)


def resolve_weights(pretrained: bool, weights: str | os.PathLike | None) -> Path | None:
    """The local checkpoint to load for a ``pretrained``/``weights`` pair (torch.hub's convention), ``None``
    for random initialisation.

    Raises:
        ValueError: ``pretrained=True`` without ``weights`` (there is nothing to download from).
    """
    if weights is not None:
        return Path(weights)
    if pretrained:
        raise ValueError(NO_DOWNLOAD)
    return None


def _checkpoint_file(path: Path) -> Path:
    """``path`` itself, or for a run folder its final weights (``model.pt``), else its last checkpoint."""
    if not path.is_dir():
        if not path.exists():
            raise ValueError(
                f"checkpoint {path} does not exist; pass a weights file or a run folder of the training engine"
            )
        return path
    for name in (MODEL, CHECKPOINT):
        if (path / name).is_file():
            return path / name
    raise ValueError(
        f"{path} is a folder without {MODEL} or {CHECKPOINT}; pass a weights file or a run folder of the "
        "training engine"
    )


def _unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state_dict, from under its wrapper keys and without DDP/compile prefixes."""
    while isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        key = next((k for k in _WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if key is None:
            shown = ", ".join(map(repr, list(state)[:8]))
            raise ValueError(
                f"{path} holds no state_dict (top-level keys: {shown}); save model.state_dict(), alone or under "
                "'state_dict' or 'model'"
            )
        state = state[key]
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict; save model.state_dict()")
    state = dict(state)
    for prefix in _PREFIXES:
        while all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state_dict a checkpoint file or run folder holds (on the CPU), unwrapped (see the module docstring).

    Raises:
        ValueError: no such file, an unreadable/corrupt file, or a file that holds no state_dict.
    """
    file = _checkpoint_file(Path(path))
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load fails in many ways on a damaged or foreign file
        first = str(error).splitlines()[0][:160] if str(error) else ""
        raise ValueError(
            f"{file} cannot be read as PyTorch weights ({type(error).__name__}: {first}); pass a state_dict "
            "written by torch.save holding tensors (a checkpoint with pickled Python objects: re-save its "
            "state_dict alone)"
        ) from error
    return _unwrap(state, file)


def _listed(kind: str, keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"{kind} {', '.join(keys[:_SHOWN])}{more}"


def _mismatches(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """What keeps ``state`` from loading strictly into ``model``, one phrase per kind of problem."""
    expected = model.state_dict()
    # BatchNorm fills a missing num_batches_tracked itself (checkpoints older than PyTorch 0.4.1 lack it)
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(v.shape)} in the file vs {tuple(expected[k].shape)} in the model"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    found = [("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches:", shapes)]
    return [_listed(kind, keys) for kind, keys in found if keys]


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike) -> nn.Module:
    """Load ``state`` (read from ``source``, named in errors) into ``model`` strictly and return ``model``;
    ``model`` is left unchanged when ``state`` does not fit it.

    Raises:
        ValueError: keys or shapes that differ from ``model``'s (the message names them).
    """
    problems = _mismatches(model, state)
    if problems:
        raise ValueError(
            f"the weights in {source} do not fit this {type(model).__name__}: {'; '.join(problems)}; build the "
            "model the checkpoint was saved from (same name, width, num_classes, ratio and dw_size)"
        )
    model.load_state_dict(state, strict=True)
    return model


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the checkpoint at ``path`` (a file or a run folder) into ``model`` strictly and return ``model``.

    ``model`` is left unchanged when the checkpoint does not fit it.

    Raises:
        ValueError: an unreadable file (see :func:`read_state_dict`), or one whose keys or shapes differ from
            ``model``'s (see :func:`load_state`).
    """
    return load_state(model, read_state_dict(path), path)


@dataclass(frozen=True)
class Trained:
    """A model in eval mode on the CPU with trained weights, where they came from, and the record of the run that
    trained it (``None`` for a weights file or an unfinished run's checkpoint)."""

    model: nn.Module
    source: Path
    record: RunRecord | None


def _finished_run(run: Path, expected: ModelSpec | None) -> Trained:
    record = RunRecord.read(run)
    trained = record.model
    if expected is not None and expected.name != trained.name:
        raise ValueError(f"{run} is a run of {trained.name}, not {expected.name}; name the model it trained")
    model, path = trained.build(record.num_classes), run / MODEL
    try:
        load_state(model, read_state_dict(path), path)
    except ValueError as error:
        raise ValueError(f"{path} is corrupt or does not fit {trained.label} ({error}); delete the run folder "
                         f"{run} and train it again") from error
    return Trained(model.eval(), run, record)


def load_trained(source: str | os.PathLike, model: str | ModelSpec | None = None, *,
                 num_classes: int | None = None) -> Trained:
    """The trained model at ``source``: a finished run folder (the model its record names, its ``model.pt``), or
    a weights file or unfinished run folder (see :func:`load_weights`) holding weights of ``model``.

    Args:
        source: a run folder or a weights file.
        model: the model the weights belong to (a name or label, see :meth:`ModelSpec.parse`, or a
            :class:`ModelSpec`); required for weights, checked against a finished run's.
        num_classes: the classes of a model built for weights (``None``: its builder's default).

    Raises:
        ValueError: no model named for weights, a run of another model, a missing, unreadable or corrupt file,
            or weights that do not fit the model (the message names the keys).
    """
    path = Path(source)
    expected = ModelSpec.parse(model) if isinstance(model, str) else model
    if path.is_dir() and (path / FINAL).is_file():
        return _finished_run(path, expected)
    if expected is None:
        raise ValueError(f"{path} is not a finished run folder; name the model its weights belong to")
    built = expected.build(num_classes)
    state = read_state_dict(path)
    try:
        load_state(built, state, path)
    except ValueError as error:
        classes = "" if num_classes is None else f" with {num_classes} classes"
        raise ValueError(f"{path} is not a state_dict of {expected.label}{classes}: {error}") from error
    return Trained(built.eval(), path, None)
