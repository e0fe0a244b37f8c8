"""The CIFAR-10 training engine: one run = one model, one recipe, one seed, one output folder.

A run folder holds ``checkpoint.pt`` (written atomically after every epoch while the run is going),
``metrics.csv`` (one row per epoch) and, once finished, ``model.pt`` (final weights) and ``final.json``
(the result with its full provenance; its presence marks the run as finished).

Exact resume: everything random in an epoch (data order, crop offsets, flips, dropout) is drawn from
generators seeded by ``(seed, epoch)``, and the checkpoint holds the model, the optimizer and the
metrics so far, so a run killed at any moment and started again ends with the same weights and metrics as
an uninterrupted one (bit for bit on the CPU; on CUDA, cuDNN autotuning makes runs seeded but not bitwise
reproducible).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ghost.complexity import count_macs, count_params
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
)
from ghost.io import save_torch_atomic, write_json_atomic, write_text_atomic
from ghost.models import GHOST_PREFIX, create_model
from ghost.provenance import command_line, git_commit, hardware
from ghost.train.recipes import Recipe

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
MODEL = "model.pt"
FINAL = "final.json"
_CHECKPOINT_VERSION = 1
_METRIC_COLUMNS = (
    "epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s", "images_per_s",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What one run trains: a model of :func:`ghost.models.create_model` (Ghost models take ``ratio`` s and
    ``dw_size`` d, default 2 and 3; plain models take neither), a recipe and a seed."""

    model: str
    recipe: Recipe
    seed: int = 0
    ratio: int | None = None
    dw_size: int | None = None

    def __post_init__(self) -> None:
        if self.model.startswith(GHOST_PREFIX):
            object.__setattr__(self, "ratio", 2 if self.ratio is None else self.ratio)
            object.__setattr__(self, "dw_size", 3 if self.dw_size is None else self.dw_size)
        elif self.ratio is not None or self.dw_size is not None:
            raise ValueError(
                f"ratio/dw_size (--ratio/--dw-size) apply only to Ghost models ('{GHOST_PREFIX}...'), "
                f"not to {self.model!r}; drop them or use '{GHOST_PREFIX}{self.model}'"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same run (JSON-ready); the device is deliberately not part of it."""
        return {
            "model": self.model,
            "ratio": self.ratio,
            "dw_size": self.dw_size,
            "seed": self.seed,
            "recipe": self.recipe.name,
            "recipe_spec": self.recipe.to_dict(),
        }


def build_model(
    model: str, ratio: int | None = None, dw_size: int | None = None, num_classes: int = 10
) -> nn.Module:
    """A freshly initialised CIFAR model; ``ratio``/``dw_size`` (Ghost models only) default to 2 and 3."""
    if not model.startswith(GHOST_PREFIX):
        return create_model(model, num_classes=num_classes)
    ratio, dw_size = 2 if ratio is None else ratio, 3 if dw_size is None else dw_size
    return create_model(model, num_classes=num_classes, ratio=ratio, dw_size=dw_size)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts`` (e.g. ``(seed, "data", epoch)``), stable across processes."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else the CPU; raises for an unavailable CUDA device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available; use --device cpu")
    return device


class Engine:
    """Model, optimizer and loss of a recipe on one device: runs training steps and evaluation.

    On CUDA the recipe's ``bf16`` (autocast), ``channels_last`` and ``compile`` options apply; on the CPU
    training is fp32 and eager.
    """

    def __init__(self, model: nn.Module, recipe: Recipe, device: torch.device, steps_per_epoch: int) -> None:
        cuda = device.type == "cuda"
        self.recipe = recipe
        self.device = device
        self.steps_per_epoch = steps_per_epoch
        self.bf16 = cuda and recipe.bf16
        self.channels_last = cuda and recipe.channels_last
        self.compiled = cuda and recipe.compile
        if cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.model = model.to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if self.compiled else self.model
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
            **({"fused": True} if cuda else {}),
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def train_steps(
        self,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
        first_step: int,
        stop_step: int,
        bar: tqdm | None = None,
    ) -> tuple[float, float]:
        """Optimizer steps ``first_step .. stop_step - 1`` on ``batches``; returns (mean loss, accuracy %)."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        for step, (x, y) in zip(range(first_step, stop_step), batches, strict=False):
            lr = self.recipe.lr_at(step, self.steps_per_epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with self._autocast():
                out = self.forward(x)
                loss = self.criterion(out, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
            if bar is not None:
                bar.update(1)
        return loss_sum.item() / max(1, seen), 100.0 * correct.item() / max(1, seen)

    @torch.no_grad()
    def evaluate(self, data: DeviceData) -> tuple[float, float]:
        """Mean cross-entropy (no smoothing) and top-1 accuracy (%) on all of ``data``."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for x, y in data.eval_batches(self.recipe.eval_batch_size):
            with self._autocast():
                out = self.forward(x)
            loss_sum += F.cross_entropy(out.float(), y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
        return loss_sum.item() / len(data), 100.0 * correct.item() / len(data)

    def state_dict(self) -> dict[str, Any]:
        """Model and optimizer state (what a checkpoint needs besides the run's progress)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def _json_ready(data: Any) -> Any:
    return json.loads(json.dumps(data))


def _differences(expected: dict[str, Any], found: dict[str, Any], prefix: str = "") -> str:
    """The keys (nested dicts as ``a.b``) whose values differ, as ``key: <found> there, <expected> now``."""
    parts = []
    for key in sorted(set(expected) | set(found)):
        new, old = expected.get(key), found.get(key)
        if isinstance(new, dict) and isinstance(old, dict):
            parts.append(_differences(new, old, f"{prefix}{key}."))
        elif new != old:
            parts.append(f"{prefix}{key}: {old!r} there, {new!r} now")
    return ", ".join(p for p in parts if p)


def _read_final(path: Path) -> dict[str, Any]:
    try:
        final = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} is corrupt ({error}); delete the run folder {path.parent} to redo the run"
        ) from error
    if not isinstance(final, dict) or "identity" not in final:
        raise ValueError(
            f"{path} is not a final.json of this engine; delete the run folder {path.parent} to redo it"
        )
    return final


def _load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        version, found = state["version"], state["identity"]
    except Exception as error:  # torch.load fails in many ways on a damaged file; all mean "unreadable"
        raise ValueError(
            f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}: {str(error)[:120]}); "
            f"delete it to restart this run from scratch"
        ) from error
    if version != _CHECKPOINT_VERSION or found != identity:
        raise ValueError(
            f"checkpoint {path} belongs to a different run ({_differences(identity, found)}); "
            f"use another output folder or delete {path.parent} to start over"
        )
    return state


def _metrics_csv(history: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train one run into ``out_dir`` (resuming its checkpoint if any) and return its ``final.json`` dict.

    A finished run (``final.json`` present and of the same configuration) is returned without training.

    Args:
        config: model, recipe and seed.
        out_dir: the run folder.
        data_root: the CIFAR-10 copy (``None``: ``$GHOST_CIFAR10``); cache_dir: where its decoding is cached.
        device: ``"cpu"``, ``"cuda"`` or ``None``/``"auto"``.
        progress: show a tqdm progress bar.
        command: the command line recorded in the result (default: this process's command line).

    Raises:
        ValueError: missing/malformed data, unknown model, invalid arguments, or an output folder holding a
            corrupt checkpoint or another configuration's run (the message says how to fix it).
    """
    out_dir = Path(out_dir)
    recipe = config.recipe
    identity = _json_ready({**config.identity(), "data": data_fingerprint(data_root)})
    final_path = out_dir / FINAL
    if final_path.is_file():
        final = _read_final(final_path)
        if final["identity"] != identity:
            raise ValueError(
                f"{out_dir} holds a finished run of a different configuration "
                f"({_differences(identity, final['identity'])}); use another output folder or delete it"
            )
        return final

    started = time.perf_counter()
    device = resolve_device(device)
    torch.manual_seed(derive_seed(config.seed, "init"))
    model = build_model(config.model, config.ratio, config.dw_size, num_classes=len(CIFAR10_CLASSES))
    params, macs = count_params(model), count_macs(model, input_size=(3, 32, 32))
    data_info = describe_cifar10(data_root)
    splits = []
    for is_train, subset in ((True, recipe.train_subset), (False, recipe.test_subset)):
        images, labels = load_cifar10(data_root, train=is_train, cache_dir=cache_dir)
        if subset is not None:
            index = class_balanced_subset(labels, subset)
            images, labels = images[index], labels[index]
        splits.append(DeviceData(images, labels, CIFAR10_MEAN, CIFAR10_STD, device, pad=4))
    train_data, test_data = splits
    steps_per_epoch = train_data.steps_per_epoch(recipe.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(train_data)} training images make no full batch of {recipe.batch_size}; use a larger "
            f"--train-subset or a recipe with a smaller batch_size"
        )
    total_steps, num_epochs = recipe.total_steps(steps_per_epoch), recipe.num_epochs(steps_per_epoch)

    engine = Engine(model, recipe, device, steps_per_epoch)
    train_data.channels_last = test_data.channels_last = engine.channels_last

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp"):  # left by a run killed in the middle of an atomic write
        stale.unlink()
    checkpoint_path = out_dir / CHECKPOINT
    history: list[dict[str, Any]] = []
    wall_time, devices = 0.0, []
    if checkpoint_path.is_file():
        state = _load_checkpoint(checkpoint_path, identity)
        engine.load_state_dict(state)
        history, wall_time, devices = state["history"], state["wall_time_s"], state["devices"]
    devices = sorted(set(devices) | {hardware(device)})

    label = config.model + (f" s={config.ratio} d={config.dw_size}" if config.ratio is not None else "")
    bar = tqdm(
        total=total_steps,
        initial=min(total_steps, len(history) * steps_per_epoch),
        desc=f"{label} seed {config.seed}",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
    )
    segment_start = started
    for epoch in range(len(history), num_epochs):
        torch.manual_seed(derive_seed(config.seed, "model", epoch))
        generator = torch.Generator().manual_seed(derive_seed(config.seed, "data", epoch))
        first, stop = epoch * steps_per_epoch, min(total_steps, (epoch + 1) * steps_per_epoch)
        bar.set_description(f"{label} seed {config.seed} epoch {epoch + 1}/{num_epochs}")
        epoch_start = time.perf_counter()
        train_loss, train_acc = engine.train_steps(
            train_data.train_batches(recipe.batch_size, generator), first, stop, bar
        )
        epoch_time = time.perf_counter() - epoch_start
        test_loss = test_acc = math.nan
        if (epoch + 1) % recipe.eval_every == 0 or epoch == num_epochs - 1:
            test_loss, test_acc = engine.evaluate(test_data)
        history.append(
            {
                "epoch": epoch + 1,
                "step": stop,
                "lr": recipe.lr_at(stop - 1, steps_per_epoch),
                "train_loss": round(train_loss, 6),
                "train_acc": round(train_acc, 4),
                "test_loss": round(test_loss, 6),
                "test_acc": round(test_acc, 4),
                "epoch_time_s": round(epoch_time, 3),
                "images_per_s": round((stop - first) * recipe.batch_size / epoch_time, 1),
            }
        )
        bar.set_postfix(loss=f"{train_loss:.3f}", train=f"{train_acc:.1f}%", test=f"{test_acc:.1f}%")
        now = time.perf_counter()
        wall_time, segment_start = wall_time + now - segment_start, now
        save_torch_atomic(
            {
                "version": _CHECKPOINT_VERSION,
                "identity": identity,
                "history": history,
                "wall_time_s": wall_time,
                "devices": devices,
                **engine.state_dict(),
            },
            checkpoint_path,
        )
        write_text_atomic(out_dir / METRICS, _metrics_csv(history))
    bar.close()

    last = history[-1]
    final = {
        "test_acc": last["test_acc"],
        "test_loss": last["test_loss"],
        "train_acc": last["train_acc"],
        "train_loss": last["train_loss"],
        "params": params,
        "macs": macs,
        "scale": recipe.scale,
        "config": {
            **identity,
            "epochs": num_epochs,
            "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps,
            "train_images": len(train_data),
            "test_images": len(test_data),
            "bf16": engine.bf16,
            "channels_last": engine.channels_last,
            "compile": engine.compiled,
        },
        "data": {**data_info, "label": data_label(data_info), "fingerprint": identity["data"]},
        "hardware": "; ".join(devices),
        "torch": torch.__version__,
        "commit": git_commit(),
        "wall_time_s": round(wall_time + time.perf_counter() - segment_start, 2),
        "command": command if command is not None else command_line(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "identity": identity,
    }
    save_torch_atomic({k: v.detach().cpu() for k, v in engine.model.state_dict().items()}, out_dir / MODEL)
    write_json_atomic(final_path, final)
    checkpoint_path.unlink(missing_ok=True)
    return final
