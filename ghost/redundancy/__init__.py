"""Feature-map redundancy analysis (the motivation of GhostNet, Han et al. CVPR 2020, Section 3.1).

Capture feature maps of named layers, measure how similar the channels are, fit the cheap ``d x d``
filter of the paper's toy experiment (in sample and held out), compare a baseline with its Ghost version, and
draw the figures.
:func:`load_model` and :func:`load_inputs` fetch trained weights (or say plainly that there are none)
and preprocessed images.

Example:
    >>> import torch
    >>> from ghost.models import create_model
    >>> from ghost.redundancy import analyze_model, reports_frame
    >>> model = create_model("vgg16_cifar")
    >>> reports = analyze_model(model, torch.randn(8, 3, 32, 32))
    >>> reports_frame(reports, model="vgg16_cifar")[["layer", "near_duplicate_share"]]
"""

from ghost.redundancy.analysis import LayerReport, analyze_layer, analyze_model, compare_models, reports_frame
from ghost.redundancy.capture import (
    capture_feature_maps,
    comparison_points,
    conv_layers,
    ghost_layers,
    matching_layers,
)
from ghost.redundancy.cheap_op import CheapOpFit, fit_cheap_op, held_out_fit_errors, in_d_sweep, pair_fit_errors
from ghost.redundancy.metrics import (
    channel_similarity,
    effective_rank,
    near_duplicate_share,
    nearest_neighbour_similarity,
    top_pairs,
)
from ghost.redundancy.plots import plot_feature_grid, plot_intrinsic_ghost, plot_layer_curves, plot_mse_vs_d
from ghost.redundancy.sources import AnalysisInputs, LoadedModel, load_inputs, load_model, weights_kind

__all__ = [
    "AnalysisInputs",
    "CheapOpFit",
    "LayerReport",
    "LoadedModel",
    "analyze_layer",
    "analyze_model",
    "capture_feature_maps",
    "channel_similarity",
    "compare_models",
    "comparison_points",
    "conv_layers",
    "effective_rank",
    "fit_cheap_op",
    "ghost_layers",
    "held_out_fit_errors",
    "in_d_sweep",
    "load_inputs",
    "load_model",
    "matching_layers",
    "near_duplicate_share",
    "nearest_neighbour_similarity",
    "pair_fit_errors",
    "plot_feature_grid",
    "plot_intrinsic_ghost",
    "plot_layer_curves",
    "plot_mse_vs_d",
    "reports_frame",
    "top_pairs",
    "weights_kind",
]
