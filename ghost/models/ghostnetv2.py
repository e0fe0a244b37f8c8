"""GhostNetV2 (Tang et al., "GhostNetV2: Enhance Cheap Operation with Long-Range Attention", NeurIPS 2022,
arXiv:2211.12905): GhostNet whose expansion Ghost modules are gated by DFC attention.

The architecture is GhostNet's (same Table 1 configuration, widths, head), except that the first Ghost module
of every bottleneck after the first two is a :class:`GhostModuleV2`. Module and parameter names are those of
the official implementation and of timm's ``ghostnetv2_100/130/160``, whose state_dicts load with
``strict=True``.

Complexity convention (:func:`ghost.complexity.count_macs`): the DFC branch's three convolutions are counted
(at the pooled resolution), its average pooling, sigmoid, nearest upsampling and gating multiplication are
not, like every pooling, activation and elementwise op. With it the recount matches the paper's FLOPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ghost.layers import GhostModule

from ._registry import register_model
from .ghostnet_arch import GHOSTNET_CFG, GhostNet

__all__ = ["GhostModuleV2", "GhostNetV2", "ghostnetv2"]


class GhostModuleV2(GhostModule):
    """A Ghost module whose output is multiplied by decoupled fully-connected (DFC) attention of its input.

    The attention branch (``short_conv``, the official name) runs on the input average-pooled by 2: the
    primary conv's shape (``kernel_size``, ``stride``) to ``oup`` channels, then a ``1 x k`` and a ``k x 1``
    depthwise conv (the horizontal and vertical fully-connected layers of the paper, ``k = attention_size``),
    each followed by BatchNorm; a sigmoid turns it into a gate, upsampled (nearest) to the output's size.

    Args:
        inp, oup, kernel_size, ratio, dw_size, stride, relu: as in :class:`ghost.layers.GhostModule`.
        attention_size: ``k``, the odd length of the DFC attention's depthwise convs (5 in GhostNetV2).
    """

    def __init__(
        self,
        inp: int,
        oup: int,
        kernel_size: int = 1,
        ratio: int = 2,
        dw_size: int = 3,
        stride: int = 1,
        relu: bool = True,
        attention_size: int = 5,
    ) -> None:
        super().__init__(inp, oup, kernel_size, ratio, dw_size, stride, relu)
        pad = attention_size // 2
        self.short_conv = nn.Sequential(
            nn.Conv2d(inp, oup, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(oup),
            nn.Conv2d(oup, oup, (1, attention_size), 1, (0, pad), groups=oup, bias=False),
            nn.BatchNorm2d(oup),
            nn.Conv2d(oup, oup, (attention_size, 1), 1, (pad, 0), groups=oup, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.short_conv(F.avg_pool2d(x, kernel_size=2, stride=2)))
        out = super().forward(x)
        return out * F.interpolate(gate, size=out.shape[-2:], mode="nearest")


class GhostNetV2(GhostNet):
    """GhostNetV2: :class:`~ghost.models.GhostNet` with the expansion Ghost module (``ghost1``) of every
    bottleneck but the first two replaced by a :class:`GhostModuleV2` of the same shape.

    Args:
        cfgs, num_classes, width, dropout: as in :class:`~ghost.models.GhostNet`.
    """

    def __init__(self, cfgs=GHOSTNET_CFG, num_classes: int = 1000, width: float = 1.0, dropout: float = 0.2):
        super().__init__(cfgs, num_classes=num_classes, width=width, dropout=dropout)
        bottlenecks = [block for stage in self.blocks[:-1] for block in stage]
        for block in bottlenecks[2:]:
            block.ghost1 = GhostModuleV2(block.ghost1.in_channels, block.ghost1.out_channels, relu=True)


@register_model()
def ghostnetv2(width: float = 1.0, num_classes: int = 1000, dropout: float = 0.2) -> GhostNetV2:
    """GhostNetV2 (Tang et al. 2022). Widths 1.0 / 1.3 / 1.6 give 6,156,908 / 8,960,404 / 12,392,698 params
    and 167.0 / 269.3 / 398.6 M MACs at 224x224 for 1000 classes."""
    return GhostNetV2(GHOSTNET_CFG, num_classes=num_classes, width=width, dropout=dropout)


@register_model()
def ghostnetv2_100(num_classes: int = 1000, dropout: float = 0.2) -> GhostNetV2:
    """GhostNetV2 1.0x (timm's name): :func:`ghostnetv2` with ``width=1.0``."""
    return ghostnetv2(1.0, num_classes=num_classes, dropout=dropout)


@register_model()
def ghostnetv2_130(num_classes: int = 1000, dropout: float = 0.2) -> GhostNetV2:
    """GhostNetV2 1.3x (timm's name): :func:`ghostnetv2` with ``width=1.3``."""
    return ghostnetv2(1.3, num_classes=num_classes, dropout=dropout)


@register_model()
def ghostnetv2_160(num_classes: int = 1000, dropout: float = 0.2) -> GhostNetV2:
    """GhostNetV2 1.6x (timm's name): :func:`ghostnetv2` with ``width=1.6``."""
    return ghostnetv2(1.6, num_classes=num_classes, dropout=dropout)
