"""What the full ImageNet recipes cost: training throughput measured on this device, turned into device-hours.

    python -m experiments.imagenet_cost                       # this machine (CPU: device-hours = CPU-hours)
    python -m experiments.imagenet_cost --device cuda         # one GPU: bf16, channels_last, compiled (per recipe)

For each model, optimizer steps of the library's engine (``ghost.train.train_one_epoch``, the recipe's
precision/memory format/compile settings on CUDA) on synthetic batches at the recipe's training resolution
are timed (``ghost.benchmark.time_calls``); the hours of a full recipe are its epochs x 1,281,167 ImageNet
training images / (images/s). Data loading is not included: the numbers are the model's compute bound.
Writes ``results/imagenet_cost_<device>.{csv,md}``.
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd
import torch

from experiments._cli import check_device, check_results_dir, cli_errors, results_dir
from ghost.benchmark import time_calls
from ghost.io import write_text_atomic
from ghost.provenance import provenance
from ghost.train import (
    Engine,
    TrainConfig,
    build_model,
    enable_fast_cuda_math,
    load_recipe,
    resolve_device,
    train_one_epoch,
)

IMAGENET_TRAIN_IMAGES = 1_281_167
CONFIGS = (  # (recipe, model, ratio, dw_size): the paper's ResNet-50 and small-network models under their recipes
    ("imagenet-resnet50", "resnet50", None, None),
    ("imagenet-resnet50", "ghost_resnet50", 2, 3),
    ("imagenet-resnet50", "ghost_resnet50", 4, 3),
    ("imagenet-ghostnet", "ghostnet_050", None, None),
    ("imagenet-ghostnet", "ghostnet_100", None, None),
    ("imagenet-ghostnet", "ghostnet_130", None, None),
    ("imagenet-ghostnet", "mobilenet_v3_large", None, None),
)


def images_per_second(config: TrainConfig, device: torch.device, batch: int, steps: int) -> float:
    """Training images/s of ``config``'s model under its recipe's device settings, on random batches."""
    recipe = config.recipe
    engine = Engine.create(build_model(config.model, config.ratio, config.dw_size, num_classes=1000), recipe,
                           device)
    size = recipe.train_crop
    x = torch.randn(batch, 3, size, size, device=device)
    if engine.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        train_one_epoch(engine, iter([(x, y)]), range(1), lambda _: recipe.lr)

    seconds = time_calls(step, device, warmup=2, repeats=steps)
    return batch / (sum(seconds) / len(seconds))


def measure(device: torch.device, batch: int, steps: int) -> pd.DataFrame:
    """One row per configuration: images/s, and the device-hours of its full recipe."""
    rows = []
    for recipe_name, model, ratio, dw_size in CONFIGS:
        config = TrainConfig(model, load_recipe(recipe_name), ratio=ratio, dw_size=dw_size)
        throughput = images_per_second(config, device, batch, steps)
        epochs = config.recipe.epochs
        rows.append({
            "recipe": recipe_name, "model": model, "ratio": ratio, "dw_size": dw_size,
            "resolution": config.recipe.train_crop, "batch": batch, "epochs": epochs,
            "images_per_s": round(throughput, 2),
            "device_hours": round(epochs * IMAGENET_TRAIN_IMAGES / throughput / 3600, 1),
        })
        print(f"{model} s={ratio} ({recipe_name}): {throughput:.1f} images/s", flush=True)
    return pd.DataFrame(rows).astype({"ratio": "Int64", "dw_size": "Int64"})


def _markdown(df: pd.DataFrame, meta: dict[str, str], args: argparse.Namespace) -> str:
    lines = [
        f"# Cost of the full ImageNet recipes, measured on {meta['hardware']}", "",
        "Training throughput of the engine on synthetic batches at each recipe's resolution (compute bound: no",
        "data loading), and the hours of one full run of the recipe on this one device "
        f"(epochs x {IMAGENET_TRAIN_IMAGES:,} images / throughput).", "",
        "| Recipe | Model | Resolution | Batch | Epochs | Images/s | Device-hours |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for _, r in df.iterrows():
        name = r["model"] + (f" (s={r['ratio']}, d={r['dw_size']})" if pd.notna(r["ratio"]) else "")
        lines.append(f"| {r['recipe']} | {name} | {r['resolution']} | {r['batch']} | {r['epochs']} | "
                     f"{r['images_per_s']:.2f} | {r['device_hours']:,.1f} |")
    lines += ["", "## Provenance", "", *[f"- {k}: `{v}`" for k, v in meta.items()],
              f"- timed steps per model: {args.steps} after 2 warm-up steps"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model (default 3)")
    parser.add_argument("--results-dir", default="results", help="where the tables go (default results/)")
    args = parser.parse_args(argv)
    with cli_errors():
        device = resolve_device(check_device(args.device))
        if device.type == "cuda":
            enable_fast_cuda_math()  # as experiments.train does
        check_results_dir(args.results_dir)
        if args.batch_size < 1 or args.steps < 1:
            raise ValueError(f"--batch-size and --steps must be >= 1, got {args.batch_size} and {args.steps}")
        start = time.perf_counter()
        df = measure(device, args.batch_size, args.steps)
        meta = {**provenance(device), "torch threads": str(torch.get_num_threads()),
                "wall time": f"{time.perf_counter() - start:.0f} s"}
        stem = results_dir(args.results_dir) / f"imagenet_cost_{device.type}"
        write_text_atomic(stem.with_suffix(".csv"), df.to_csv(index=False))
        write_text_atomic(stem.with_suffix(".md"), _markdown(df, meta, args))
    print(f"wrote {stem}.csv and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
