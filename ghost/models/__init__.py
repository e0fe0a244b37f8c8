"""Model zoo: the paper's networks, torchvision's classifiers and Ghost variants of all of them.

>>> from ghost.models import create_model
>>> model = create_model("ghost_vgg16_cifar", ratio=2, dw_size=3)
"""

from ._registry import GHOST_PREFIX, create_model, default_input_size, init_scheme, list_models, register_model
from .cifar import CifarResNet, CifarVGG, resnet56_cifar, vgg16_cifar
from .ghostnet_arch import GhostNet, ghostnet

__all__ = [
    "GHOST_PREFIX",
    "CifarResNet",
    "CifarVGG",
    "GhostNet",
    "create_model",
    "default_input_size",
    "init_scheme",
    "ghostnet",
    "list_models",
    "register_model",
    "resnet56_cifar",
    "vgg16_cifar",
]
