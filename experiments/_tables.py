"""Shared machinery of the table experiments: the CIFAR-10 tables (sweep_d, sweep_s, cifar_compression,
reproduce) and the ImageNet-format tables (imagenet_resnet50, imagenet_small_nets, and the sweeps with
``--dataset imagenet``).

Each table is a list of configurations. Every (configuration, seed) is trained once into its run folder
``<runs-dir>/<recipe>/<model>[-s<s>-d<d>]/seed<k>`` (shared between tables, skipped when finished; with
``--launcher submitit`` each run is a job of submitit's executor, e.g. on Slurm), then the table is rebuilt
from the finished runs: ``<results-dir>/<name>.{csv,md}`` and ``figures/<name>.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from experiments._cli import check_device, check_results_dir, cli_errors, results_dir
from experiments._scale import noted, table_banner
from experiments.plotting import display_name, plot_compression, plot_d_sweep, plot_imagenet, plot_s_sweep
from ghost.complexity import count_macs, count_params
from ghost.data import download_cifar10, load_cifar10
from ghost.io import save_figure_atomic, write_text_atomic
from ghost.models import GHOST_PREFIX, default_input_size
from ghost.paper import (
    CIFAR10_ACCURACY,
    CIFAR10_COMPLEXITY,
    IMAGENET_ACCURACY,
    IMAGENET_COMPLEXITY,
    IMAGENET_TOP5,
    PaperKey,
    paper_key,
)
from ghost.provenance import command_line
from ghost.runs import FINAL, ModelSpec, differences
from ghost.train import (
    DEFAULT_RUNS_DIR,
    Dataset,
    Parallelism,
    Recipe,
    Scale,
    TrainConfig,
    build_model,
    list_recipes,
    load_recipe,
    run_dir,
    runs_frame,
    train,
)

DEFAULT_RECIPES = {Dataset.CIFAR10: "quick", Dataset.IMAGENET: "imagenette-64px"}
SWEEP_MODELS = {Dataset.CIFAR10: "vgg16_cifar", Dataset.IMAGENET: "resnet50"}
_PAPER_CLASSES = {Dataset.CIFAR10: 10, Dataset.IMAGENET: 1000}


@dataclass(frozen=True)
class Table:
    """One table: its file name, title, the dataset it trains on, its configurations and its figure."""

    name: str
    title: str
    dataset: Dataset
    configs: tuple[PaperKey, ...]
    plot: Callable[[pd.DataFrame], Figure]
    reference: PaperKey | None = None  # a configuration that the others (but its host) are also compared with


def d_sweep(dataset: Dataset, model: str) -> Table:
    """Ghost-``model`` (s=2) for d in {1,3,5,7} beside ``model`` (the paper's Table 2 for VGG-16)."""
    return Table(_table_name(dataset, "d_sweep", model),
                 f"{display_name(ghost_name(model))} (s=2): kernel size d of the cheap operation"
                 + (" (paper Table 2)" if model == "vgg16_cifar" else ""),
                 dataset, ((model, None, None), *((ghost_name(model), 2, d) for d in (1, 3, 5, 7))), plot_d_sweep,
                 reference=(ghost_name(model), 2, 3))


def s_sweep(dataset: Dataset, model: str) -> Table:
    """Ghost-``model`` (d=3) for s in {2,3,4,5} beside ``model`` (the paper's Table 3 for VGG-16)."""
    paper = " (paper Table 3)" if model == "vgg16_cifar" else ""
    return Table(_table_name(dataset, "s_sweep", model), f"{display_name(ghost_name(model))} (d=3): ratio s{paper}",
                 dataset, ((model, None, None), *((ghost_name(model), s, 3) for s in (2, 3, 4, 5))), plot_s_sweep,
                 reference=(ghost_name(model), 2, 3))


CIFAR_COMPRESSION = Table(
    "cifar10_compression", "Compressing VGG-16 and ResNet-56 on CIFAR-10 (paper Table 4)", Dataset.CIFAR10,
    (("vgg16_cifar", None, None), ("ghost_vgg16_cifar", 2, 3), ("resnet56_cifar", None, None),
     ("ghost_resnet56_cifar", 2, 3)), plot_compression,
)
IMAGENETTE_RESNET50 = Table(
    "imagenette_resnet50", "ResNet-50 against Ghost-ResNet-50 (s=2 and s=4)", Dataset.IMAGENET,
    (("resnet50", None, None), ("ghost_resnet50", 2, 3), ("ghost_resnet50", 4, 3)), plot_imagenet,
)
IMAGENETTE_SMALL_NETS = Table(
    "imagenette_small_nets", "GhostNet widths against MobileNetV3-Large 1.0x and 0.75x", Dataset.IMAGENET,
    (("ghostnet_050", None, None), ("ghostnet_100", None, None), ("ghostnet_130", None, None),
     ("mobilenet_v3_large_075", None, None), ("mobilenet_v3_large", None, None)), plot_imagenet,
    reference=("ghostnet_100", None, None),
)


def ghost_name(model: str) -> str:
    """The name of ``model``'s Ghost variant."""
    return GHOST_PREFIX + model


def _table_name(dataset: Dataset, kind: str, model: str) -> str:
    prefix = "cifar10" if dataset == Dataset.CIFAR10 else "imagenette"
    return f"{prefix}_{kind}" if model == SWEEP_MODELS[dataset] else f"{prefix}_{kind}_{model}"


def parser(description: str, sweep: bool = False) -> argparse.ArgumentParser:
    """The options shared by the table experiments (``sweep``: also ``--dataset`` and ``--model``)."""
    p = argparse.ArgumentParser(description=description)
    if sweep:
        p.add_argument("--dataset", choices=[str(d) for d in Dataset], default="cifar10", help="default cifar10")
        p.add_argument("--model", help=f"the baseline to sweep (default {SWEEP_MODELS[Dataset.CIFAR10]} on cifar10, "
                                       f"{SWEEP_MODELS[Dataset.IMAGENET]} on imagenet)")
    p.add_argument("--recipe", help=f"{', '.join(list_recipes())} or a recipe JSON (default quick on CIFAR-10, "
                                    "imagenette-64px on ImageNet data)")
    p.add_argument("--only", help="only these configurations of the table, e.g. resnet50,ghost_resnet50-s2-d3")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per configuration (default 1)")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="where runs live (default runs/)")
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="where tables go (default results/)")
    p.add_argument("--data", help="the data copy (default: $GHOST_CIFAR10 or $GHOST_IMAGENET)")
    p.add_argument("--download", action="store_true", help="download the official CIFAR-10 into --data")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once (e.g. 4 on one GPU; default 1)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per run, ImageNet data (default 2)")
    p.add_argument("--launcher", choices=("local", "submitit"), default="local",
                   help="local: train here (--jobs at once); submitit: one job per run through submitit's "
                        "AutoExecutor (Slurm when available, else local processes)")
    p.add_argument("--submitit-dir", type=Path, default=Path("runs/submitit"), help="submitit's logs and pickles")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _train_one(config: TrainConfig, out: Path, args: argparse.Namespace, progress: bool, command: str) -> Path:
    train(config, out, data_root=args.data, device=args.device, progress=progress, command=command,
          parallel=Parallelism(workers=args.workers))
    return out


def _pending(keys: list[PaperKey], recipe: Recipe, args: argparse.Namespace) -> Iterator[tuple[TrainConfig, Path]]:
    for model, ratio, dw_size in keys:
        for seed in range(args.seeds):
            config = TrainConfig(model, recipe, seed=seed, ratio=ratio, dw_size=dw_size)
            yield config, run_dir(config, args.runs_dir)


def _submit(todo: list[tuple[TrainConfig, Path]], args: argparse.Namespace, command: str) -> None:
    import submitit

    executor = submitit.AutoExecutor(folder=args.submitit_dir)
    executor.update_parameters(timeout_min=60 * 72, name="ghost-train")
    jobs = [executor.submit(_train_one, config, out, args, False, command) for config, out in todo]
    for job in jobs:
        print(f"finished {job.result()} (submitit job {job.job_id})", flush=True)


def _train_parallel(todo: list[tuple[TrainConfig, Path]], args: argparse.Namespace, recipe: Recipe,
                    command: str) -> None:
    if recipe.dataset == Dataset.CIFAR10:
        for split in (True, False):  # decode (and cache) the data once, not in every worker
            load_cifar10(args.data, train=split)
    # spawn, not fork: each worker sets up its own CUDA context
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_one, config, out, args, False, command) for config, out in todo]
        for future in as_completed(futures):
            print(f"finished {future.result()}", flush=True)


def ensure_runs(keys: list[PaperKey], recipe: Recipe, args: argparse.Namespace) -> list[Path]:
    """Train every (configuration, seed) not finished yet; return all run folders."""
    command = command_line()
    jobs = list(_pending(keys, recipe, args))
    todo = [(config, out) for config, out in jobs if not (out / FINAL).is_file()]
    print(f"{len(jobs)} runs ({len(jobs) - len(todo)} finished already), recipe {recipe.name}", flush=True)
    for config, out in jobs:
        if (config, out) not in todo:  # returns at once, after checking it is the same configuration
            _train_one(config, out, args, False, command)
    if args.launcher == "submitit":
        _submit(todo, args, command)
    elif args.jobs == 1:
        for config, out in todo:
            _train_one(config, out, args, not args.no_progress, command)
    else:
        _train_parallel(todo, args, recipe, command)
    return [out for _, out in jobs]


@cache
def paper_conditions(model: str, ratio: int | None, dw_size: int | None, dataset: Dataset) -> tuple[int, int]:
    """Parameters and MACs of a configuration as the paper counts them: its classifier for the paper's number
    of classes (1000 on ImageNet), at the model's paper input size (224x224 on ImageNet, 32x32 on CIFAR)."""
    net = build_model(model, ratio, dw_size, num_classes=_PAPER_CLASSES[dataset])
    return count_params(net), count_macs(net, input_size=default_input_size(model))


def _paper(dataset: Dataset, key: PaperKey) -> dict[str, float | None]:
    accuracy, complexity = (CIFAR10_ACCURACY, CIFAR10_COMPLEXITY) if dataset == Dataset.CIFAR10 else \
        (IMAGENET_ACCURACY, IMAGENET_COMPLEXITY)
    size = complexity.get(key)
    return {"paper_acc": accuracy.get(key), "paper_top5": IMAGENET_TOP5.get(key),
            "paper_params_m": size.params_m if size else None, "paper_flops_m": size.flops_m if size else None}


def _row(table: Table, key: PaperKey, match: pd.DataFrame) -> dict[str, object]:
    model, ratio, dw_size = key

    def joined(column: str) -> str:
        return "; ".join(sorted(set(match[column].astype(str))))

    params, macs = paper_conditions(model, ratio, dw_size, table.dataset)
    nan = float("nan")
    first = match.iloc[0] if len(match) else None
    return {
        "model": model, "name": display_name(model, ratio, dw_size), "ratio": ratio, "dw_size": dw_size,
        "dataset": "CIFAR-10" if table.dataset == Dataset.CIFAR10 or first is None else
        first["data_name"],
        "params": params, "macs": macs,
        "trained_params": int(first["params"]) if first is not None else None,
        "trained_macs": int(first["macs"]) if first is not None else None,
        "acc_mean": round(match["test_acc"].mean(), 2) if len(match) else nan,
        "acc_std": round(match["test_acc"].std(ddof=1), 2) if len(match) > 1 else nan,
        "top5_mean": round(match["test_top5"].mean(), 2) if len(match) else nan,
        "acc_running_bn_mean": round(match["test_acc_running_bn"].mean(), 2) if len(match) else nan,
        "n_seeds": len(match), "seeds": " ".join(str(s) for s in sorted(match["seed"])),
        **_paper(table.dataset, paper_key(model, ratio, dw_size)),
        **{column: joined(column) for column in ("recipe", "scale", "epochs", "input_size", "train_images",
                                                 "test_images", "data", "hardware", "commit", "torch",
                                                 "setting")},
        "train_time_s": round(match["wall_time_s"].sum(), 1),
    }


def _matching(runs: pd.DataFrame, key: PaperKey) -> pd.DataFrame:
    """The runs of one configuration."""
    model, ratio, dw_size = key
    return runs[(runs["model"] == model) & (runs["ratio"].fillna(-1) == (ratio or -1))
                & (runs["dw_size"].fillna(-1) == (dw_size or -1))]


def table_runs(table: Table, runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of ``table``'s configurations among ``runs``."""
    return pd.concat([_matching(runs, key) for key in table.configs]) if not runs.empty else runs


def host_of(key: PaperKey) -> PaperKey | None:
    """The configuration a Ghost configuration is compared with (its host model), ``None`` for a plain one."""
    spec = ModelSpec.named(*key)
    return (spec.host, None, None) if spec.is_ghost else None


def paired_difference(runs: pd.DataFrame, other: pd.DataFrame, confidence: float = 0.95) -> dict[str, object]:
    """Mean test-accuracy difference ``runs - other`` over the seeds both have, with a Student-t confidence
    interval (``nan`` for fewer than two pairs), and whether every pair trained on the same hardware."""
    pairs = runs[["seed", "test_acc", "hardware"]].merge(other[["seed", "test_acc", "hardware"]], on="seed",
                                                         suffixes=("", "_other"))
    diff = pairs["test_acc"] - pairs["test_acc_other"]
    n, nan = len(diff), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * diff.std(ddof=1) / math.sqrt(n) if n > 1 else nan
    mean = diff.mean() if n else nan
    return {"diff_mean": round(mean, 3), "diff_ci_low": round(mean - half, 3), "diff_ci_high": round(mean + half, 3),
            "n_pairs": n, "pairs_same_hardware": bool((pairs["hardware"] == pairs["hardware_other"]).all())}


def check_consistent(table: Table, runs: pd.DataFrame) -> None:
    """Refuse a table whose runs do not share their recipe, data copy and code-relevant identity.

    Raises:
        ValueError: naming the first record that differs from the others and how.
    """
    mine = table_runs(table, runs)
    if mine.empty:  # none of this table's configurations has a record yet
        return
    common = mine["shared_identity"].mode().iloc[0]
    for _, run in mine.iterrows():
        if run["shared_identity"] != common:
            found, expected = json.loads(run["shared_identity"]), json.loads(common)
            raise ValueError(f"the record {run['run_dir']} differs from the other runs of the table {table.name} "
                             f"({differences(expected, found)}); move it out of the records or retrain it")


def table_frame(table: Table, runs: pd.DataFrame) -> pd.DataFrame:
    """The table's rows: measured accuracy (mean, std over seeds) and size, each Ghost configuration's paired
    difference from its host (``diff_*``) and, for a table with a ``reference``, from it (``ref_diff_*``), and the
    paper's numbers beside."""
    check_consistent(table, runs)
    rows = []
    for key in table.configs:
        match = _matching(runs, key)
        row = _row(table, key, match)
        host = host_of(key)
        if host is not None:
            row.update(host=display_name(*host), **paired_difference(match, _matching(runs, host)),
                       paper_diff=_paper_diff(table.dataset, key, host))
        if table.reference is not None and key not in (table.reference, host_of(table.reference)):
            reference = paired_difference(match, _matching(runs, table.reference))
            row.update({f"ref_{k}": v for k, v in reference.items()})
        rows.append(row)
    return pd.DataFrame(rows).astype({"ratio": "Int64", "dw_size": "Int64"})


def _paper_diff(dataset: Dataset, key: PaperKey, host: PaperKey) -> float | None:
    ghost, plain = _paper(dataset, paper_key(*key))["paper_acc"], _paper(dataset, paper_key(*host))["paper_acc"]
    return None if ghost is None or plain is None else round(ghost - plain, 2)


def _cell(value: object, fmt: str = "g") -> str:
    return "—" if value is None or pd.isna(value) else format(value, fmt)


def format_difference(row: pd.Series, prefix: str = "") -> str:
    """``-1.71 [-2.50, -0.92] (n=3)``: a paired difference with its 95 % interval; ``—`` without pairs."""
    n = row.get(f"{prefix}n_pairs")
    if n is None or pd.isna(n) or n == 0:
        return "—"
    text = f"{row[f'{prefix}diff_mean']:+.2f}"
    text += f" [{row[f'{prefix}diff_ci_low']:+.2f}, {row[f'{prefix}diff_ci_high']:+.2f}]" if n > 1 else ""
    text += f" (n={int(n)}" + ("" if row[f"{prefix}pairs_same_hardware"] else ", mixed CPUs") + ")"
    return text


def format_accuracy(row: pd.Series) -> str:
    """``86.68 ± 0.04 (n=3)``: mean ± sample std over seeds."""
    if row["n_seeds"] == 0:
        return "— (n=0)"
    std = f" ± {row['acc_std']:.2f}" if row["n_seeds"] > 1 else ""
    return f"{row['acc_mean']:.2f}{std} (n={row['n_seeds']})"


def _imagenet_lines(table: Table, df: pd.DataFrame) -> list[str]:
    """The rows of an ImageNet-format table: sizes for 1000 classes at 224 px and as trained, the measured
    accuracies, then the paper's ImageNet-1k numbers in their own columns."""
    sizes = "; ".join(sorted(set(df["input_size"]) - {""})) or "—"
    hosts = df["host"].notna().any() if "host" in df else False
    columns = ["Model", "Params (M)", "FLOPs at 224 px (M)", f"FLOPs at {sizes} (M)", "Top-1 (%)",
               *(["Δ vs host (95 % CI)"] if hosts else []),
               *([f"Δ vs {display_name(*table.reference)} (95 % CI)"] if table.reference else []),
               "Top-5 (%)", "Top-1, running BN (%)", "ImageNet-1k, paper: params (M)", "FLOPs (M)", "top-1 (%)",
               *(["Δ vs host"] if hosts else []), "top-5 (%)"]
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    for _, row in df.iterrows():
        trained = "—" if pd.isna(row["trained_macs"]) else f"{row['trained_macs'] / 1e6:.1f}"
        cells = [row["name"], f"{row['params'] / 1e6:.2f}", f"{row['macs'] / 1e6:.1f}", trained, format_accuracy(row),
                 *([format_difference(row)] if hosts else []),
                 *([format_difference(row, "ref_")] if table.reference else []),
                 _cell(row["top5_mean"], ".2f"), _cell(row["acc_running_bn_mean"], ".2f"),
                 _cell(row["paper_params_m"]), _cell(row["paper_flops_m"]), _cell(row["paper_acc"]),
                 *([_cell(row.get("paper_diff"), "+g")] if hosts else []), _cell(row["paper_top5"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _table_lines(table: Table, df: pd.DataFrame, imagenet: bool) -> list[str]:
    if imagenet:
        return _imagenet_lines(table, df)
    reference = f" Δ vs {display_name(*table.reference)} (95 % CI) |" if table.reference is not None else ""
    lines = ["| Model | Params (M) | Paper params (M) | FLOPs (M) | Paper FLOPs (M) | Top-1 (%) | Δ vs host (95 % CI) |"
             + reference + " Paper top-1 (%) | Paper Δ |",
             "|---|" + "---:|" * 8 + ("---:|" if reference else "")]
    for _, row in df.iterrows():
        cells = [row["name"], f"{row['params'] / 1e6:.2f}", _cell(row["paper_params_m"]), f"{row['macs'] / 1e6:.1f}",
                 _cell(row["paper_flops_m"]), format_accuracy(row), format_difference(row)]
        if reference:
            cells.append(format_difference(row, "ref_"))
        cells += [_cell(row["paper_acc"]), _cell(row.get("paper_diff"), "+g")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def hardware_note(df: pd.DataFrame) -> str:
    kinds = sorted(set().union(*(set(h.split("; ")) for h in df["hardware"] if h)))
    if len(kinds) <= 1:
        return f"- hardware: {kinds[0] if kinds else '—'} (every run)"
    return (f"- hardware: the runs come from {len(kinds)} kinds of machine ({'; '.join(kinds)}); a difference marked "
            "'mixed CPUs' pairs runs trained on different ones")


def _markdown(table: Table, df: pd.DataFrame, recipe: Recipe, command: str) -> str:
    imagenet = table.dataset == Dataset.IMAGENET
    lines = [f"# {table.title}: {', '.join(sorted(set(df['dataset'])))}", ""]
    lines += [table_banner(scale) for scale in noted(df["scale"])][:1] + [""]
    lines += [f"Data: {'; '.join(sorted(set(df['data']) - {''}))}.", "", *_table_lines(table, df, imagenet), ""]
    size_note = ("for a 1000-class classifier (params, FLOPs at 224 px: the paper's condition) and for the trained "
                 "model (its dataset's classifier, at the trained resolution: trained_params/trained_macs in the "
                 "CSV)") if imagenet else "per 32x32 image"
    missing = [row["name"] for _, row in df.iterrows() if row["n_seeds"] == 0]
    lines += [
        "Top-1/top-5: final-epoch test accuracy (never best-on-test), mean ± sample std over seeds (n). Δ: the",
        "difference in top-1 points from the host (or the reference), paired by seed, mean and Student-t 95 %",
        "interval over the pairs; an interval that contains 0 means these seeds do not resolve the difference.",
        f"Params and FLOPs (multiply-accumulates of conv and linear layers, the paper's convention) are {size_note}.",
        *(["Top-1, running BN: the same runs scored with the BatchNorm running statistics as training left them,",
           "before precise BN recomputed them (— where the recipe does not recompute them). The paper's columns are",
           "ImageNet-1k numbers (1000 classes, full schedules at 224 px): another dataset, never on one axis with",
           "the measured ones."] if imagenet else []),
        *([f"Not trained yet: {', '.join(missing)}.", ""] if missing else [""]),
        "## Provenance",
        "",
        f"- recipe: `{recipe.name}`: {recipe.description}",
        f"- recipe spec: `{json.dumps({k: v for k, v in recipe.to_dict().items() if k != 'description'})}`",
        f"- epochs: {'; '.join(sorted(set(df['epochs']) - {''}))}; training images: "
        f"{'; '.join(sorted(set(df['train_images']) - {''}))}; test images: "
        f"{'; '.join(sorted(set(df['test_images']) - {''}))}",
        f"- training setting: {'; '.join(sorted(set(df['setting']) - {''}))}",
        hardware_note(df),
        f"- torch: {'; '.join(sorted(set(df['torch']) - {''}))}",
        f"- commit: {'; '.join(sorted(set('; '.join(df['commit']).split('; ')) - {''}))}",
        f"- training time of these runs: {df['train_time_s'].sum() / 60:.1f} min",
        f"- table written by: `{command}`",
    ]
    return "\n".join(lines) + "\n"


def table_stem(table: Table, recipe: Recipe) -> str:
    """The file name of ``table`` trained with ``recipe``: the table's name for a smoke-scale recipe, else
    ``<name>_<recipe>`` (so a budget or full-scale table sits beside the smoke one instead of replacing it)."""
    return table.name if recipe.scale == Scale.SMOKE else f"{table.name}_{recipe.name}"


def write_table(table: Table, runs: pd.DataFrame, recipe: Recipe, folder: Path,
                command: str | None = None, stem: str | None = None) -> pd.DataFrame:
    """Write ``<stem>.csv``, ``<stem>.md`` and ``figures/<stem>.png`` atomically (default stem:
    :func:`table_stem`); return the table. ``command``: what the Markdown names as its writer (default: this
    process's command line)."""
    df, stem = table_frame(table, runs), stem or table_stem(table, recipe)
    write_text_atomic(folder / f"{stem}.csv", df.to_csv(index=False))
    write_text_atomic(folder / f"{stem}.md", _markdown(table, df, recipe, command or command_line()))
    save_figure_atomic(table.plot(df), folder / "figures" / f"{stem}.png")
    return df


def _labels(key: PaperKey) -> set[str]:
    """Names that select a configuration: its model, and ``<model>-s<s>-d<d>`` for a Ghost model."""
    spec = ModelSpec.named(*key)
    return {spec.name, spec.label}


def _only(table: Table, names: list[str]) -> Table:
    """``table`` restricted to the configurations ``names`` select."""
    configs = tuple(key for key in table.configs if _labels(key) & set(names))
    unknown = sorted(set(names) - set().union(*map(_labels, table.configs)))
    if unknown or not configs:
        known = sorted(set().union(*map(_labels, table.configs)))
        raise ValueError(f"{', '.join(unknown) or 'nothing'} is not in the table {table.name}; choose from "
                         f"{', '.join(known)}")
    return dataclasses.replace(table, configs=configs)


def _recipe(args: argparse.Namespace, dataset: Dataset) -> Recipe:
    recipe = load_recipe(args.recipe or DEFAULT_RECIPES[dataset])
    if recipe.dataset != dataset:
        raise ValueError(f"recipe {recipe.name!r} trains on {recipe.dataset}, not {dataset}; pick a {dataset} recipe")
    return recipe


def run_tables(tables: list[Table], args: argparse.Namespace) -> None:
    """Train what ``tables`` still need, then write them (``args``: the options of :func:`parser`)."""
    check_device(args.device)
    check_results_dir(args.results_dir)
    check_results_dir(args.runs_dir)
    if args.seeds < 1 or args.jobs < 1 or args.workers < 0:
        raise ValueError(f"--seeds and --jobs must be >= 1 and --workers >= 0, got {args.seeds}, {args.jobs} "
                         f"and {args.workers}")
    recipe = _recipe(args, tables[0].dataset)
    if args.only:
        tables = [_only(table, args.only.split(",")) for table in tables]
    if args.download:
        download_cifar10(args.data or None)
    keys = list(dict.fromkeys(key for table in tables for key in table.configs))
    runs = runs_frame(ensure_runs(keys, recipe, args))
    folder = results_dir(args.results_dir)
    for table in tables:
        write_table(table, runs, recipe, folder)
        stem = table_stem(table, recipe)
        print(f"wrote {folder / stem}.csv/.md and figures/{stem}.png")


def main(tables: list[Table] | Callable[[argparse.Namespace], list[Table]], description: str,
         argv: list[str] | None = None) -> int:
    """The CLI of a table experiment: ``tables``, or a function of the parsed options that makes them (sweeps)."""
    sweep = callable(tables)
    args = parser(description, sweep=sweep).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the engine's "resuming ... from epoch N"
    start = time.perf_counter()
    with cli_errors(resume_hint="run the same command again: finished runs are reused, the others resume"):
        run_tables(tables(args) if sweep else tables, args)
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min")
    return 0


def sweep_tables(kind: Callable[[Dataset, str], Table]) -> Callable[[argparse.Namespace], list[Table]]:
    """The tables of a sweep CLI: ``kind`` (:func:`d_sweep` or :func:`s_sweep`) for ``--dataset``/``--model``."""

    def make(args: argparse.Namespace) -> list[Table]:
        dataset = Dataset(args.dataset)
        return [kind(dataset, args.model or SWEEP_MODELS[dataset])]

    return make
