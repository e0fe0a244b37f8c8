"""Figures of the redundancy analysis. Pure functions: data in, ``matplotlib.figure.Figure`` out (nothing
is shown or saved here)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ghost.redundancy.cheap_op import in_d_sweep
from ghost.redundancy.sources import weights_kind

__all__ = ["plot_feature_grid", "plot_intrinsic_ghost", "plot_layer_curves", "plot_mse_vs_d"]

_LEGEND_LINE, _LEGEND_PAD = 0.28, 0.1  # inches per legend line below the grid, and the margin
_PAIR_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#ff7f00", "#984ea3", "#a65628", "#f781bf", "#17becf")


def _check_maps(maps: torch.Tensor, what: str) -> None:
    if maps.dim() != 3 or 0 in maps.shape:
        raise ValueError(f"{what} must be one image's maps [C, H, W], got shape {tuple(maps.shape)}")


def _show(ax, image: torch.Tensor, cmap: str) -> None:
    ax.imshow(image.detach().float().cpu().numpy(), cmap=cmap, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_feature_grid(
    maps: torch.Tensor,
    pairs: Sequence[tuple[int, int] | tuple[int, int, float]] = (),
    *,
    columns: int = 8,
    title: str | None = None,
    cmap: str = "viridis",
) -> Figure:
    """The paper's Figure 1: a grid of one image's feature maps with similar pairs outlined in matching
    colours.

    Args:
        maps: ``[C, H, W]``; each map is scaled to its own range for display.
        pairs: disjoint channel pairs ``(i, j)`` or ``(i, j, similarity)`` to outline (at most 8 colours).
        columns: maps per row.
        title: figure title.
        cmap: a matplotlib colormap name.
    """
    _check_maps(maps, "maps")
    if len(pairs) > len(_PAIR_COLOURS):
        raise ValueError(f"at most {len(_PAIR_COLOURS)} pairs can be outlined, got {len(pairs)}")
    channels = maps.shape[0]
    for pair in pairs:
        if not (0 <= pair[0] < channels and 0 <= pair[1] < channels):
            raise ValueError(f"pair {tuple(pair[:2])} is out of range for {channels} maps")
    outlined = [channel for pair in pairs for channel in pair[:2]]
    if len(set(outlined)) != len(outlined):
        raise ValueError(
            f"pairs {[tuple(p[:2]) for p in pairs]} share a map, which cannot carry two outlines; pass "
            "disjoint pairs, e.g. top_pairs(sim, k, disjoint=True)"
        )
    columns = max(1, min(columns, channels))
    rows = math.ceil(channels / columns)
    fig = Figure(figsize=(1.3 * columns, 1.3 * rows + 0.5 + 2 * _LEGEND_PAD + len(pairs) * _LEGEND_LINE))
    axes = fig.subplots(rows, columns, squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= channels:
            ax.axis("off")
            continue
        _show(ax, maps[index], cmap)
        ax.text(
            1,
            1,
            str(index),
            color="white",
            fontsize=7,
            va="top",
            ha="left",
            bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0},
        )
    legend = []
    for colour, pair in zip(_PAIR_COLOURS, pairs, strict=False):
        for channel in pair[:2]:
            ax = axes.flat[channel]
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(colour)
                spine.set_linewidth(3.5)
        similarity = f" (|cos| {pair[2]:.3f})" if len(pair) > 2 else ""
        legend.append((colour, f"maps {pair[0]} & {pair[1]}{similarity}"))
    # one legend line per pair below the grid, in inches from the bottom edge
    height = fig.get_figheight()
    for k, (colour, text) in enumerate(legend):
        y = _LEGEND_PAD + (len(legend) - 1 - k) * _LEGEND_LINE
        fig.text(0.02, y / height, "\u25a0 " + text, color=colour, fontsize=10, va="bottom")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(
        left=0.01,
        right=0.99,
        top=1 - 0.5 / height,
        bottom=(2 * _LEGEND_PAD + len(legend) * _LEGEND_LINE) / height,
        wspace=0.08,
        hspace=0.08,
    )
    return fig


def plot_intrinsic_ghost(
    intrinsic: torch.Tensor,
    ghost: torch.Tensor,
    *,
    count: int = 8,
    title: str | None = None,
    cmap: str = "viridis",
) -> Figure:
    """Intrinsic maps of a Ghost layer (top row) above the ghost maps the cheap operation made from them.

    Ghost map ``j`` comes from intrinsic map ``j // (ratio - 1)`` with ``ratio - 1 = G // I``, so column
    ``c`` shows intrinsic map ``c`` and, below it, its ``ratio - 1`` ghost maps.

    Args:
        intrinsic: one image's intrinsic maps ``[I, H, W]`` (output of ``primary_conv``).
        ghost: the same image's ghost maps ``[G, H, W]`` (output of ``cheap_operation``), ``G`` a
            multiple of ``I``.
        count: how many intrinsic maps (columns) to show.
        title: figure title.
        cmap: a matplotlib colormap name.
    """
    _check_maps(intrinsic, "intrinsic")
    _check_maps(ghost, "ghost")
    if ghost.shape[0] % intrinsic.shape[0] or ghost.shape[1:] != intrinsic.shape[1:]:
        raise ValueError(
            f"ghost maps {tuple(ghost.shape)} do not match intrinsic maps {tuple(intrinsic.shape)}: expected "
            "(ratio - 1) * I maps of the same size, from one Ghost layer's cheap_operation and primary_conv"
        )
    per_intrinsic = ghost.shape[0] // intrinsic.shape[0]
    columns = max(1, min(count, intrinsic.shape[0]))
    rows = 1 + per_intrinsic
    fig = Figure(figsize=(1.4 * columns + 0.9, 1.4 * rows + 0.5))
    axes = fig.subplots(rows, columns, squeeze=False)
    for c in range(columns):
        _show(axes[0, c], intrinsic[c], cmap)
        axes[0, c].set_title(f"#{c}", fontsize=8)
        for k in range(per_intrinsic):
            _show(axes[1 + k, c], ghost[c * per_intrinsic + k], cmap)
    axes[0, 0].set_ylabel("intrinsic", fontsize=9)
    for k in range(per_intrinsic):
        axes[1 + k, 0].set_ylabel("ghost" if per_intrinsic == 1 else f"ghost {k + 1}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(
        left=0.6 / fig.get_figwidth(),
        right=0.99,
        bottom=0.02,
        top=1 - 0.55 / fig.get_figheight(),
        wspace=0.06,
        hspace=0.12,
    )
    return fig


def _check_frame(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing or df.empty:
        raise ValueError(
            f"expected a non-empty redundancy table (from reports_frame or results/redundancy_<model>.csv) with "
            f"columns {', '.join(columns)}; missing: {', '.join(missing) or 'rows'}"
        )


def _label(model: object, rows: pd.DataFrame) -> str:
    """Legend label: the model, and whether its weights were trained (from a ``weights`` column)."""
    if "weights" not in rows.columns:
        return str(model)
    kinds = sorted({weights_kind(str(w)) for w in rows["weights"]})
    return f"{model} [{', '.join(kinds)}]"


def plot_layer_curves(df: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Per-layer redundancy of each model in a redundancy table (one line per ``model``, layers in row
    order): mean nearest-neighbour similarity, near-duplicate share, and effective rank over the largest
    rank possible (``min(C, H*W)``).

    Args:
        df: rows from :func:`ghost.redundancy.reports_frame` or ``results/redundancy_<model>.csv``; needs columns
            ``model, layer, channels, height, width, mean_nn_similarity, near_duplicate_share, threshold,
            effective_rank_share``; a ``weights`` column marks each model trained or untrained in the legend.
        title: figure title.
    """
    columns = ["model", "layer", "channels", "height", "width", "mean_nn_similarity", "near_duplicate_share"]
    _check_frame(df, [*columns, "threshold", "effective_rank_share"])
    panels = [
        ("mean_nn_similarity", "nearest-neighbour |cos|\n(mean over channels)"),
        ("near_duplicate_share", "share of channels with a\nnear duplicate (|cos| \u2265 {t})"),
        ("effective_rank_share", "effective rank\n/ min(channels, pixels)"),
    ]
    fig = Figure(figsize=(11, 4.4 if title else 4.2))
    axes = fig.subplots(1, len(panels))
    longest: list[str] = []
    for model, rows in df.groupby("model", sort=False):
        longest = list(rows["layer"]) if len(rows) > len(longest) else longest
        for ax, (column, _) in zip(axes, panels, strict=True):
            ax.plot(range(len(rows)), rows[column], marker="o", markersize=3, label=_label(model, rows))
    thresholds = ", ".join(f"{t:g}" for t in df["threshold"].unique())
    for ax, (_, label) in zip(axes, panels, strict=True):
        ax.set_title(label.format(t=thresholds), fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("layer (depth order)")
        ax.grid(alpha=0.3)
        step = max(1, math.ceil(len(longest) / 14))
        ax.set_xticks(range(0, len(longest), step))
        ax.set_xticklabels(longest[::step], rotation=75, fontsize=7)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_mse_vs_d(df: pd.DataFrame, *, title: str | None = None) -> Figure:
    """The toy experiment: error of the ``d x d`` filter mapping a map to its most similar partner (MSE over the
    target's variance) against ``d``. Left: in sample (a filter per image, scored on its own pixels: it falls with
    ``d`` by construction); right: held out (one filter per pair shared by the images, scored on images it was not
    fitted to). Thin lines are single layers, thick lines the mean over layers, one colour per ``model``; only the
    layers :func:`ghost.redundancy.in_d_sweep` admits (the rule the tables use).

    Args:
        df: a redundancy table with ``model``, ``height``, ``width`` and ``insample_nmse_d{d}`` /
            ``heldout_nmse_d{d}`` columns (:func:`ghost.redundancy.reports_frame`).
        title: figure title (default: what is plotted).
    """
    sizes = sorted(int(m.group(1)) for c in df.columns if (m := re.fullmatch(r"insample_nmse_d(\d+)", c)))
    kinds = [f"{kind}_nmse_d{d}" for kind in ("insample", "heldout") for d in sizes or [1]]
    _check_frame(df, ["model", "height", "width", *kinds])
    df = df[[in_d_sweep(h, w, sizes) for h, w in zip(df["height"], df["width"], strict=True)]]
    if df.empty:
        raise ValueError(f"no layer has maps large enough for d up to {max(sizes)} (both sides >= {2 * max(sizes)} "
                         "px, ghost.redundancy.in_d_sweep); analyse earlier layers or larger inputs")
    fig = Figure(figsize=(9, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    for index, (model, rows) in enumerate(df.groupby("model", sort=False)):
        colour = f"C{index % 10}"
        for ax, kind in zip(axes, ("insample", "heldout"), strict=True):
            values = rows[[f"{kind}_nmse_d{d}" for d in sizes]].to_numpy(dtype=float)
            for layer_values in values:
                ax.plot(sizes, layer_values, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(sizes, np.nanmean(values, axis=0), color=colour, marker="o", linewidth=2.2,
                    label=f"{_label(model, rows)}, mean of {len(values)} layers")
    axes[0].set_title("in sample: a filter per image, scored on its own pixels", fontsize=9)
    axes[1].set_title("held out: one filter per pair, scored on other images", fontsize=9)
    axes[0].set_ylabel("MSE / variance of the target")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{d}\u00d7{d}" for d in sizes])
        ax.set_xlabel("cheap filter size d")
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=8)
    default = (f"Fitting a d\u00d7d filter from a map to its most similar partner (maps of \u2265 {2 * max(sizes)} px "
               "a side)")
    fig.suptitle(title or default, fontsize=11)
    fig.tight_layout()
    return fig
