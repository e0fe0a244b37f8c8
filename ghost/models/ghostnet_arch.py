"""GhostNet (paper Section 3.3, Table 1), with the official implementation's module and parameter names,
so the released ImageNet checkpoints load into it with ``strict=True``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ghost.layers import GhostBottleneck, make_divisible

from ._registry import register_model

__all__ = ["GHOSTNET_CFG", "ConvBnAct", "GhostNet", "ghostnet"]

# Paper Table 1, one row per bottleneck: kernel of the depthwise conv, expansion size, output channels,
# SE ratio, stride. Rows are grouped the way the official code groups them into ``blocks``.
GHOSTNET_CFG: tuple[tuple[tuple[int, int, int, float, int], ...], ...] = (
    ((3, 16, 16, 0, 1),),
    ((3, 48, 24, 0, 2),),
    ((3, 72, 24, 0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0, 2),),
    ((3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)),
)


class ConvBnAct(nn.Module):
    """Conv ("same" padding, no bias), BatchNorm, ReLU."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


class GhostNet(nn.Module):
    """GhostNet: a stem conv, a stack of Ghost bottlenecks, a 1x1 ConvBnAct, global pooling, a 1x1
    ``conv_head`` to 1280 channels, dropout and a linear classifier.

    Args:
        cfgs: bottleneck rows, grouped into stages (see :data:`GHOSTNET_CFG`).
        num_classes: classifier outputs.
        width: width multiplier; channels are rounded with ``make_divisible(c * width, 4)``.
        dropout: dropout before the classifier.
    """

    def __init__(self, cfgs=GHOSTNET_CFG, num_classes: int = 1000, width: float = 1.0, dropout: float = 0.2):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        self.dropout = dropout
        channels = make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(3, channels, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = nn.ReLU(inplace=True)
        stages = []
        for rows in cfgs:
            blocks = []
            for kernel, expansion, out, se_ratio, stride in rows:
                out_chs = make_divisible(out * width, 4)
                mid_chs = make_divisible(expansion * width, 4)
                blocks.append(GhostBottleneck(channels, mid_chs, out_chs, kernel, stride, se_ratio=se_ratio))
                channels = out_chs
            stages.append(nn.Sequential(*blocks))
        last = make_divisible(cfgs[-1][-1][1] * width, 4)
        stages.append(nn.Sequential(ConvBnAct(channels, last, 1)))
        self.blocks = nn.Sequential(*stages)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(last, 1280, 1, 1, 0, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        x = self.act2(self.conv_head(self.global_pool(x)))
        x = F.dropout(torch.flatten(x, 1), p=self.dropout, training=self.training)
        return self.classifier(x)


@register_model()
def ghostnet(width: float = 1.0, num_classes: int = 1000, dropout: float = 0.2) -> GhostNet:
    """GhostNet (Han et al. 2020). Widths 0.5 / 1.0 / 1.3 give 2,587,292 / 5,182,508 / 7,358,820 params
    and 42.3 / 141.2 / 227.0 M MACs at 224x224 for 1000 classes."""
    return GhostNet(GHOSTNET_CFG, num_classes=num_classes, width=width, dropout=dropout)


@register_model()
def ghostnet_050(num_classes: int = 1000, dropout: float = 0.2) -> GhostNet:
    """GhostNet 0.5x of the paper's Table 8 (timm's name): :func:`ghostnet` with ``width=0.5``."""
    return ghostnet(0.5, num_classes=num_classes, dropout=dropout)


@register_model()
def ghostnet_100(num_classes: int = 1000, dropout: float = 0.2) -> GhostNet:
    """GhostNet 1.0x of the paper's Table 8 (timm's name): :func:`ghostnet` with ``width=1.0``."""
    return ghostnet(1.0, num_classes=num_classes, dropout=dropout)


@register_model()
def ghostnet_130(num_classes: int = 1000, dropout: float = 0.2) -> GhostNet:
    """GhostNet 1.3x of the paper's Table 8 (timm's name): :func:`ghostnet` with ``width=1.3``."""
    return ghostnet(1.3, num_classes=num_classes, dropout=dropout)
