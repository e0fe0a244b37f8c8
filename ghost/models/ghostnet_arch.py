"""GhostNet (paper Section 3.3, Table 1), with the official implementation's module and parameter names,
so the released ImageNet checkpoints load into it with ``strict=True``.

Besides classification, a GhostNet exposes the interface of timm models that detection and segmentation
code builds on: :meth:`GhostNet.forward_features` (the feature map before global pooling),
:meth:`GhostNet.forward_head`, and ``feature_info`` (channels and stride of its multi-scale feature maps),
which :class:`GhostNetFeatures` returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ghost.layers import GhostBottleneck, make_divisible

from ._registry import register_model

__all__ = ["GHOSTNET_CFG", "ConvBnAct", "GhostNet", "GhostNetFeatures", "ghostnet"]

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

    ``forward(x)`` is ``forward_head(forward_features(x))``. ``feature_info`` lists the multi-scale
    feature maps in timm's format, one dict per stride (2, 4, 8, 16, 32): ``module`` (the stage of
    ``blocks`` whose output it is), ``num_chs`` (channels) and ``reduction`` (stride w.r.t. the input).
    Each is the output of the *last* stage at its stride (the C1-C5 maps of feature-pyramid networks);
    the stride-32 map is the output of ``forward_features``. For width 1.0 the channels are
    16, 24, 40, 112, 960. (timm's GhostNet lists the *first* stage at each new stride instead, and the
    stem conv for stride 2: 16, 24, 40, 80, 160 channels.) ``feature_info`` is a plain attribute, not
    part of the ``state_dict``.

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
        reduction = 2
        outputs: list[tuple[int, int]] = []  # (channels, reduction) of each stage's output
        for rows in cfgs:
            blocks = []
            for kernel, expansion, out, se_ratio, stride in rows:
                out_chs = make_divisible(out * width, 4)
                mid_chs = make_divisible(expansion * width, 4)
                blocks.append(GhostBottleneck(channels, mid_chs, out_chs, kernel, stride, se_ratio=se_ratio))
                channels = out_chs
                reduction *= stride
            stages.append(nn.Sequential(*blocks))
            outputs.append((channels, reduction))
        last = make_divisible(cfgs[-1][-1][1] * width, 4)
        stages.append(nn.Sequential(ConvBnAct(channels, last, 1)))
        outputs.append((last, reduction))
        self.blocks = nn.Sequential(*stages)
        self.feature_info = [
            {"module": f"blocks.{index}", "num_chs": chs, "reduction": red}
            for index, (chs, red) in enumerate(outputs)
            if index + 1 == len(outputs) or outputs[index + 1][1] != red
        ]
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(last, 1280, 1, 1, 0, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(1280, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-32 feature map before global pooling: stem, all bottlenecks and the final 1x1
        ConvBnAct (``N x feature_info[-1]["num_chs"] x H/32 x W/32``)."""
        return self.blocks(self.act1(self.bn1(self.conv_stem(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits from a :meth:`forward_features` map: global pooling, ``conv_head``, ReLU, dropout and
        the classifier; ``pre_logits=True`` stops before the classifier (``N x 1280``)."""
        x = self.act2(self.conv_head(self.global_pool(x)))
        x = F.dropout(torch.flatten(x, 1), p=self.dropout, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class GhostNetFeatures(nn.Module):
    """The multi-scale feature maps of a GhostNet, for detection and segmentation backbones (timm's
    ``features_only`` model).

    It *shares* the stem and the stages of ``model`` (same modules, same parameters, same ``state_dict``
    names), so a classifier, e.g. one with ImageNet weights loaded, becomes a backbone without copying;
    stages after the last requested map and the classification head are left out.

    Args:
        model: the GhostNet to take the features of.
        out_indices: which entries of ``model.feature_info`` to return, increasing: 0..4 are the maps at
            strides 2, 4, 8, 16, 32.

    Attributes:
        feature_info: the entries of ``model.feature_info`` that ``forward`` returns, in order.

    ``forward(x)`` returns the list of those maps, each ``N x num_chs x H/reduction x W/reduction``
    (rounded up for sizes that are not multiples of the stride).
    """

    def __init__(self, model: GhostNet, out_indices: Sequence[int] = (0, 1, 2, 3, 4)) -> None:
        super().__init__()
        if not isinstance(model, GhostNet):
            raise ValueError(f"model must be a GhostNet (e.g. ghostnet(1.0)), got {type(model).__name__}")
        available = len(model.feature_info)
        indices = tuple(out_indices) if isinstance(out_indices, Sequence) and not isinstance(out_indices, str) else ()
        valid = all(isinstance(i, int) and not isinstance(i, bool) for i in indices) and \
            list(indices) == sorted(set(indices)) and all(0 <= i < available for i in indices)
        if not indices or not valid:
            strides = ", ".join(str(info["reduction"]) for info in model.feature_info)
            raise ValueError(f"out_indices must be distinct increasing integers in 0..{available - 1} (the feature "
                             f"maps at strides {strides}), e.g. (1, 2, 3, 4); got {out_indices!r}")
        self.out_indices = indices
        self.feature_info = [dict(model.feature_info[i]) for i in indices]
        self._stages = [int(str(info["module"]).removeprefix("blocks.")) for info in self.feature_info]
        self.conv_stem, self.bn1, self.act1 = model.conv_stem, model.bn1, model.act1
        self.blocks = model.blocks[: self._stages[-1] + 1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act1(self.bn1(self.conv_stem(x)))
        features = []
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index in self._stages:
                features.append(x)
        return features


@register_model()
def ghostnet(width: float = 1.0, num_classes: int = 1000, dropout: float = 0.2) -> GhostNet:
    """GhostNet (Han et al. 2020). Widths 0.5 / 1.0 / 1.3 give 2,587,292 / 5,182,508 / 7,358,820 params
    and 42.3 / 141.2 / 227.0 M MACs at 224x224 for 1000 classes."""
    return GhostNet(GHOSTNET_CFG, num_classes=num_classes, width=width, dropout=dropout)


@register_model()
def ghostnet_050(num_classes: int = 1000, dropout: float = 0.2) -> GhostNet:
    """GhostNet 0.5x of the paper's comparison of small networks (timm's name): :func:`ghostnet` with ``width=0.5``."""
    return ghostnet(0.5, num_classes=num_classes, dropout=dropout)


@register_model()
def ghostnet_100(num_classes: int = 1000, dropout: float = 0.2) -> GhostNet:
    """GhostNet 1.0x of the paper's comparison of small networks (timm's name): :func:`ghostnet` with ``width=1.0``."""
    return ghostnet(1.0, num_classes=num_classes, dropout=dropout)


@register_model()
def ghostnet_130(num_classes: int = 1000, dropout: float = 0.2) -> GhostNet:
    """GhostNet 1.3x of the paper's comparison of small networks (timm's name): :func:`ghostnet` with ``width=1.3``."""
    return ghostnet(1.3, num_classes=num_classes, dropout=dropout)
