"""Training speed of this repo's engine against a plain reference loop, on CIFAR-10 (one run, one table).

    python -m experiments.bench_train               # on a GPU: one timed epoch per model and loop
    python -m experiments.bench_train --steps 10    # on a CPU: 10 timed steps, epoch time extrapolated

- engine: the library's training engine (``ghost.train.Engine``): the whole uint8 training set on the device,
  batches cropped/flipped/normalized there, bf16 autocast, channels_last and ``torch.compile`` on CUDA as the
  recipe says (``paper`` by default);
- reference: torchvision transforms on PIL images in a ``torch.utils.data.DataLoader`` with worker
  processes, fp32, eager, the same model, optimizer settings and batch size.

Warm-up steps (including compilation) are not timed. Epoch time = steps per epoch x time per step.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from experiments._cli import check_device, cli_errors
from ghost.benchmark import time_calls
from ghost.data import CIFAR10_MEAN, CIFAR10_STD, DeviceData, load_cifar10
from ghost.provenance import git_commit, hardware
from ghost.train import Engine, build_model, load_recipe, resolve_device, train_one_epoch

DEFAULT_MODELS = ("vgg16_cifar", "ghost_vgg16_cifar", "resnet56_cifar")


class PILCifar(Dataset):
    """CIFAR-10 the way torchvision's ``datasets.CIFAR10`` serves it: a PIL image per item, transformed."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy()  # NHWC uint8, as torchvision stores it
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(np.ascontiguousarray(self.images[i]))), self.labels[i]


def _timed(run: Callable[[int], None], warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per step of ``run(n)`` (which performs n steps), after ``warmup`` untimed steps."""
    run(warmup)
    (seconds,) = time_calls(lambda: run(steps), device, warmup=0, repeats=1)
    return seconds / steps


def bench_engine(model_name: str, recipe_name: str, data: DeviceData, args: argparse.Namespace) -> float:
    """Seconds per training step of the engine."""
    recipe = load_recipe(recipe_name)
    torch.manual_seed(0)
    engine = Engine.create(build_model(model_name), recipe, data.device)
    data.normalize.channels_last = engine.channels_last
    generator = torch.Generator().manual_seed(0)
    batches: Iterator = itertools.chain.from_iterable(
        data.train_batches(args.batch_size, generator) for _ in itertools.count()
    )
    steps_per_epoch, step = data.steps_per_epoch(args.batch_size), [0]

    def lr_at(s: int) -> float:
        return recipe.lr_at(s, steps_per_epoch)

    def run(n: int) -> None:
        train_one_epoch(engine, batches, range(step[0], step[0] + n), lr_at)
        step[0] += n

    return _timed(run, args.warmup, args.steps, data.device)


def bench_reference(
    model_name: str, recipe_name: str, dataset: PILCifar, device: torch.device, args: argparse.Namespace
) -> float:
    """Seconds per training step of a plain loop: DataLoader with workers, fp32, eager."""
    recipe = load_recipe(recipe_name)
    torch.manual_seed(0)
    model = build_model(model_name).to(device).train()
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )
    criterion = nn.CrossEntropyLoss()
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    batches: Iterator = itertools.chain.from_iterable(loader for _ in itertools.count())

    def run(n: int) -> None:
        for x, y in itertools.islice(batches, n):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return _timed(run, args.warmup, args.steps, device)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    parser.add_argument("--recipe", default="paper", help="the engine's recipe (bf16/channels_last/compile)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, help="timed steps (default: one epoch on CUDA, 10 on the CPU)")
    parser.add_argument(
        "--warmup", type=int, default=20, help="untimed steps first (compilation happens here)"
    )
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="reference loader workers"
    )
    parser.add_argument("--data", help="CIFAR-10 copy (default: $GHOST_CIFAR10)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N]")
    return parser


def _models(models: str) -> list[str]:
    """The comma-separated model names, each built once to fail fast on an unknown name."""
    names = [m.strip() for m in models.split(",") if m.strip()]
    for name in names:
        build_model(name)
    return names


def _reference_data(images: torch.Tensor, labels: torch.Tensor) -> PILCifar:
    """The training set as the reference loop reads it: PIL images through torchvision's transforms."""
    augment = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )
    return PILCifar(images, labels, augment)


def _compare(
    models: list[str], data: DeviceData, dataset: PILCifar, args: argparse.Namespace, steps_per_epoch: int
) -> None:
    """Print one row per model: images/s and epoch time of the engine and of the reference loop."""
    header = (
        f"{'model':<22} {'engine img/s':>13} {'epoch (s)':>10} {'reference img/s':>16} {'epoch (s)':>10} "
        f"{'speed-up':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in models:
        engine_step = bench_engine(name, args.recipe, data, args)
        reference_step = bench_reference(name, args.recipe, dataset, data.device, args)
        print(
            f"{name:<22} {args.batch_size / engine_step:>13.1f} {engine_step * steps_per_epoch:>10.2f} "
            f"{args.batch_size / reference_step:>16.1f} {reference_step * steps_per_epoch:>10.2f} "
            f"{reference_step / engine_step:>8.2f}x",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with cli_errors():
        device = resolve_device(check_device(args.device))
        if args.batch_size < 1 or args.warmup < 0 or (args.steps is not None and args.steps < 1):
            raise ValueError("--batch-size and --steps must be >= 1 and --warmup >= 0")
        recipe = load_recipe(args.recipe)
        models = _models(args.models)
        images, labels = load_cifar10(args.data, train=True)
        data = DeviceData(images, labels, CIFAR10_MEAN, CIFAR10_STD, device)
        steps_per_epoch = data.steps_per_epoch(args.batch_size)
        if steps_per_epoch == 0:
            raise ValueError(f"{len(data)} training images make no batch of {args.batch_size}")
        args.steps = args.steps or (steps_per_epoch if device.type == "cuda" else 10)
        settings = recipe.device_settings(device.type)
        print(f"device: {hardware(device)}; torch {torch.__version__}; commit {git_commit()}")
        print(
            f"engine: recipe {recipe.name} (bf16={settings.bf16}, channels_last={settings.channels_last}, "
            f"compile={settings.compile}); "
            f"reference: DataLoader with {args.workers} workers, fp32, eager; "
            f"batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps, "
            f"{steps_per_epoch} steps per epoch"
        )
        _compare(models, data, _reference_data(images, labels), args, steps_per_epoch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
