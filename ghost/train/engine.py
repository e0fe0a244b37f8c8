"""The training engine, in the shape of torchvision's classification reference: :func:`train_one_epoch`,
:func:`evaluate` and a run driver, :func:`train` (one run = one model, one recipe, one seed, one run folder).

The data source is a parameter (CIFAR-10 held on the device, or an ImageFolder copy streamed by a
DataLoader, see :mod:`ghost.data.sources`); distribution is handled by :mod:`ghost.train.distributed`
(one process, or ``torchrun`` with DistributedDataParallel); the run folder, its lock and checkpoints by
:class:`ghost.runs.RunFolder`, the result by :class:`ghost.runs.RunRecord`.

Exact resume: everything random in an epoch (data order, augmentation, dropout) is drawn from generators
seeded by ``(seed, epoch)``, and the checkpoint holds the model, the optimizer and the metrics so far, so a
run killed at any moment and started again ends with the same weights and metrics as an uninterrupted one
(bit for bit on the CPU; on CUDA, cuDNN autotuning makes runs seeded but not bitwise reproducible).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ghost.complexity import count_macs, count_params
from ghost.data.sources import BatchSource
from ghost.provenance import command_line, git_commit, hardware
from ghost.recipes import DeviceSettings, Recipe
from ghost.runs import RunFolder, RunRecord, RunSpec, build_model, check_writable, run_identity
from ghost.train.distributed import SINGLE_PROCESS, Distributed, distributed_session
from ghost.train.probe import ProbeResult, choose_settings
from ghost.train.sources import BatchPlan, TrainingData, load_data

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Parallelism:
    """How a run's global batch is computed: ``accumulate`` micro-batches per process and optimizer step,
    ``workers`` DataLoader processes (ImageFolder data), ``sync_bn``: BatchNorm statistics over all
    processes (``torch.nn.SyncBatchNorm``, CUDA only)."""

    accumulate: int = 1
    workers: int = 0
    sync_bn: bool = False


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts`` (e.g. ``(seed, "data", epoch)``), stable across processes."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """Seed what is random in epoch ``epoch`` of a run seeded ``seed``: the global generator (dropout) of process
    ``rank``, and the returned data generator (order and augmentation), the same on every process."""
    torch.manual_seed(derive_seed(seed, "model", epoch, rank))
    return torch.Generator().manual_seed(derive_seed(seed, "data", epoch))


def epoch_steps(epoch: int, steps_per_epoch: int, total: int) -> range:
    """The optimizer steps of epoch ``epoch`` (0-based) in a run of ``total`` steps (the last may be partial)."""
    return range(epoch * steps_per_epoch, min(total, (epoch + 1) * steps_per_epoch))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else the CPU; raises for an unknown or unavailable device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {str(device)!r}; use auto, cpu or cuda") from error
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"training runs on cpu or cuda, not {device.type!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("a CUDA device was requested but none is available; use the CPU")
    return device


def enable_fast_cuda_math() -> None:
    """Let cuDNN autotune convolutions and use TF32 matmuls (process-wide; call it once, from a CLI)."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


@dataclasses.dataclass
class Engine:
    """A model, its optimizer and loss on one device. ``model`` is the bare model (what checkpoints hold);
    ``forward`` runs the batches (wrapped in DDP and/or compiled); ``ddp`` is the DDP wrapper, if any."""

    model: nn.Module
    forward: nn.Module
    ddp: DistributedDataParallel | None
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    device: torch.device
    bf16: bool
    channels_last: bool
    compiled: bool

    @classmethod
    def create(
        cls, model: nn.Module, recipe: Recipe, device: torch.device, dist: Distributed = SINGLE_PROCESS,
        sync_bn: bool = False, settings: DeviceSettings | None = None,
    ) -> Engine:
        """Move ``model`` to ``device`` and set it up for ``settings`` (bf16 autocast, channels_last, compile;
        default: ``recipe``'s on that kind of device, :meth:`Recipe.device_settings`)."""
        cuda = device.type == "cuda"
        settings = settings or recipe.device_settings(device.type)
        if sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(device)
        if settings.channels_last:
            model.to(memory_format=torch.channels_last)
        wrapped = dist.wrap(model, device)
        ddp = wrapped if isinstance(wrapped, DistributedDataParallel) else None
        optimizer = torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay, **({"fused": True} if cuda else {}),
        )
        return cls(
            model=model, forward=torch.compile(wrapped) if settings.compile else wrapped, ddp=ddp,
            optimizer=optimizer, criterion=nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
            device=device, bf16=settings.bf16, channels_last=settings.channels_last, compiled=settings.compile,
        )

    def autocast(self) -> torch.autocast:
        """bf16 autocast when enabled, else a no-op."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def state_dict(self) -> dict[str, Any]:
        """Model and optimizer state (what a checkpoint needs besides the run's progress)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (saved on any device: the optimizer keeps this engine's fused setting and
        its momentum takes each parameter's device and memory format)."""
        self.model.load_state_dict(state["model"])
        fused = [group.get("fused") for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, setting in zip(self.optimizer.param_groups, fused, strict=True):
            group["fused"] = setting
            for p in group["params"]:
                buffer = self.optimizer.state.get(p, {}).get("momentum_buffer")
                if buffer is not None:
                    self.optimizer.state[p]["momentum_buffer"] = torch.empty_like(p).copy_(buffer)


@dataclasses.dataclass(frozen=True)
class EpochStats:
    """Mean training loss and top-1 accuracy (%) over the images of an epoch (all processes)."""

    loss: float
    top1: float


@dataclasses.dataclass(frozen=True)
class EvalStats:
    """Mean cross-entropy (no smoothing), top-1 and top-5 accuracy (%) over ``images`` test images."""

    loss: float
    top1: float
    top5: float
    images: int


def train_one_epoch(
    engine: Engine,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    steps: range,
    lr_at: Callable[[int], float],
    accumulate: int = 1,
    dist: Distributed = SINGLE_PROCESS,
    bar: tqdm | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> EpochStats:
    """Optimizer steps ``steps`` on ``batches`` (``accumulate`` micro-batches per step; under DDP the
    gradients are averaged over the processes once per step). ``loss_fn(inputs, outputs, labels)``, if given,
    replaces ``engine.criterion(outputs, labels)`` (e.g. :class:`ghost.train.DistillationLoss`, which runs a
    teacher on the inputs)."""
    engine.forward.train()
    loss_sum = torch.zeros((), device=engine.device)
    correct = torch.zeros((), device=engine.device)
    seen = torch.zeros((), device=engine.device)
    for step in steps:
        for group in engine.optimizer.param_groups:
            group["lr"] = lr_at(step)
        engine.optimizer.zero_grad(set_to_none=True)
        for micro in range(accumulate):
            x, y = next(batches)
            last = micro == accumulate - 1
            no_sync = engine.ddp.no_sync() if engine.ddp is not None and not last else contextlib.nullcontext()
            with no_sync:
                with engine.autocast():
                    out = engine.forward(x)
                    loss = engine.criterion(out, y) if loss_fn is None else loss_fn(x, out, y)
                (loss / accumulate).backward()
            loss_sum += loss.detach().float() * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
        engine.optimizer.step()
        if bar is not None:
            bar.update(1)
    loss_sum, correct, seen = dist.all_reduce_sum(loss_sum, correct, seen)
    return EpochStats(loss_sum.item() / max(1.0, seen.item()), 100.0 * correct.item() / max(1.0, seen.item()))


@torch.no_grad()
def evaluate(
    engine: Engine, data: BatchSource, batch_size: int, dist: Distributed = SINGLE_PROCESS
) -> EvalStats:
    """Loss and top-1/top-5 accuracy on all of ``data`` (each process evaluates its share)."""
    engine.forward.eval()
    loss_sum = torch.zeros((), device=engine.device)
    top1 = torch.zeros((), device=engine.device)
    top5 = torch.zeros((), device=engine.device)
    seen = torch.zeros((), device=engine.device)
    for x, y in data.eval_batches(batch_size, dist.rank, dist.world_size):
        with engine.autocast():
            out = engine.forward(x)
        loss_sum += F.cross_entropy(out.float(), y, reduction="sum")
        best = out.topk(min(5, out.shape[1]), dim=1).indices
        top1 += (best[:, 0] == y).sum()
        top5 += (best == y[:, None]).any(dim=1).sum()
        seen += len(y)
    loss_sum, top1, top5, seen = dist.all_reduce_sum(loss_sum, top1, top5, seen)
    n = seen.item()
    return EvalStats(loss_sum.item() / n, 100.0 * top1.item() / n, 100.0 * top5.item() / n, int(n))


def recompute_bn_stats(engine: Engine, data: BatchSource, batch_size: int, batches: int,
                       generator: torch.Generator, parts: tuple[slice, ...] = (slice(None),)) -> None:
    """Precise BN: replace every BatchNorm's running statistics by their average over ``batches`` training
    batches of the current weights (``fvcore.nn.update_bn_stats``, in train mode, under the engine's autocast).
    ``parts`` is the :meth:`BatchPlan.parts` of this process (each part counts as one batch)."""
    from fvcore.nn import update_bn_stats  # imported here: only precise-BN recipes need fvcore

    engine.model.train()
    source = data.train_batches(batch_size, generator, parts)
    with engine.autocast():
        update_bn_stats(engine.model, (x for x, _ in source), num_iters=batches)
    source.close()


# ---------------------------------------------------------------- the run driver


@dataclasses.dataclass
class _Progress:
    """What a checkpoint carries besides the weights: the epochs so far, wall time, and the devices and code
    commits of the process segments that trained them (taken when each segment starts)."""

    history: list[dict[str, Any]]
    wall_time: float
    devices: list[str]
    commits: list[str]
    probe: ProbeResult | None


def _identity(config: RunSpec, data: TrainingData, plan: BatchPlan) -> dict[str, Any]:
    return run_identity(config, data.fingerprint, plan.micro_batch)


def _restore(folder: RunFolder, state: dict[str, Any] | None, engine: Engine, device: torch.device,
             probe: ProbeResult | None) -> _Progress:
    commit = git_commit()
    if state is None:
        return _Progress([], 0.0, [hardware(device)], [commit], probe)
    engine.load_state_dict(state)
    log.info("resuming %s from epoch %d", folder.path, len(state["history"]) + 1)
    return _Progress(state["history"], state["wall_time_s"], sorted(set(state["devices"]) | {hardware(device)}),
                     list(dict.fromkeys([*state["commits"], commit])), probe)


def _probe(config: RunSpec, data: TrainingData, plan: BatchPlan, model: nn.Module, device: torch.device,
           dist: Distributed) -> ProbeResult:
    """Measure every setting the recipe allows on ``device`` (:func:`ghost.train.probe.choose_settings`), each on
    a copy of ``model`` and the run's own training batches."""
    if dist.world_size > 1:
        raise ValueError(f"recipe {config.recipe.name!r} leaves its {device.type} settings to the probe, which "
                         "runs in one process; pin cpu_channels_last and cpu_compile to train with several")
    recipe = config.recipe

    def step_for(settings: DeviceSettings) -> Callable[[], None]:
        engine = Engine.create(copy.deepcopy(model), recipe, device, settings=settings)
        data.train.normalize.channels_last = settings.channels_last
        generator = torch.Generator().manual_seed(derive_seed(config.seed, "probe"))
        batches = itertools.chain.from_iterable(
            data.train.train_batches(recipe.batch_size, generator, plan.parts()) for _ in itertools.count())

        def step() -> None:
            train_one_epoch(engine, batches, range(1), lambda _: recipe.lr, plan.accumulate)

        return step

    return choose_settings(recipe.device_candidates(device.type), step_for, plan.global_batch)


def _epoch_row(recipe: Recipe, epoch: int, steps: range, steps_per_epoch: int, stats: EpochStats,
               test: EvalStats | None, seconds: float) -> dict[str, Any]:
    nan = math.nan
    return {
        "epoch": epoch + 1,
        "step": steps.stop,
        "lr": recipe.lr_at(steps.stop - 1, steps_per_epoch),
        "train_loss": round(stats.loss, 6),
        "train_acc": round(stats.top1, 4),
        "test_loss": round(test.loss, 6) if test else nan,
        "test_acc": round(test.top1, 4) if test else nan,
        "test_top5": round(test.top5, 4) if test else nan,
        "epoch_time_s": round(seconds, 3),
        "images_per_s": round(len(steps) * recipe.batch_size / seconds, 1),
    }


def _final_record(config: RunSpec, data: TrainingData, engine: Engine, plan: BatchPlan, parallel: Parallelism,
                  progress: _Progress, model_size: dict[str, int], command: str | None) -> RunRecord:
    recipe, last = config.recipe, progress.history[-1]
    steps_per_epoch = data.train.steps_per_epoch(recipe.batch_size)
    return RunRecord(
        test_acc=last["test_acc"],
        test_acc_running_bn=last.get("test_acc_running_bn"),
        test_top5=last["test_top5"],
        test_loss=last["test_loss"],
        train_acc=last["train_acc"],
        train_loss=last["train_loss"],
        params=model_size["params"],
        macs=model_size["macs"],
        scale=str(recipe.scale),
        config={
            **_identity(config, data, plan),
            "dataset": str(recipe.dataset),
            "num_classes": data.num_classes,
            "input_size": list(data.input_size),
            "epochs": recipe.num_epochs(steps_per_epoch),
            "steps_per_epoch": steps_per_epoch,
            "total_steps": recipe.total_steps(steps_per_epoch),
            "train_images": len(data.train),
            "test_images": len(data.test),
            "global_batch": plan.global_batch,
            "processes": plan.world_size,
            "accumulate": plan.accumulate,
            "sync_bn": parallel.sync_bn,
            "lr_scaling": f"linear: lr {recipe.lr:g} is for the global batch {recipe.batch_size}, which this "
                          f"run keeps ({plan.world_size} processes x {plan.accumulate} steps x "
                          f"{plan.micro_batch} images)",
            "bf16": engine.bf16,
            "channels_last": engine.channels_last,
            "compile": engine.compiled,
            "setting": DeviceSettings(engine.bf16, engine.channels_last, engine.compiled).label,
            "probe_images_per_s": progress.probe.images_per_s if progress.probe is not None else None,
            "precise_bn_batches": recipe.precise_bn_batches,
        },
        data={**data.info, "fingerprint": data.fingerprint},
        hardware="; ".join(progress.devices),
        torch=torch.__version__,
        commit="; ".join(progress.commits),
        wall_time_s=round(progress.wall_time, 2),
        command=command if command is not None else command_line(),
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        identity=_identity(config, data, plan),
    )


def _epochs(config: RunSpec, data: TrainingData, engine: Engine, plan: BatchPlan, folder: RunFolder,
            progress: _Progress, dist: Distributed, show: bool) -> None:
    """Train the epochs not done yet, checkpointing after each (rank 0 writes)."""
    recipe = config.recipe
    steps_per_epoch = data.train.steps_per_epoch(recipe.batch_size)
    total, num_epochs = recipe.total_steps(steps_per_epoch), recipe.num_epochs(steps_per_epoch)
    label = config.model + (f" s={config.ratio} d={config.dw_size}" if config.ratio is not None else "")
    bar = tqdm(total=total, initial=min(total, len(progress.history) * steps_per_epoch),
               desc=f"{label} seed {config.seed}", unit="step", disable=not show, dynamic_ncols=True)
    for epoch in range(len(progress.history), num_epochs):
        start = time.perf_counter()
        generator = seed_epoch(config.seed, epoch, dist.rank)
        steps = epoch_steps(epoch, steps_per_epoch, total)
        bar.set_description(f"{label} seed {config.seed} epoch {epoch + 1}/{num_epochs}")
        batches = data.train.train_batches(recipe.batch_size, generator, plan.parts())
        stats = train_one_epoch(engine, iter(batches), steps, lambda s: recipe.lr_at(s, steps_per_epoch),
                                plan.accumulate, dist, bar)
        batches.close()
        train_time = time.perf_counter() - start
        test = running_bn = None
        if (epoch + 1) % recipe.eval_every == 0 or epoch == num_epochs - 1:
            if recipe.precise_bn_batches:
                running_bn = evaluate(engine, data.test, recipe.eval_batch_size, dist)
                recompute_bn_stats(engine, data.train, recipe.batch_size,
                                   min(recipe.precise_bn_batches, steps_per_epoch),
                                   torch.Generator().manual_seed(derive_seed(config.seed, "precise_bn", epoch)),
                                   plan.parts())
            test = evaluate(engine, data.test, recipe.eval_batch_size, dist)
        progress.history.append(_epoch_row(recipe, epoch, steps, steps_per_epoch, stats, test, train_time)
                                | ({"test_acc_running_bn": round(running_bn.top1, 4)} if running_bn else {}))
        progress.wall_time += time.perf_counter() - start
        bar.set_postfix(loss=f"{stats.loss:.3f}", train=f"{stats.top1:.1f}%",
                        test=f"{test.top1:.1f}%" if test else "-")
        if dist.is_main:
            folder.save_checkpoint({"history": progress.history, "wall_time_s": progress.wall_time,
                                    "devices": progress.devices, "commits": progress.commits,
                                    "probe": progress.probe.to_dict() if progress.probe is not None else None,
                                    **engine.state_dict()}, progress.history)
    bar.close()


def train(
    config: RunSpec,
    out_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    parallel: Parallelism | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train one run into ``out_dir`` (resuming its checkpoint if any) and return its record as the
    ``final.json`` dict (:meth:`ghost.runs.RunRecord.to_dict`).

    A finished run (its record present and of the same configuration) is returned without training.
    Started by ``torchrun``, the processes share the work (DistributedDataParallel) and rank 0 alone writes.

    Args:
        config: model, recipe and seed.
        out_dir: the run folder.
        data_root: the data copy of the recipe's dataset (``None``: ``$GHOST_CIFAR10`` or ``$GHOST_IMAGENET``);
            cache_dir: where CIFAR-10's decoding is cached.
        device: ``"cpu"``, ``"cuda"`` or ``None``/``"auto"``.
        parallel: gradient accumulation, DataLoader workers and SyncBatchNorm.
        progress: show a tqdm progress bar (rank 0).
        command: the command line recorded in the result (default: this process's command line).

    Raises:
        ValueError: missing/malformed data, unknown model, invalid arguments, an output folder that cannot be
            written, is being trained by another process, or holds a corrupt checkpoint or another
            configuration's run (the message says how to fix it).
    """
    device, parallel = resolve_device(device), parallel or Parallelism()
    if parallel.sync_bn and device.type != "cuda":
        raise ValueError("SyncBatchNorm needs CUDA devices; train without it on the CPU")
    check_writable(out_dir)
    with distributed_session(device) as dist:
        device = dist.device(device)
        plan = BatchPlan(config.recipe.batch_size, parallel.accumulate, dist.rank, dist.world_size)
        data = load_data(config.recipe, data_root, device, cache_dir=cache_dir, workers=parallel.workers,
                         validation=config.validation)
        if data.train.steps_per_epoch(plan.global_batch) == 0:
            raise ValueError(
                f"{len(data.train)} training images make no full global batch of {plan.global_batch}; use a "
                "larger training subset or a recipe with a smaller batch_size"
            )
        folder = RunFolder(out_dir, _identity(config, data, plan))
        final = folder.finished()
        if final is not None:
            return final.to_dict()
        return _run(config, data, folder, plan, dist, device, parallel, progress, command)


def _run(config: RunSpec, data: TrainingData, folder: RunFolder, plan: BatchPlan, dist: Distributed,
         device: torch.device, parallel: Parallelism, show: bool, command: str | None) -> dict[str, Any]:
    refused = dist.from_main(_try_lock(folder) if dist.is_main else None)
    if refused is not None:
        raise ValueError(refused)
    try:
        final = dist.from_main(folder.finished() if dist.is_main else None)  # finished while we waited
        if final is not None:
            return final.to_dict()
        started = time.perf_counter()
        torch.manual_seed(derive_seed(config.seed, "init"))
        model = build_model(config.model, config.ratio, config.dw_size, num_classes=data.num_classes)
        model_size = {"params": count_params(model), "macs": count_macs(model, input_size=data.input_size)}
        state = folder.load_checkpoint()
        probe = _chosen(config, data, plan, model, device, dist, state)
        engine = Engine.create(model, config.recipe, device, dist, parallel.sync_bn,
                               settings=probe.chosen if probe is not None else None)
        data.train.normalize.channels_last = data.test.normalize.channels_last = engine.channels_last
        progress = _restore(folder, state, engine, device, probe)
        progress.wall_time += time.perf_counter() - started  # this segment's setup
        _epochs(config, data, engine, plan, folder, progress, dist, show and dist.is_main)
        record = _final_record(config, data, engine, plan, parallel, progress, model_size, command)
        if dist.is_main:
            folder.finish(engine.model.state_dict(), record)
        return record.to_dict()
    finally:
        folder.unlock()


def _chosen(config: RunSpec, data: TrainingData, plan: BatchPlan, model: nn.Module, device: torch.device,
            dist: Distributed, state: dict[str, Any] | None) -> ProbeResult | None:
    """The probe's choice for a recipe that leaves the settings open (a resumed run keeps its first one);
    ``None`` when the recipe pins them."""
    if len(config.recipe.device_candidates(device.type)) == 1:
        return None
    if state is not None and state.get("probe") is not None:
        return ProbeResult.from_dict(state["probe"])
    return _probe(config, data, plan, model, device, dist)


def _try_lock(folder: RunFolder) -> str | None:
    """``None`` when rank 0 holds the folder's lock, else why not (shared with the other ranks)."""
    try:
        folder.lock()
    except ValueError as error:
        return str(error)
    return None
