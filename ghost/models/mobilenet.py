"""MobileNetV3 widths that torchvision builds but does not name, registered for the paper's comparisons."""

from __future__ import annotations

from torchvision.models import MobileNetV3, mobilenet_v3_large

from ._registry import register_model
from .init import kaiming_normal_fan_out


@register_model(init=kaiming_normal_fan_out)
def mobilenet_v3_large_075(num_classes: int = 1000, dropout: float = 0.2) -> MobileNetV3:
    """MobileNetV3-Large 0.75x (Howard et al. 2019), the FLOPs-matched neighbour of GhostNet 1.0x in the paper's
    comparison of small networks: torchvision's ``mobilenet_v3_large`` with ``width_mult=0.75``, randomly
    initialised; 3,377,576 params and 140.0 M MACs at 224x224 for 1000 classes. The paper quotes the MobileNetV3
    paper's 4.0 M and 155 M: the reference (TF-slim) model keeps the 1280-wide last layer at full width and sizes
    each expansion from the rounded input width, torchvision scales every width by 0.75."""
    return mobilenet_v3_large(weights=None, width_mult=0.75, num_classes=num_classes, dropout=dropout)
