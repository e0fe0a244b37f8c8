"""Per-layer redundancy reports for a model, and the layer-by-layer comparison of a baseline with its
Ghost version."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from ghost.redundancy.capture import capture_feature_maps, conv_layers, matching_layers
from ghost.redundancy.cheap_op import held_out_fit_errors, in_d_sweep, pair_fit_errors
from ghost.redundancy.metrics import (
    channel_similarity,
    effective_rank,
    near_duplicate_share,
    nearest_neighbour_similarity,
    top_pairs,
)

__all__ = ["LayerReport", "analyze_layer", "analyze_model", "compare_models", "reports_frame"]


@dataclass(frozen=True)
class LayerReport:
    """Redundancy summary of one layer's feature maps (see :mod:`ghost.redundancy.metrics`).

    Attributes:
        layer: module name; module: its class name.
        channels, height, width: the feature-map shape.
        mean_similarity, max_similarity: mean and maximum similarity over all channel pairs.
        mean_nn_similarity: mean over channels of the similarity to the nearest other channel.
        near_duplicate_share: share of channels with a neighbour at similarity ``>= threshold``.
        threshold: the near-duplicate threshold used.
        effective_rank: Roy-Vetterli effective rank of the ``C x HW`` matrix, mean over images.
        effective_rank_share: ``effective_rank`` over its largest possible value ``min(C, H*W)`` (so layers of
            different width and resolution compare).
        top_pairs: the most similar pairs ``(i, j, similarity)``.
        in_d_sweep: whether the maps are large enough for the toy experiment (:func:`ghost.redundancy.in_d_sweep`;
            the errors are NaN otherwise).
        fit_errors: the toy experiment on ``top_pairs`` **in sample** (one filter per pair and image, scored on
            its own pixels, :func:`ghost.redundancy.pair_fit_errors`): ``{d: (mean mse, mean nmse)}``.
        held_out_errors: the same pairs **held out** (one filter per pair shared by the images, fitted on some,
            scored on the others, :func:`ghost.redundancy.held_out_fit_errors`).
    """

    layer: str
    module: str
    channels: int
    height: int
    width: int
    mean_similarity: float
    max_similarity: float
    mean_nn_similarity: float
    near_duplicate_share: float
    threshold: float
    effective_rank: float
    effective_rank_share: float
    top_pairs: list[tuple[int, int, float]]
    in_d_sweep: bool
    fit_errors: dict[int, tuple[float, float]]
    held_out_errors: dict[int, tuple[float, float]]

    def as_row(self) -> dict[str, object]:
        """A flat dict (one CSV row): the fields, ``top_pairs`` as ``"i-j:sim;..."``, and per filter size the
        in-sample ``insample_mse_d{d}``, ``insample_nmse_d{d}`` and held-out ``heldout_mse_d{d}``,
        ``heldout_nmse_d{d}`` columns."""
        row: dict[str, object] = {
            "layer": self.layer,
            "module": self.module,
            "channels": self.channels,
            "height": self.height,
            "width": self.width,
            "mean_similarity": self.mean_similarity,
            "max_similarity": self.max_similarity,
            "mean_nn_similarity": self.mean_nn_similarity,
            "near_duplicate_share": self.near_duplicate_share,
            "threshold": self.threshold,
            "effective_rank": self.effective_rank,
            "effective_rank_share": self.effective_rank_share,
            "top_pairs": ";".join(f"{i}-{j}:{s:.4f}" for i, j, s in self.top_pairs),
            "in_d_sweep": self.in_d_sweep,
        }
        for kind, errors in (("insample", self.fit_errors), ("heldout", self.held_out_errors)):
            row.update({f"{kind}_mse_d{d}": mse for d, (mse, _) in errors.items()})
            row.update({f"{kind}_nmse_d{d}": nmse for d, (_, nmse) in errors.items()})
        return row


def analyze_layer(
    fmap: torch.Tensor,
    *,
    layer: str = "",
    module: str = "",
    threshold: float = 0.9,
    top_k: int = 8,
    kernel_sizes: Sequence[int] = (1, 3, 5, 7),
    held_out: float = 0.5,
) -> LayerReport:
    """Summarise one layer's feature maps ``[N, C, H, W]`` (``C >= 2``, ``N >= 2``).

    The toy experiment maps the first to the second map of each of the ``top_k`` most similar pairs with a
    ``d x d`` filter: in sample (a filter per image) and held out (one filter per pair fitted on the first images,
    scored on the last ``held_out`` share of them).
    """
    sim = channel_similarity(fmap)
    channels = sim.shape[0]
    if channels < 2:
        raise ValueError(f"layer {layer!r} has {channels} channel; redundancy needs at least 2")
    off_diagonal = sim[~torch.eye(channels, dtype=torch.bool)]
    pairs = top_pairs(sim, top_k)
    index_pairs = [(i, j) for i, j, _ in pairs]
    rank = effective_rank(fmap)
    return LayerReport(
        layer=layer,
        module=module,
        channels=channels,
        height=fmap.shape[2],
        width=fmap.shape[3],
        mean_similarity=off_diagonal.mean().item(),
        max_similarity=off_diagonal.max().item(),
        mean_nn_similarity=nearest_neighbour_similarity(sim).mean().item(),
        near_duplicate_share=near_duplicate_share(sim, threshold),
        threshold=threshold,
        effective_rank=rank,
        effective_rank_share=rank / min(channels, fmap.shape[2] * fmap.shape[3]),
        top_pairs=pairs,
        in_d_sweep=in_d_sweep(fmap.shape[2], fmap.shape[3], kernel_sizes),
        fit_errors=pair_fit_errors(fmap, index_pairs, kernel_sizes),
        held_out_errors=held_out_fit_errors(fmap, index_pairs, kernel_sizes, held_out),
    )


def analyze_model(
    model: nn.Module,
    inputs: torch.Tensor,
    layers: Sequence[str] | None = None,
    *,
    threshold: float = 0.9,
    top_k: int = 8,
    kernel_sizes: Sequence[int] = (1, 3, 5, 7),
    held_out: float = 0.5,
    batch_size: int = 64,
) -> list[LayerReport]:
    """Capture the feature maps of ``layers`` (default: :func:`conv_layers`) on ``inputs`` and summarise
    each with :func:`analyze_layer`. A layer whose output is not a 4-D map with >= 2 channels is an error."""
    layers = conv_layers(model) if layers is None else list(layers)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no convolution layers; name the layers to analyse")
    fmaps = capture_feature_maps(model, inputs, layers, batch_size=batch_size)
    modules = dict(model.named_modules())
    reports = []
    for name, fmap in fmaps.items():
        if fmap.dim() != 4 or fmap.shape[1] < 2:
            raise ValueError(
                f"layer {name!r} outputs shape {tuple(fmap.shape)}, not feature maps [N, C>=2, H, W]; "
                "pick a convolutional layer"
            )
        reports.append(
            analyze_layer(
                fmap,
                layer=name,
                module=type(modules[name]).__name__,
                threshold=threshold,
                top_k=top_k,
                kernel_sizes=kernel_sizes,
                held_out=held_out,
            )
        )
    return reports


def compare_models(
    baseline: nn.Module,
    ghost: nn.Module,
    inputs: torch.Tensor,
    layers: Sequence[str] | None = None,
    *,
    threshold: float = 0.9,
    top_k: int = 8,
    kernel_sizes: Sequence[int] = (1, 3, 5, 7),
    held_out: float = 0.5,
    batch_size: int = 64,
) -> tuple[list[LayerReport], list[LayerReport]]:
    """Analyse a baseline and its Ghost version on the same inputs, layer by layer.

    Args:
        baseline, ghost: e.g. ``vgg16_cifar`` and ``ghost_vgg16_cifar`` (or ``ghostify(baseline)``).
        inputs: the images both models see.
        layers: names present in both models; default :func:`matching_layers` (every converted conv).
        threshold, top_k, kernel_sizes, held_out, batch_size: as in :func:`analyze_model`.

    Returns:
        ``(baseline reports, ghost reports)``, aligned layer by layer.
    """
    layers = matching_layers(baseline, ghost) if layers is None else list(layers)
    options = {"threshold": threshold, "top_k": top_k, "kernel_sizes": kernel_sizes, "held_out": held_out,
               "batch_size": batch_size}
    return analyze_model(baseline, inputs, layers, **options), analyze_model(ghost, inputs, layers, **options)


def reports_frame(reports: Sequence[LayerReport], **columns: object) -> pd.DataFrame:
    """One row per report (:meth:`LayerReport.as_row`), with constant ``columns`` (e.g. ``model="vgg16"``)
    placed first."""
    rows = [{**columns, **report.as_row()} for report in reports]
    return pd.DataFrame(rows)
