"""Fine-tuning with knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
Network", 2015) on the training engine: :func:`distill` runs :func:`~ghost.train.train_one_epoch` with a
:class:`DistillationLoss`, so the data, augmentation, schedule and seeding are those of any run of the engine.

The loss blends the KL divergence between the teacher's and the student's outputs softened at temperature ``T``,
scaled by ``T^2`` so that its gradients keep their size whatever ``T`` (Hinton et al., Section 2), with the label
loss: ``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ghost.recipes import Recipe
from ghost.runs import RunFolder, check_writable
from ghost.train.engine import Engine, epoch_steps, seed_epoch, train_one_epoch
from ghost.train.sources import TrainingData

__all__ = ["DistillationLoss", "distill"]


class DistillationLoss:
    """``loss(inputs, outputs, labels)``: Hinton et al.'s distillation loss against ``teacher``'s outputs on the
    same inputs (the teacher runs in eval mode, without gradients), for ``train_one_epoch(loss_fn=...)``.

    Args:
        teacher: the model to imitate (put in eval mode).
        temperature: ``T`` > 0, the softening of both outputs.
        alpha: weight in [0, 1] of the soft (teacher) term; ``1 - alpha`` weighs the label cross-entropy.
        label_smoothing: of the label cross-entropy.
    """

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.9,
                 label_smoothing: float = 0.0) -> None:
        if not temperature > 0:
            raise ValueError(f"the distillation temperature must be > 0, got {temperature}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"the distillation weight alpha must be in [0, 1], got {alpha}")
        self.teacher = teacher.eval()
        self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing

    def __call__(self, inputs: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft_targets = F.log_softmax(self.teacher(inputs).float() / self.temperature, dim=1)
        soft = F.kl_div(F.log_softmax(outputs.float() / self.temperature, dim=1), soft_targets, reduction="batchmean",
                        log_target=True)
        hard = F.cross_entropy(outputs.float(), labels, label_smoothing=self.label_smoothing)
        return self.alpha * self.temperature**2 * soft + (1 - self.alpha) * hard


def distill(
    student: nn.Module,
    teacher: nn.Module,
    recipe: Recipe,
    data: TrainingData,
    device: torch.device,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    seed: int = 0,
    progress: bool = False,
    out_dir: str | Path | None = None,
) -> nn.Module:
    """Fine-tune ``student`` with distillation from ``teacher`` for ``recipe``'s length on ``data``'s training
    split (test it with :func:`ghost.train.evaluate`).

    As in a run of the engine: SGD with the recipe's learning-rate schedule, batch size, weight decay and
    device settings; the epoch's data order and augmentation drawn from ``(seed, epoch)``, so two students
    fine-tuned with the same seed see the same batches. With ``out_dir``, the student and optimizer are
    checkpointed there atomically after every epoch (:class:`ghost.runs.RunFolder`, as a training run
    is), and a call with the same arguments resumes from the last finished epoch: an interrupted and resumed
    fine-tuning ends with exactly the weights of an uninterrupted one (a finished one is only reloaded).

    Args:
        student: the model to train (moved to ``device``, trained in place).
        teacher: the model to imitate (moved to ``device``, left unchanged).
        recipe: the fine-tuning recipe (its ``label_smoothing`` applies to the label term).
        data: e.g. :func:`ghost.train.load_data` of ``recipe``.
        device: where to train.
        temperature, alpha: of :class:`DistillationLoss`.
        seed: of the data order, augmentation and dropout.
        progress: show a progress bar.
        out_dir: the folder of the checkpoint (``checkpoint.pt``, ``metrics.csv``); ``None``: no checkpoint.

    Returns:
        The trained student (on ``device``).

    Raises:
        ValueError: the training split makes no full batch of the recipe's size; ``out_dir`` cannot be written,
            is in use by another process, or holds a checkpoint of another fine-tuning.
    """
    steps_per_epoch = data.train.steps_per_epoch(recipe.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(data.train)} training images make no full batch of {recipe.batch_size}; use a "
                         "larger training subset or a recipe with a smaller batch_size")
    loss = DistillationLoss(teacher, temperature, alpha, recipe.label_smoothing)
    engine = Engine.create(student, recipe, device)
    teacher.to(engine.device)
    if engine.channels_last:
        teacher.to(memory_format=torch.channels_last)
    data.train.normalize.channels_last = data.test.normalize.channels_last = engine.channels_last
    if out_dir is None:
        _distill_epochs(engine, loss, recipe, data, seed, progress, None, [])
        return engine.model
    check_writable(out_dir)
    identity = json.loads(json.dumps({"kind": "distill", "recipe": recipe.to_dict(), "data": data.fingerprint,
                                      "seed": seed, "temperature": temperature, "alpha": alpha,
                                      "student": _shapes(engine.model), "teacher": _shapes(teacher)}))
    folder = RunFolder(out_dir, identity)
    folder.lock()
    try:
        state = folder.load_checkpoint()
        if state is not None:
            engine.load_state_dict(state)
        _distill_epochs(engine, loss, recipe, data, seed, progress, folder, state["history"] if state else [])
    finally:
        folder.unlock()
    return engine.model


def _shapes(model: nn.Module) -> str:
    """A digest of ``model``'s state-dict keys and shapes: what a checkpoint of it must match to load."""
    shapes = [(key, list(value.shape)) for key, value in model.state_dict().items()]
    return hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:16]


def _distill_epochs(engine: Engine, loss: DistillationLoss, recipe: Recipe, data: TrainingData, seed: int,
                    progress: bool, folder: RunFolder | None, history: list[dict[str, Any]]) -> None:
    """Train the epochs after the ``len(history)`` already done, checkpointing each into ``folder`` (if any)."""
    steps_per_epoch = data.train.steps_per_epoch(recipe.batch_size)
    total = recipe.total_steps(steps_per_epoch)
    with tqdm(total=total, initial=min(total, len(history) * steps_per_epoch), desc="distillation", unit="step",
              disable=not progress, dynamic_ncols=True) as bar:
        for epoch in range(len(history), recipe.num_epochs(steps_per_epoch)):
            batches = data.train.train_batches(recipe.batch_size, seed_epoch(seed, epoch))
            steps = epoch_steps(epoch, steps_per_epoch, total)
            stats = train_one_epoch(engine, iter(batches), steps, lambda step: recipe.lr_at(step, steps_per_epoch),
                                    bar=bar, loss_fn=loss)
            batches.close()
            history.append({"epoch": epoch + 1, "step": steps.stop, "lr": recipe.lr_at(steps.stop - 1, steps_per_epoch),
                            "train_loss": stats.loss, "train_acc": stats.top1})
            if folder is not None:
                folder.save_checkpoint({"history": history, **engine.state_dict()}, history)
