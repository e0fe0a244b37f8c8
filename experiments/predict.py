"""Classify images with trained weights: per image, the top-5 classes with their names and probabilities.

    python -m experiments.predict --model ghostnet_100 --weights ghostnet_100.pth cat.jpg dog.png
    python -m experiments.predict --model ghostnet_050 --weights runs/imagenette-64px/ghostnet_050/seed0 x.JPEG

``--weights`` is a weights file of an ImageNet-1k classifier (the official GhostNet PyTorch checkpoint, timm's
``state_dict()``, this project's ``model.pt``...: classes named by torchvision's ImageNet metadata) or a
finished run folder of ``experiments.train`` (its class list). Images get the evaluation preprocessing of the
model's recipe: the run's, else ``imagenet-ghostnet`` (resize 256, center crop 224); ``--recipe`` overrides it.
Nothing is downloaded; without ``--weights`` it refuses instead of printing an untrained model's guesses.
"""

from __future__ import annotations

import argparse
import sys

from experiments._cli import cli_errors
from ghost.predict import DEFAULT_RECIPE, load_classifier
from ghost.train import list_recipes

TOP = 5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the model the weights belong to, e.g. ghostnet_100")
    parser.add_argument("--weights", help="a weights file or a finished run folder (required)")
    parser.add_argument("--recipe", help=f"preprocessing: {', '.join(list_recipes())} or a recipe JSON file "
                                         f"(default: the run's recipe, else {DEFAULT_RECIPE})")
    parser.add_argument("images", nargs="+", help="image files (.jpg, .jpeg, .png, .webp)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with cli_errors():
        if args.weights is None:
            raise ValueError("no --weights given: an untrained model would print random classes; pass a weights "
                             "file or a finished run folder (nothing is downloaded)")
        classifier = load_classifier(args.model, args.weights, args.recipe)
        results = [(image, classifier.top(image, TOP)) for image in args.images]  # all checked before printing
    for image, top in results:
        print(f"{image}:")
        for name, probability in top:
            print(f"  {probability:.4f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
