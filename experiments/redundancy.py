"""Feature-map redundancy of a baseline and its Ghost version (the paper's Figure 1 and toy experiment).

    python -m experiments.redundancy           # vgg16_cifar vs ghost_vgg16_cifar (trained if runs/ has them)
    python -m experiments.redundancy --model resnet56_cifar --num-images 64
    python -m experiments.redundancy --model resnet50 --figure-layer layer1 --num-images 8  # ImageNet
    python -m experiments.redundancy --checkpoint runs/<run> --ghost-checkpoint runs/<run>
    python -m experiments.redundancy --model resnet50 --ghost none --checkpoint runs/<run> --with-untrained \
        --figure-layer layer1 --num-images 16   # Figure 1: a trained ResNet-50 beside an untrained one

Writes <results-dir>/redundancy_<model>.csv (one row per model and layer, with provenance) and figures
redundancy_*_<model>.png under <results-dir>/figures/, so runs on different models keep their own files.
Without --checkpoint a finished run of the model under --runs is analysed: full scale before budget before
smoke, then the lowest seed, then the newest; never chosen by test accuracy. Without a run the networks are
randomly initialised, and the output says so: learned redundancy needs trained weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from torch import nn

from experiments._cli import check_results_dir, cli_errors, results_dir
from ghost.io import save_figure_atomic, write_text_atomic
from ghost.models import GHOST_PREFIX
from ghost.provenance import provenance
from ghost.redundancy import (
    AnalysisInputs,
    LoadedModel,
    analyze_model,
    capture_feature_maps,
    channel_similarity,
    comparison_points,
    conv_layers,
    load_inputs,
    load_model,
    matching_layers,
    plot_feature_grid,
    plot_intrinsic_ghost,
    plot_layer_curves,
    plot_mse_vs_d,
    reports_frame,
    top_pairs,
    weights_kind,
)
from ghost.runs import FINAL
from ghost.train import find_runs, load_final

GRID_MAPS = 64  # maps shown in the Figure-1 grid
GRID_PAIRS = 3  # pairs outlined, as in the paper's Figure 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.redundancy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="vgg16_cifar", help="baseline model (see ghost.models.list_models())")
    p.add_argument("--ghost", help="its Ghost version (default ghost_<model>; 'none': the model alone)")
    p.add_argument("--ratio", type=int, default=2, help="s of the Ghost version (default 2)")
    p.add_argument("--dw-size", type=int, default=3, help="d of the Ghost version (default 3)")
    p.add_argument(
        "--checkpoint",
        help="weights of --model: a training run folder or a state_dict file "
        "(default: a finished run of the model under --runs, full scale first, lowest seed; else untrained)",
    )
    p.add_argument("--ghost-checkpoint", help="weights of the Ghost version (as --checkpoint)")
    p.add_argument("--runs", default="runs", help="where training runs are looked up (default runs/)")
    p.add_argument("--untrained", action="store_true", help="ignore trained runs: random initialisation")
    p.add_argument("--with-untrained", action="store_true",
                   help="also analyse --model with random weights (rows '<model> (untrained)', its own Figure-1 "
                        "grid): how much of the redundancy is learned")
    p.add_argument(
        "--layers",
        nargs="+",
        help="module names to analyse (default: where each converted conv is compared, see "
        "ghost.redundancy.matching_layers; every conv when there is no Ghost version)",
    )
    p.add_argument("--figure-layer", help="layer of the Figure-1 grid (default: the first analysed)")
    p.add_argument("--num-images", type=int, default=32, help="images to analyse (default 32)")
    p.add_argument("--data", help="CIFAR-10 copy for 32x32 models (default $GHOST_CIFAR10)")
    p.add_argument("--images", help="ImageNet samples folder for 224x224 models (default $GHOST_IMAGENET_SAMPLES)")
    p.add_argument("--threshold", type=float, default=0.9, help="near-duplicate |cos| threshold (default 0.9)")
    p.add_argument("--top-k", type=int, default=8, help="most similar pairs per layer for the toy experiment")
    p.add_argument("--kernel-sizes", type=int, nargs="+", default=[1, 3, 5, 7], help="toy-experiment d values")
    p.add_argument("--held-out", type=float, default=0.5,
                   help="share of the images that score the held-out toy experiment (default 0.5: fitted on the "
                        "first half, scored on the second)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation of untrained models")
    p.add_argument("--results-dir", default="results",
                   help="where redundancy_<model>.csv and figures/ go (created if missing)")
    return p.parse_args(argv)


def scale_rank(scale: object) -> int:
    """How a run's ``final.json["scale"]`` ranks for analysis: 0 full, 1 budget, 2 smoke (lower is preferred).

    Older runs recorded free text: one that mentions smoke ranks as smoke, any other as full.
    """
    text = str(scale)
    if "smoke" in text:
        return 2
    return 1 if text == "budget" else 0


def chosen_run(name: str, runs: Path, ratio: int, dw_size: int) -> Path | None:
    """The finished run of ``name`` under ``runs`` to analyse (of a Ghost model: with this ratio and dw_size).

    Full scale before budget before smoke, then the lowest seed, then the newest. Test accuracy plays no
    part, so the choice never depends on the test set. None when there is no such run.
    """
    ranked = []
    for run in find_runs(runs):
        final = load_final(run)
        config = final["config"]
        same_ghost = (config.get("ratio"), config.get("dw_size")) == (ratio, dw_size)
        if config.get("model") == name and (same_ghost or not name.startswith(GHOST_PREFIX)):
            newest_first = -(run / FINAL).stat().st_mtime
            ranked.append((scale_rank(final.get("scale")), int(config.get("seed", 0)), newest_first, run))
    return min(ranked)[-1] if ranked else None


def weights_of(name: str, checkpoint: str | None, args: argparse.Namespace) -> LoadedModel:
    """``name`` with the weights of ``checkpoint``, else of its chosen run (unless --untrained), else untrained."""
    if checkpoint is None and not args.untrained:
        checkpoint = chosen_run(name, Path(args.runs), args.ratio, args.dw_size)
    return load_model(name, checkpoint, ratio=args.ratio, dw_size=args.dw_size, seed=args.seed)


def pair_grid(model: nn.Module, name: str, weights: str, layer: str, inputs) -> Figure:
    """Figure 1: the layer's first maps on image 0, the most similar pairs (over all images) outlined."""
    fmap = capture_feature_maps(model, inputs, [layer])[layer][:, :GRID_MAPS]
    pairs = top_pairs(channel_similarity(fmap), GRID_PAIRS, disjoint=True)
    title = f"{name}, {weights_kind(weights)}, {layer}: first {fmap.shape[1]} maps of one image"
    return plot_feature_grid(fmap[0], pairs, title=title)


def ghost_maps(model: nn.Module, name: str, weights: str, layer: str, inputs) -> Figure:
    """A Ghost layer's intrinsic maps above the ghost maps made from them, on image 0."""
    parts = [f"{layer}.primary_conv", f"{layer}.cheap_operation"]
    maps = capture_feature_maps(model, inputs[:1], parts)
    title = f"{name}, {weights_kind(weights)}, {layer}: intrinsic maps (top) and the ghost maps made from them"
    return plot_intrinsic_ghost(maps[parts[0]][0], maps[parts[1]][0], title=title)


def _figures(
    args: argparse.Namespace,
    models: dict[str, LoadedModel],
    ghost_name: str | None,
    first_layer: str,
    table: pd.DataFrame,
    inputs: AnalysisInputs,
) -> dict[str, Figure]:
    """The figures by file name: Figure 1's grid, a Ghost layer's maps, the per-layer curves and the toy
    experiment; each name carries the model, so analyses of different models keep their own files."""
    figure_layer = args.figure_layer or first_layer
    baseline = models[args.model]
    figures = {
        f"redundancy_pairs_{args.model}.png": pair_grid(
            baseline.model, args.model, baseline.weights, figure_layer, inputs.images
        )
    }
    twin = models.get(untrained_name(args.model))
    if twin is not None:
        figures[f"redundancy_pairs_{args.model}_untrained.png"] = pair_grid(
            twin.model, args.model, twin.weights, figure_layer, inputs.images
        )
    ghost = models[ghost_name] if ghost_name is not None else None
    points = comparison_points(ghost.model) if ghost is not None else {}  # e.g. features.3 -> features.5
    if points:
        chosen = [name for name, point in points.items() if figure_layer in (name, point)]
        figures[f"redundancy_ghost_maps_{ghost_name}.png"] = ghost_maps(
            ghost.model, ghost_name, ghost.weights, (chosen or list(points))[0], inputs.images
        )
    figures[f"redundancy_layers_{args.model}.png"] = plot_layer_curves(
        table, title=f"Per-layer redundancy: {inputs.description}"
    )
    figures[f"redundancy_mse_vs_d_{args.model}.png"] = plot_mse_vs_d(table)
    return figures


def untrained_name(model: str) -> str:
    """The ``model`` column of the rows that ``--with-untrained`` adds."""
    return f"{model} (untrained)"


def run(args: argparse.Namespace) -> None:
    ghost_name = args.ghost if args.ghost is not None else GHOST_PREFIX + args.model
    if ghost_name == "none" or (args.ghost is None and args.model.startswith(GHOST_PREFIX)):
        ghost_name = None
    models = {args.model: weights_of(args.model, args.checkpoint, args)}
    if args.with_untrained:
        models[untrained_name(args.model)] = load_model(args.model, None, seed=args.seed)
    if ghost_name is not None:
        models[ghost_name] = weights_of(ghost_name, args.ghost_checkpoint, args)
    inputs = load_inputs(args.model, args.num_images, cifar10=args.data, imagenet=args.images)
    baseline = models[args.model].model
    ghost = models[ghost_name].model if ghost_name is not None else None
    layers = args.layers or (matching_layers(baseline, ghost) if ghost is not None else conv_layers(baseline))
    for name, loaded in models.items():
        print(f"{name}: {loaded.weights}")
    if not all(loaded.trained for name, loaded in models.items() if name != untrained_name(args.model)):
        print(
            "NOTE: untrained networks show only the redundancy of random initialisation; learned "
            "redundancy needs trained weights (python -m experiments.train, or pass --checkpoint)"
        )
    print(f"images: {inputs.description}; data: {inputs.data}")

    analysis = {"threshold": args.threshold, "top_k": args.top_k, "kernel_sizes": args.kernel_sizes,
                "held_out": args.held_out}
    frames = [
        reports_frame(
            analyze_model(loaded.model, inputs.images, layers, **analysis), model=name, weights=loaded.weights
        )
        for name, loaded in models.items()
    ]
    table = pd.concat(frames, ignore_index=True).assign(images=inputs.description, data=inputs.data, **provenance())

    figures = _figures(args, models, ghost_name, layers[0], table, inputs)
    csv = results_dir(args.results_dir) / f"redundancy_{args.model}.csv"
    write_text_atomic(csv, table.to_csv(index=False))
    for filename, fig in figures.items():
        save_figure_atomic(fig, csv.parent / "figures" / filename, dpi=130)
    print(f"wrote {csv} ({len(table)} rows), figures: {', '.join(figures)}")
    columns = ["near_duplicate_share", "mean_nn_similarity", "effective_rank_share"]
    print("mean over layers:\n" + table.groupby("model", sort=False)[columns].mean().round(3).to_string())
    swept = table[table["in_d_sweep"]]
    sweep = [f"{kind}_nmse_d{d}" for kind in ("insample", "heldout") for d in args.kernel_sizes]
    print(f"toy experiment, MSE / variance, mean over the {swept['layer'].nunique()} layers large enough for it "
          "(in sample: a filter per image; held out: one filter per pair, other images):\n"
          + swept.groupby("model", sort=False)[sweep].mean().round(4).to_string())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with cli_errors():
        check_results_dir(args.results_dir)
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
