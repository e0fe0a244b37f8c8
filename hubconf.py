"""torch.hub entry points: ``torch.hub.load("<checkout>", "ghostnet_100", source="local")``.

Every entry point takes ``pretrained=False, weights=None, **kwargs`` (``kwargs`` go to the builder, e.g.
``num_classes``; the Ghost variants also take ``ratio`` and ``dw_size``). Nothing is downloaded:
``weights=PATH`` loads a local checkpoint strictly (the official GhostNet PyTorch layout, timm's, wrappers such
as ``{"state_dict": ...}``, DDP prefixes, or a run folder of this project's training engine), and
``pretrained=True`` without ``weights`` raises a ``ValueError`` that says so.
"""

from __future__ import annotations

# Every public callable here is listed as an entry point (torch.hub.list), so helpers are imported privately.
import os as _os
from collections.abc import Callable as _Callable

from torch import nn as _nn

import ghost as _ghost
from ghost.models import create_model as _create_model
from ghost.models.weights import load_weights as _load_weights
from ghost.models.weights import resolve_weights as _resolve_weights

dependencies = ["torch", "torchvision"]

_Weights = str | _os.PathLike | None


def _entry(name: str, what: str, model: str | None = None) -> _Callable[..., _nn.Module]:
    """The entry point ``name`` that builds ``create_model(model or name, **kwargs)`` and loads ``weights``."""
    model = model or name

    def entry(pretrained: bool = False, weights: _Weights = None, **kwargs) -> _nn.Module:
        path = _resolve_weights(pretrained, weights)
        built = _create_model(model, **kwargs)
        return built if path is None else _load_weights(built, path)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"{what}: ``ghost.models.create_model({model!r}, **kwargs)``, randomly initialised unless ``weights`` "
        "names a local checkpoint (``pretrained=True`` alone raises: nothing can be downloaded)."
    )
    return entry


ghostnet_050 = _entry("ghostnet_050", "GhostNet 0.5x (paper Table 8)")
ghostnet_100 = _entry("ghostnet_100", "GhostNet 1.0x (paper Table 8)")
ghostnet_130 = _entry("ghostnet_130", "GhostNet 1.3x (paper Table 8)")
ghostnet_1x = _entry("ghostnet_1x", "GhostNet 1.0x under the official repository's hub name", model="ghostnet_100")
ghostnetv2_100 = _entry("ghostnetv2_100", "GhostNetV2 1.0x (Tang et al., NeurIPS 2022)")
ghostnetv2_130 = _entry("ghostnetv2_130", "GhostNetV2 1.3x (Tang et al., NeurIPS 2022)")
ghostnetv2_160 = _entry("ghostnetv2_160", "GhostNetV2 1.6x (Tang et al., NeurIPS 2022)")
vgg16_cifar = _entry("vgg16_cifar", "VGG-16 for CIFAR-10 (paper Table 4)")
resnet56_cifar = _entry("resnet56_cifar", "ResNet-56 for CIFAR-10 (paper Table 4)")
ghost_vgg16_cifar = _entry("ghost_vgg16_cifar", "Ghost-VGG-16 for CIFAR-10 (paper Table 4)")
ghost_resnet56_cifar = _entry("ghost_resnet56_cifar", "Ghost-ResNet-56 for CIFAR-10 (paper Table 4)")


def ghostify(model: _nn.Module, /, pretrained: bool = False, weights: _Weights = None, **kwargs) -> _nn.Module:
    """``ghost.ghostify(model, **kwargs)``: a Ghost copy of any CNN (``ratio``, ``dw_size``, ``policy``...), into
    which ``weights`` (a local checkpoint of the converted model) is loaded if given; ``pretrained=True``
    alone raises (nothing can be downloaded). The model is passed positionally (``torch.hub.load``'s own
    second argument is called ``model``): ``torch.hub.load(repo, "ghostify", net, source="local", ratio=2)``."""
    path = _resolve_weights(pretrained, weights)
    converted = _ghost.ghostify(model, **kwargs)
    return converted if path is None else _load_weights(converted, path)
