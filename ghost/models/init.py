"""Weight-initialisation schemes, named so that a Ghost version can be initialised like its host."""

from __future__ import annotations

from torch import nn

__all__ = ["kaiming_normal_fan_out"]


def kaiming_normal_fan_out(module: nn.Module) -> None:
    """He et al. (2015) normal init with fan-out for every conv (zero bias), ones/zeros for every BatchNorm:
    the scheme of the CIFAR VGG-16/ResNet-56 builders and of torchvision's ResNet, VGG, MobileNet,
    EfficientNet, MNASNet and RegNet families."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
