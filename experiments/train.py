"""Train one model on CIFAR-10 with a named recipe; resumes its checkpoint, skips a finished run.

    python -m experiments.train --model ghost_vgg16_cifar --ratio 2 --dw-size 3 --recipe paper --out runs/x

Writes ``metrics.csv`` (per epoch), ``model.pt`` and ``final.json`` into ``--out``. Kill it at any moment and
run the same command again: it continues from the last epoch's checkpoint and ends with the same result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ghost.data import download_cifar10
from ghost.train import TrainConfig, list_recipes, load_recipe, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="a name of ghost.models.list_models(), e.g. vgg16_cifar"
    )
    parser.add_argument("--ratio", type=int, help="Ghost ratio s (Ghost models only; default 2)")
    parser.add_argument(
        "--dw-size", type=int, help="kernel size d of the cheap operation (Ghost models; default 3)"
    )
    parser.add_argument("--recipe", required=True, help=f"{', '.join(list_recipes())}, or a recipe JSON file")
    parser.add_argument("--epochs", type=int, help="override the recipe's length (milestones scale along)")
    parser.add_argument("--train-subset", type=int, help="override the recipe's number of training images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="the run folder")
    parser.add_argument("--data", help="CIFAR-10 copy (default: $GHOST_CIFAR10)")
    parser.add_argument("--download", action="store_true", help="download the official CIFAR-10 into --data")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        if args.download:
            download_cifar10(args.data or None)
        recipe = load_recipe(args.recipe).with_overrides(epochs=args.epochs, train_subset=args.train_subset)
        config = TrainConfig(args.model, recipe, seed=args.seed, ratio=args.ratio, dw_size=args.dw_size)
        final = train(
            config, args.out, data_root=args.data, device=args.device, progress=not args.no_progress
        )
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    summary = {k: final[k] for k in ("test_acc", "params", "macs", "wall_time_s", "scale")}
    print(f"{args.out}: {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
