"""Model zoo: the paper's networks, GhostNetV2, torchvision's and timm's classifiers, Ghost variants of all.

>>> from ghost.models import create_model
>>> model = create_model("ghost_vgg16_cifar", ratio=2, dw_size=3)
"""

from ._registry import (
    GHOST_PREFIX,
    SOURCES,
    TIMM_PREFIX,
    create_model,
    default_input_size,
    init_scheme,
    list_models,
    model_source,
    register_model,
)
from .cifar import CifarResNet, CifarVGG, resnet56_cifar, vgg16_cifar
from .ghostnet_arch import GhostNet, GhostNetFeatures, ghostnet
from .ghostnetv2 import GhostModuleV2, GhostNetV2, ghostnetv2
from .mobilenet import mobilenet_v3_large_075

__all__ = [
    "GHOST_PREFIX",
    "SOURCES",
    "TIMM_PREFIX",
    "CifarResNet",
    "CifarVGG",
    "GhostModuleV2",
    "GhostNet",
    "GhostNetFeatures",
    "GhostNetV2",
    "create_model",
    "default_input_size",
    "init_scheme",
    "ghostnet",
    "ghostnetv2",
    "list_models",
    "mobilenet_v3_large_075",
    "model_source",
    "register_model",
    "resnet56_cifar",
    "vgg16_cifar",
]
