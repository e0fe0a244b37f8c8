"""The CIFAR-10 networks of the paper's Tables 3-5: VGG-16 and ResNet-56.

- VGG-16: Simonyan & Zisserman (ICLR 2015), the CIFAR variant with BatchNorm after every conv and a
  two-layer head, as used by the network-slimming/pruning literature the GhostNet paper compares with.
- ResNet-56: He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), Section 4.2:
  ``6n + 2`` layers with ``n = 9``, 16/32/64 channels, parameter-free (option A) shortcuts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .init import kaiming_normal_fan_out

__all__ = ["CifarResNet", "CifarVGG", "resnet56_cifar", "vgg16_cifar"]

VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class CifarVGG(nn.Module):
    """VGG for 32x32 inputs: conv3x3-BN-ReLU blocks with max pooling, a global max pool (the fifth VGG
    pool at 32x32) and the head ``Linear(512, 512)-BN-ReLU-Linear(512, num_classes)``."""

    def __init__(self, cfg: tuple[int | str, ...] = VGG16_CFG, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1, bias=False), nn.BatchNorm2d(item),
                           nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(channels, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)
        )
        kaiming_normal_fan_out(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class ShortcutA(nn.Module):
    """He et al.'s option-A shortcut: subsample by ``stride`` and zero-pad the new channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ShortcutA(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR: a 3x3 stem with 16 channels, three stages of ``n`` basic blocks
    (16, 32, 64 channels; stride 2 at the start of stages 2 and 3), global average pool, linear."""

    def __init__(self, depth: int = 56, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 (20, 32, 44, 56, 110...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages, channels = [], 16
        for i, width in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(channels, width, 2 if (i > 0 and j == 0) else 1))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_normal_fan_out(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model(input_size=(3, 32, 32), init=kaiming_normal_fan_out)
def vgg16_cifar(num_classes: int = 10) -> CifarVGG:
    """VGG-16 for CIFAR (paper Tables 3-5): 13 conv3x3-BN-ReLU, 2-layer head; 14,987,722 params for 10
    classes, 313.2 M MACs at 32x32."""
    return CifarVGG(VGG16_CFG, num_classes)


@register_model(input_size=(3, 32, 32), init=kaiming_normal_fan_out)
def resnet56_cifar(num_classes: int = 10) -> CifarResNet:
    """ResNet-56 for CIFAR (He et al. 2016, option-A shortcuts): 853,018 params, 125.5 M MACs at 32x32."""
    return CifarResNet(56, num_classes)
