"""ghost: Ghost modules (Han et al., "GhostNet: More Features from Cheap Operations", CVPR 2020),
model surgery that converts any CNN (trained ones too), the paper's networks, and complexity counting."""

from ghost.deploy import fold_batchnorm, prepare_for_inference, strip_redundant_activations
from ghost.layers import GhostBottleneck, GhostConv2d, GhostModule, SqueezeExcite, hard_sigmoid, make_divisible
from ghost.surgery import GhostReport, LayerRecord, ghostify, ghostify_trained

__all__ = [
    "GhostBottleneck",
    "GhostConv2d",
    "GhostModule",
    "GhostReport",
    "LayerRecord",
    "SqueezeExcite",
    "fold_batchnorm",
    "ghostify",
    "ghostify_trained",
    "hard_sigmoid",
    "make_divisible",
    "prepare_for_inference",
    "strip_redundant_activations",
]
__version__ = "0.1.0"
