"""Shared machinery of the CIFAR-10 table experiments (sweep_d, sweep_s, cifar_compression, reproduce).

Each table is a list of configurations. Every (configuration, seed) is trained once into its run folder
``<runs-dir>/<recipe>/<model>[-s<s>-d<d>]/seed<k>`` (shared between tables, skipped when finished), then the
table is rebuilt from the finished runs: ``<results-dir>/<name>.{csv,md}`` and ``figures/<name>.png``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ghost.data import download_cifar10, load_cifar10
from ghost.io import save_figure_atomic, write_text_atomic
from ghost.paper import CIFAR10_ACCURACY, CIFAR10_COMPLEXITY, PaperKey, paper_key
from ghost.plotting import display_name, plot_compression, plot_d_sweep, plot_s_sweep
from ghost.provenance import command_line
from ghost.train import (
    DEFAULT_RUNS_DIR,
    Recipe,
    TrainConfig,
    list_recipes,
    load_recipe,
    run_dir,
    runs_frame,
    train,
)


@dataclass(frozen=True)
class Table:
    """One of the paper's CIFAR-10 tables: its file name, title, configurations and figure."""

    name: str
    title: str
    configs: tuple[PaperKey, ...]
    plot: Callable[[pd.DataFrame], Figure]


VGG, RESNET = ("vgg16_cifar", None, None), ("resnet56_cifar", None, None)
TABLES = {
    "d_sweep": Table(
        "cifar10_d_sweep",
        "Ghost-VGG-16 (s=2) on CIFAR-10: kernel size d of the cheap operation (paper Table 2)",
        (VGG, *(("ghost_vgg16_cifar", 2, d) for d in (1, 3, 5, 7))),
        plot_d_sweep,
    ),
    "s_sweep": Table(
        "cifar10_s_sweep",
        "Ghost-VGG-16 (d=3) on CIFAR-10: ratio s (paper Table 3)",
        (VGG, *(("ghost_vgg16_cifar", s, 3) for s in (2, 3, 4, 5))),
        plot_s_sweep,
    ),
    "compression": Table(
        "cifar10_compression",
        "Compressing VGG-16 and ResNet-56 on CIFAR-10 (paper Table 4)",
        (VGG, ("ghost_vgg16_cifar", 2, 3), RESNET, ("ghost_resnet56_cifar", 2, 3)),
        plot_compression,
    ),
}


def parser(description: str) -> argparse.ArgumentParser:
    """The options shared by the table experiments."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--recipe", default="quick", help=f"{', '.join(list_recipes())} or a recipe JSON (default quick)"
    )
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per configuration (default 1)")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="where runs live (default runs/)")
    p.add_argument(
        "--results-dir", type=Path, default=Path("results"), help="where tables go (default results/)"
    )
    p.add_argument("--data", help="CIFAR-10 copy (default: $GHOST_CIFAR10)")
    p.add_argument("--download", action="store_true", help="download the official CIFAR-10 into --data")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once (e.g. 4 on one GPU; default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _train_one(
    config: TrainConfig, out: Path, data: str | None, device: str, progress: bool, command: str
) -> Path:
    train(config, out, data_root=data, device=device, progress=progress, command=command)
    return out


def ensure_runs(
    keys: list[PaperKey],
    recipe: Recipe,
    seeds: int,
    args: argparse.Namespace,
) -> list[Path]:
    """Train every (configuration, seed) not finished yet (``args.jobs`` at once); return all run folders."""
    command = command_line()
    jobs = []
    for model, ratio, dw_size in keys:
        for seed in range(seeds):
            config = TrainConfig(model, recipe, seed=seed, ratio=ratio, dw_size=dw_size)
            jobs.append((config, run_dir(config, args.runs_dir)))
    todo = [(config, out) for config, out in jobs if not (out / "final.json").is_file()]
    print(f"{len(jobs)} runs ({len(jobs) - len(todo)} finished already), recipe {recipe.name}", flush=True)
    for config, out in jobs:
        if (config, out) not in todo:  # returns at once, after checking it is the same configuration
            _train_one(config, out, args.data, args.device, False, command)
    if args.jobs == 1:
        for config, out in todo:
            _train_one(config, out, args.data, args.device, not args.no_progress, command)
    else:
        for split in (True, False):  # decode (and cache) the data once, not in every worker
            load_cifar10(args.data, train=split)
        # spawn, not fork: each worker sets up its own CUDA context
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [
                pool.submit(_train_one, config, out, args.data, args.device, False, command)
                for config, out in todo
            ]
            for future in as_completed(futures):
                print(f"finished {future.result()}", flush=True)
    return [out for _, out in jobs]


def table_frame(table: Table, runs: pd.DataFrame) -> pd.DataFrame:
    """The table's rows: measured accuracy (mean, std over seeds) and size, the paper's numbers beside."""
    rows = []
    for model, ratio, dw_size in table.configs:
        key = paper_key(model, ratio, dw_size)
        match = runs[(runs["model"] == model) & (runs["ratio"].fillna(-1) == (ratio or -1))]
        match = match[match["dw_size"].fillna(-1) == (dw_size or -1)]
        paper = CIFAR10_COMPLEXITY.get(key)

        def joined(column: str, match: pd.DataFrame = match) -> str:
            return "; ".join(sorted(set(match[column].astype(str))))

        rows.append(
            {
                "model": model,
                "name": display_name(model, ratio, dw_size),
                "ratio": ratio,
                "dw_size": dw_size,
                "params": int(match["params"].iloc[0]),
                "macs": int(match["macs"].iloc[0]),
                "acc_mean": round(match["test_acc"].mean(), 2),
                "acc_std": round(match["test_acc"].std(ddof=1), 2) if len(match) > 1 else float("nan"),
                "n_seeds": len(match),
                "seeds": " ".join(str(s) for s in sorted(match["seed"])),
                "paper_acc": CIFAR10_ACCURACY.get(key),
                "paper_params_m": paper.params_m if paper else None,
                "paper_flops_m": paper.flops_m if paper else None,
                "recipe": joined("recipe"),
                "scale": joined("scale"),
                "epochs": joined("epochs"),
                "train_images": joined("train_images"),
                "test_images": joined("test_images"),
                "data": joined("data"),
                "hardware": joined("hardware"),
                "commit": joined("commit"),
                "torch": joined("torch"),
                "train_time_s": round(match["wall_time_s"].sum(), 1),
            }
        )
    return pd.DataFrame(rows).astype({"ratio": "Int64", "dw_size": "Int64"})


def _markdown(table: Table, df: pd.DataFrame, recipe: Recipe, command: str) -> str:
    smoke = "smoke" in " ".join(df["scale"])
    lines = [f"# {table.title}", ""]
    if smoke:
        lines += [
            f"**SMOKE SCALE** (`{', '.join(sorted(set(df['scale'])))}`): these accuracies only show that the",
            "pipeline runs end to end (tiny training subset, very few epochs); they are not comparable to the",
            "paper's.",
            "",
        ]
    lines += [f"Data: {'; '.join(sorted(set(df['data'])))}.", ""]
    lines += [
        "| Model | Params (M) | Paper params (M) | FLOPs (M) | Paper FLOPs (M) | Top-1 (%) | Paper top-1 (%) "
        "|",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for _, row in df.iterrows():
        acc = f"{row['acc_mean']:.2f}" + (f" ± {row['acc_std']:.2f}" if row["n_seeds"] > 1 else "")
        acc += f" (n={row['n_seeds']})"
        paper = [
            f"{row[c]:g}" if pd.notna(row[c]) else "—"
            for c in ("paper_params_m", "paper_flops_m", "paper_acc")
        ]
        lines.append(
            f"| {row['name']} | {row['params'] / 1e6:.2f} | {paper[0]} | {row['macs'] / 1e6:.1f} "
            f"| {paper[1]} | {acc} | {paper[2]} |"
        )
    first = df.iloc[0]
    lines += [
        "",
        "Top-1: final-epoch test accuracy (never best-on-test), mean ± sample std over seeds. FLOPs are",
        "multiply-accumulates of conv and linear layers per 32x32 image (the paper's convention).",
        "",
        "## Provenance",
        "",
        f"- recipe: `{recipe.name}`: {recipe.description}",
        f"- recipe spec: `{json.dumps({k: v for k, v in recipe.to_dict().items() if k != 'description'})}`",
        f"- epochs: {first['epochs']}; training images: {first['train_images']}; "
        f"test images: {first['test_images']}",
        f"- hardware: {'; '.join(sorted(set(df['hardware'])))}",
        f"- torch: {'; '.join(sorted(set(df['torch'])))}",
        f"- commit: {'; '.join(sorted(set(df['commit'])))}",
        f"- training time of these runs: {df['train_time_s'].sum() / 60:.1f} min",
        f"- table written by: `{command}` at {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
    ]
    return "\n".join(lines) + "\n"


def write_table(table: Table, runs: pd.DataFrame, recipe: Recipe, results_dir: Path) -> pd.DataFrame:
    """Write ``<name>.csv``, ``<name>.md`` and ``figures/<name>.png`` atomically; return the table."""
    df = table_frame(table, runs)
    write_text_atomic(results_dir / f"{table.name}.csv", df.to_csv(index=False))
    write_text_atomic(results_dir / f"{table.name}.md", _markdown(table, df, recipe, command_line()))
    save_figure_atomic(table.plot(df), results_dir / "figures" / f"{table.name}.png")
    return df


def main(tables: list[str], description: str, argv: list[str] | None = None) -> int:
    """The CLI of a table experiment: train what is missing, then write ``tables``."""
    p = parser(description)
    args = p.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.seeds < 1 or args.jobs < 1:
            raise ValueError(f"--seeds and --jobs must be >= 1, got {args.seeds} and {args.jobs}")
        if args.download:
            download_cifar10(args.data or None)
        recipe = load_recipe(args.recipe)
        keys = list(dict.fromkeys(key for name in tables for key in TABLES[name].configs))
        runs = runs_frame(ensure_runs(keys, recipe, args.seeds, args))
        for name in tables:
            table = TABLES[name]
            write_table(table, runs, recipe, args.results_dir)
            print(f"wrote {args.results_dir / table.name}.csv/.md and figures/{table.name}.png")
    except ValueError as error:
        p.exit(2, f"error: {error}\n")
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min")
    return 0
