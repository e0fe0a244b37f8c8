"""Train one model with a named recipe, on CIFAR-10 or an ImageNet-format folder; resumes its checkpoint,
skips a finished run.

    python -m experiments.train --model ghost_vgg16_cifar --ratio 2 --dw-size 3 --recipe paper --out runs/x
    python -m experiments.train --dataset imagenet --data ../shared/data/imagenette2-224 \\
        --model ghostnet_100 --recipe imagenette-64px --out runs/y
    torchrun --nproc_per_node=8 -m experiments.train --dataset imagenet --data /data/imagenet \\
        --model resnet50 --recipe imagenet-resnet50 --out runs/z

Writes ``metrics.csv`` (per epoch), ``model.pt`` and ``final.json`` into ``--out``. Kill it at any moment and
run the same command again: it continues from the last epoch's checkpoint and ends with the same result.
Under ``torchrun`` the processes share each global batch (DistributedDataParallel; NCCL on GPUs, Gloo on
CPUs) and rank 0 alone writes; ``--accumulate K`` reaches the recipe's global batch with fewer processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from experiments._cli import check_device, cli_errors
from ghost.data import download_cifar10
from ghost.train import (
    Dataset,
    Parallelism,
    TrainConfig,
    enable_fast_cuda_math,
    list_recipes,
    load_recipe,
    train,
)

DEFAULT_WORKERS = min(8, max(1, (os.cpu_count() or 2) // 2))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a name of ghost.models.list_models(), e.g. vgg16_cifar")
    parser.add_argument("--ratio", type=int, help="Ghost ratio s (Ghost models only; default 2)")
    parser.add_argument("--dw-size", type=int, help="kernel size d of the cheap operation (Ghost models; default 3)")
    parser.add_argument("--recipe", required=True, help=f"{', '.join(list_recipes())}, or a recipe JSON file")
    parser.add_argument("--dataset", choices=[str(d) for d in Dataset],
                        help="check that the recipe trains on this kind of data (default: the recipe's)")
    parser.add_argument("--epochs", type=int, help="override the recipe's length (milestones scale along)")
    parser.add_argument("--train-subset", type=int, help="override the recipe's number of training images")
    parser.add_argument("--batch-size", type=int,
                        help="override the recipe's global batch (its learning rate scales linearly)")
    parser.add_argument("--accumulate", type=int, default=1, help="micro-batches per process and optimizer step")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"DataLoader workers per process for ImageNet data (default {DEFAULT_WORKERS})")
    parser.add_argument("--sync-bn", action="store_true", help="BatchNorm statistics over all processes (CUDA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="the run folder")
    parser.add_argument("--data", help="the data copy (default: $GHOST_CIFAR10 or $GHOST_IMAGENET)")
    parser.add_argument("--download", action="store_true", help="download the official CIFAR-10 into --data")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with cli_errors(resume_hint=f"run the same command again to resume {args.out} from its last finished epoch"):
        check_device(args.device)
        recipe = load_recipe(args.recipe).with_overrides(
            epochs=args.epochs, train_subset=args.train_subset, batch_size=args.batch_size
        )
        if args.dataset is not None and args.dataset != recipe.dataset:
            raise ValueError(f"recipe {recipe.name!r} trains on {recipe.dataset}, not {args.dataset}; pick a "
                             f"{args.dataset} recipe")
        if args.download:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise ValueError("--download under torchrun would download once per process; download first, "
                                 "in one process")
            download_cifar10(args.data or None)
        config = TrainConfig(args.model, recipe, seed=args.seed, ratio=args.ratio, dw_size=args.dw_size)
        if args.device != "cpu" and torch.cuda.is_available():
            enable_fast_cuda_math()
        final = train(
            config, args.out, data_root=args.data, device=args.device, progress=not args.no_progress,
            parallel=Parallelism(accumulate=args.accumulate, workers=args.workers, sync_bn=args.sync_bn),
        )
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {k: final[k] for k in ("test_acc", "test_top5", "params", "macs", "wall_time_s", "scale")}
        print(f"{args.out}: {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
