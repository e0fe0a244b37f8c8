"""Figures of the accuracy tables: pure functions from a results DataFrame to a matplotlib Figure.

Each function takes the DataFrame of a results CSV (``results/cifar10_*.csv``, ``results/imagenette_*.csv``;
columns ``model, ratio, dw_size, macs, acc_mean, acc_std, paper_acc, paper_flops_m, scale, dataset``...) and
returns a Figure. What is plotted is read from the rows (the Ghost model and its baseline, the dataset), so
the same functions draw the CIFAR-10 and the ImageNet tables. Nothing is read or written, and no pyplot
state is touched (figures are built with the object API, so they work under any backend; notebooks display
them, scripts ``savefig`` them). Paper numbers and measured numbers share one accuracy axis, so smoke- and
budget-scale results sit far below the paper's (the title says so).
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from experiments._scale import figure_note, noted
from ghost.models import GHOST_PREFIX

_NAMES = {
    "vgg16_cifar": "VGG-16",
    "resnet56_cifar": "ResNet-56",
    "resnet50": "ResNet-50",
    "ghostnet_050": "GhostNet 0.5x",
    "ghostnet_100": "GhostNet 1.0x",
    "ghostnet_130": "GhostNet 1.3x",
    "mobilenet_v3_large": "MobileNetV3-Large",
    "mobilenet_v3_large_075": "MobileNetV3-Large 0.75x",
}
MEASURED_STYLE = {"color": "tab:blue", "marker": "o"}
PAPER_STYLE = {"color": "tab:orange", "marker": "s", "linestyle": "--"}


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def display_name(model: str, ratio: float | None = None, dw_size: float | None = None) -> str:
    """Human name of a model, e.g. ``Ghost-VGG-16 (s=2, d=3)`` or ``ResNet-56``."""
    base = model[len(GHOST_PREFIX):] if model.startswith(GHOST_PREFIX) else model
    name = ("Ghost-" if model.startswith(GHOST_PREFIX) else "") + _NAMES.get(base, base)
    if _missing(ratio) or _missing(dw_size):
        return name
    return f"{name} (s={int(ratio)}, d={int(dw_size)})"


def _title(df: pd.DataFrame, title: str) -> str:
    recipes = ", ".join(sorted(set(df["recipe"].astype(str))))
    notes = [figure_note(scale) for scale in noted(df["scale"].astype(str))]
    return "\n".join([f"{title} (recipe {recipes})", *notes[:1]])


def _dataset(df: pd.DataFrame) -> str:
    return ", ".join(sorted(set(df["dataset"].astype(str)))) if "dataset" in df else "CIFAR-10"


def _sweep_rows(df: pd.DataFrame, x: str) -> tuple[pd.DataFrame, pd.Series | None]:
    """The Ghost rows of a sweep sorted by ``x``, and the baseline row (the one plain model), if any."""
    ghost = df[df["model"].str.startswith(GHOST_PREFIX)].sort_values(x)
    plain = df[~df["model"].str.startswith(GHOST_PREFIX)]
    return ghost, None if plain.empty else plain.iloc[0]


def _accuracy_lines(ax: Axes, x: pd.Series, rows: pd.DataFrame) -> None:
    ax.errorbar(
        x, rows["acc_mean"], yerr=rows["acc_std"].fillna(0), capsize=3, label="measured", **MEASURED_STYLE
    )
    ax.plot(x, pd.to_numeric(rows["paper_acc"]), label="paper", **PAPER_STYLE)


def _baseline_lines(ax: Axes, base: pd.Series | None) -> None:
    if base is None:
        return
    name = display_name(base["model"])
    ax.axhline(base["acc_mean"], color=MEASURED_STYLE["color"], linestyle=":", label=f"{name}, measured")
    if not _missing(base["paper_acc"]):
        ax.axhline(base["paper_acc"], color=PAPER_STYLE["color"], linestyle=":", label=f"{name}, paper")


def _legend(fig: Figure, *axes: Axes) -> None:
    """One legend below the plot for the artists of all ``axes``: measured, paper, baseline, FLOPs."""
    pairs = [pair for ax in axes for pair in zip(*ax.get_legend_handles_labels(), strict=True)]
    pairs.sort(key=lambda pair: (pair[1].startswith("FLOPs"), "," in pair[1], "paper" in pair[1]))
    handles, labels = zip(*pairs, strict=True)
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=3)


def plot_d_sweep(df: pd.DataFrame) -> Figure:
    """Accuracy of a Ghost model against the cheap operation's kernel size d, its baseline as reference."""
    rows, base = _sweep_rows(df, "dw_size")
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    _accuracy_lines(ax, rows["dw_size"], rows)
    _baseline_lines(ax, base)
    ax.set_xticks(rows["dw_size"].astype(int).tolist())
    ax.set_xlabel("kernel size d of the cheap operation")
    ax.set_ylabel(f"{_dataset(df)} top-1 accuracy (%)")
    name = display_name(rows["model"].iloc[0])
    ax.set_title(_title(df, f"{name} (s={int(rows['ratio'].iloc[0])}): accuracy vs d"), fontsize=10)
    _legend(fig, ax)
    ax.grid(alpha=0.3)
    return fig


def plot_s_sweep(df: pd.DataFrame) -> Figure:
    """Accuracy of a Ghost model against the ratio s, with measured and paper FLOPs on a second axis."""
    rows, base = _sweep_rows(df, "ratio")
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    _accuracy_lines(ax, rows["ratio"], rows)
    _baseline_lines(ax, base)
    flops = ax.twinx()
    flops.plot(rows["ratio"], rows["macs"] / 1e6, color="tab:gray", marker="^", label="FLOPs, measured")
    flops.plot(
        rows["ratio"],
        pd.to_numeric(rows["paper_flops_m"]),
        color="tab:gray",
        marker="v",
        linestyle="--",
        label="FLOPs, paper",
    )
    flops.set_ylabel("FLOPs (M multiply-accumulates)")
    flops.set_ylim(bottom=0)
    ax.set_xticks(rows["ratio"].astype(int).tolist())
    ax.set_xlabel("ratio s")
    ax.set_ylabel(f"{_dataset(df)} top-1 accuracy (%)")
    name = display_name(rows["model"].iloc[0])
    ax.set_title(_title(df, f"{name} (d={int(rows['dw_size'].iloc[0])}): accuracy and FLOPs vs s"), fontsize=10)
    _legend(fig, ax, flops)
    ax.grid(alpha=0.3)
    return fig


def plot_compression(df: pd.DataFrame) -> Figure:
    """Accuracy against FLOPs of a comparison table: paper points and measured points in one plot, each Ghost
    model joined to its baseline when both are present."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    for kind, x_col, y_col, style in (
        ("measured", "macs", "acc_mean", MEASURED_STYLE),
        ("paper", "paper_flops_m", "paper_acc", PAPER_STYLE),
    ):
        x = df[x_col] / 1e6 if x_col == "macs" else df[x_col]
        ax.scatter(x, df[y_col], color=style["color"], marker=style["marker"], label=kind, zorder=3)
        for (_, row), xi, yi in zip(df.iterrows(), x, df[y_col], strict=True):
            ax.annotate(
                display_name(row["model"]), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7
            )
        for ghost in sorted(m for m in set(df["model"]) if m.startswith(GHOST_PREFIX)):
            pair = df["model"].isin([ghost[len(GHOST_PREFIX):], ghost])
            if pair.sum() >= 2:
                ax.plot(
                    x[pair],
                    df.loc[pair, y_col],
                    color=style["color"],
                    alpha=0.4,
                    linestyle=style.get("linestyle"),
                )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.margins(x=0.15, y=0.08)
    ax.set_xlabel("FLOPs (M multiply-accumulates, log scale)")
    ax.set_ylabel(f"{_dataset(df)} top-1 accuracy (%)")
    ax.set_title(_title(df, f"{_dataset(df)}: accuracy vs FLOPs"), fontsize=10)
    _legend(fig, ax)
    ax.grid(alpha=0.3, which="both")
    return fig


def _accuracy_vs_flops(ax: Axes, df: pd.DataFrame, flops_m: pd.Series, acc: pd.Series, err: pd.Series | None,
                       style: dict[str, str]) -> None:
    """One panel of :func:`plot_imagenet`: a labelled point per row (error bars where given), each Ghost model
    joined to its host."""
    ax.errorbar(flops_m, acc, yerr=err, color=style["color"], marker=style["marker"], linestyle="none", capsize=3,
                zorder=3)
    for (_, row), xi, yi in zip(df.iterrows(), flops_m, acc, strict=True):
        ax.annotate(display_name(row["model"], row["ratio"], row["dw_size"]), (xi, yi), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    for ghost in sorted(m for m in set(df["model"]) if m.startswith(GHOST_PREFIX)):
        host = df["model"] == ghost[len(GHOST_PREFIX):]
        for ratio in sorted(set(df.loc[df["model"] == ghost, "ratio"])):
            pair = host | ((df["model"] == ghost) & (df["ratio"] == ratio))
            if pair.sum() >= 2:
                ax.plot(flops_m[pair], acc[pair], color=style["color"], alpha=0.4, linestyle=style.get("linestyle"))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.margins(x=0.2, y=0.1)
    ax.grid(alpha=0.3, which="both")


def plot_imagenet(df: pd.DataFrame) -> Figure:
    """An ImageNet-format table in two panels that never share an axis: left, the measured top-1 (mean ± std
    over seeds) against the FLOPs of the trained models at their resolution (``trained_macs``); right, the
    paper's ImageNet-1k top-1 against its FLOPs at 224x224 (rows the paper reports)."""
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    measured, paper = fig.subplots(1, 2)
    rows = df[df["n_seeds"] > 0]
    _accuracy_vs_flops(measured, rows, rows["trained_macs"] / 1e6, rows["acc_mean"], rows["acc_std"].fillna(0),
                       MEASURED_STYLE)
    sizes = ", ".join(sorted(set(rows["input_size"].astype(str))))
    measured.set_xlabel(f"FLOPs of the trained model at {sizes or '—'} (M MACs, log scale)")
    measured.set_ylabel(f"{_dataset(df)} top-1 (%), mean ± std over seeds")
    measured.set_title(_title(df, f"measured on {_dataset(df)}"), fontsize=9)
    quoted = df[df["paper_acc"].notna()]
    _accuracy_vs_flops(paper, quoted, quoted["paper_flops_m"], quoted["paper_acc"], None, PAPER_STYLE)
    paper.set_xlabel("FLOPs at 224x224, as the paper reports them (M MACs, log scale)")
    paper.set_ylabel("ImageNet-1k top-1 (%), paper")
    paper.set_title("the paper's ImageNet-1k numbers (another dataset and schedule)", fontsize=9)
    return fig


def configuration_curves(curves: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The rows of a :func:`ghost.train.learning_curves` frame per configuration: ``(display name, rows)``, in
    the order the configurations first appear."""
    keys = ["model", "ratio", "dw_size"]
    groups = []
    for (model, ratio, dw_size), rows in curves.groupby(keys, dropna=False, sort=False):
        groups.append((display_name(model, ratio, dw_size), rows))
    return groups


def plot_learning_curves(curves: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Training curves of finished runs (the frame of :func:`ghost.train.learning_curves`), one colour per
    configuration, mean over its seeds: left, the training loss after every epoch; right, the test accuracy at
    each test point, with the spread (min to max) over seeds as error bars."""
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    loss, accuracy = fig.subplots(1, 2)
    for index, (name, rows) in enumerate(configuration_curves(curves)):
        colour = f"C{index % 10}"
        seeds = rows["seed"].nunique()
        per_epoch = rows.groupby("epoch")
        loss.plot(per_epoch["train_loss"].mean(), color=colour, marker=".", label=f"{name} (n={seeds})")
        tested = rows.dropna(subset=["test_acc"]).groupby("epoch")["test_acc"]
        mean = tested.mean()
        accuracy.errorbar(mean.index, mean, yerr=[mean - tested.min(), tested.max() - mean], color=colour,
                          marker="o", capsize=3, label=f"{name} (n={seeds})")
    loss.set_xlabel("epoch")
    loss.set_ylabel("training loss (mean over seeds)")
    accuracy.set_xlabel("epoch")
    accuracy.set_ylabel("test top-1 (%), mean over seeds, min-max bars")
    for ax in (loss, accuracy):
        ax.grid(alpha=0.3)
    accuracy.legend(fontsize=7)
    recipes = ", ".join(sorted(set(curves["recipe"].astype(str))))
    fig.suptitle(title or f"Learning curves (recipe {recipes})", fontsize=10)
    return fig


TRANSFER_METHODS = {
    "host": ("trained host (teacher)", "tab:gray"),
    "transfer": ("(a) weight transfer, no training", "tab:green"),
    "transfer+distill": ("(b) transfer + distillation", "tab:blue"),
    "random+distill": ("(c) random init + distillation", "tab:orange"),
    "scratch": ("(d) trained from scratch", "tab:purple"),
}
"""The rows of a weight-transfer table (``results/cifar10_transfer.csv``, column ``method``): label and colour."""


def plot_transfer(df: pd.DataFrame) -> Figure:
    """Top-1 accuracy of each step of a weight-transfer table (columns ``host_model, ratio, dw_size, method,
    test_acc, step_s, finetune_recipe``), one group of bars per host and Ghost configuration, each bar labelled
    with its accuracy and the wall-clock minutes of its step; rows without an accuracy (not run) are left out."""
    groups = list(dict.fromkeys(zip(df["host_model"], df["ratio"], df["dw_size"], strict=True)))
    fig = Figure(figsize=(6.4 + 1.2 * max(0, len(groups) - 2), 4.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(TRANSFER_METHODS)
    for k, (method, (label, color)) in enumerate(TRANSFER_METHODS.items()):
        rows = df[(df["method"] == method) & df["test_acc"].notna()]
        offset = (k - (len(TRANSFER_METHODS) - 1) / 2) * width
        x = [groups.index(g) + offset for g in zip(rows["host_model"], rows["ratio"], rows["dw_size"], strict=True)]
        bars = ax.bar(x, rows["test_acc"], width, color=color, label=label)
        texts = [f"{acc:.1f}" + ("" if _missing(seconds) else f"\n{seconds / 60:.1f} min")
                 for acc, seconds in zip(rows["test_acc"], rows["step_s"], strict=True)]
        ax.bar_label(bars, texts, fontsize=6, padding=2)
    ax.set_xticks(range(len(groups)), [f"{display_name(host)} ->\n{display_name(GHOST_PREFIX + host, ratio, dw_size)}"
                                       for host, ratio, dw_size in groups], fontsize=8)
    ax.set_ylim(0, 112)
    ax.set_ylabel(f"{_dataset(df)} top-1 accuracy (%)")
    recipes = ", ".join(sorted(set(df["finetune_recipe"].astype(str))))
    ax.set_title(f"{_dataset(df)}: converting a trained model (fine-tuning recipe {recipes})\n"
                 "bar labels: top-1 (%) and wall-clock minutes of that step", fontsize=10)
    fig.legend(fontsize=7, loc="outside lower center", ncols=3)
    ax.grid(alpha=0.3, axis="y")
    return fig
