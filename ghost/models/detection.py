"""GhostNet as the backbone of torchvision's detectors (the paper's Table 9: COCO detection with RetinaNet
and Faster R-CNN on a GhostNet 1.1x backbone).

:class:`GhostNetFPN` puts a feature-pyramid network (``torchvision.ops.FeaturePyramidNetwork``) on the
multi-scale maps of a GhostNet (:class:`~ghost.models.ghostnet_arch.GhostNetFeatures`); it has the
``out_channels`` attribute torchvision's detectors read, so it plugs into
``torchvision.models.detection.FasterRCNN`` and ``RetinaNet`` (:func:`fasterrcnn_ghostnet_fpn`,
:func:`retinanet_ghostnet_fpn`). It takes any :class:`~ghost.models.GhostNet`, GhostNetV2 included
(``GhostNetFPN(ghostnetv2(1.0))``). Everything is randomly initialised (nothing is downloaded); to start
from ImageNet weights, load them into the GhostNet classifier and pass that model to :class:`GhostNetFPN`.

>>> from ghost.models.detection import fasterrcnn_ghostnet_fpn
>>> detector = fasterrcnn_ghostnet_fpn(num_classes=91, width=1.1)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from .ghostnet_arch import GhostNet, GhostNetFeatures, ghostnet

__all__ = [
    "FASTER_RCNN_OUT_INDICES",
    "RETINANET_OUT_INDICES",
    "GhostNetFPN",
    "fasterrcnn_ghostnet_fpn",
    "ghostnet_fpn_backbone",
    "retinanet_ghostnet_fpn",
]

#: Feature maps the Faster R-CNN builder feeds to the FPN: strides 4, 8, 16, 32 (C2-C5, as torchvision's
#: ``fasterrcnn_resnet50_fpn``); with the max-pooled extra level that makes the five levels of its anchors.
FASTER_RCNN_OUT_INDICES = (1, 2, 3, 4)
#: Feature maps the RetinaNet builder feeds to the FPN: strides 8, 16, 32 (C3-C5), plus P6 and P7.
RETINANET_OUT_INDICES = (2, 3, 4)


def _check_positive_int(name: str, value: object, minimum: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} ({example}), got {value!r}")
    return value


class GhostNetFPN(nn.Module):
    """A GhostNet with a feature-pyramid network on top: the ``BackboneWithFPN`` of torchvision's detectors.

    Args:
        model: the GhostNet whose stem and stages become the backbone (shared, not copied).
        out_indices: the feature maps of ``model.feature_info`` the FPN reads (0..4: strides 2..32).
        out_channels: channels of every pyramid level.
        extra_blocks: extra levels after the last one (torchvision's ``ExtraFPNBlock``); ``None`` adds a
            max-pooled level named ``"pool"``, as torchvision's ``BackboneWithFPN`` does.

    Attributes:
        body: the :class:`GhostNetFeatures` extractor.
        fpn: the ``FeaturePyramidNetwork``.
        out_channels: channels of every output level (read by the detectors).

    ``forward(images)`` returns an ``OrderedDict`` of pyramid levels, finest first, named ``"0"``, ``"1"``...
    for the backbone maps, then the names of the extra blocks.
    """

    def __init__(
        self,
        model: GhostNet,
        out_indices: Sequence[int] = FASTER_RCNN_OUT_INDICES,
        out_channels: int = 256,
        extra_blocks: ExtraFPNBlock | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int("out_channels", out_channels, 1, "e.g. 256")
        if extra_blocks is not None and not isinstance(extra_blocks, ExtraFPNBlock):
            raise ValueError("extra_blocks must be a torchvision.ops.feature_pyramid_network.ExtraFPNBlock "
                             f"(e.g. LastLevelP6P7(out_channels, out_channels)) or None, got {type(extra_blocks)}")
        self.body = GhostNetFeatures(model, out_indices)
        self.fpn = FeaturePyramidNetwork(
            [int(info["num_chs"]) for info in self.body.feature_info],
            out_channels,
            extra_blocks=LastLevelMaxPool() if extra_blocks is None else extra_blocks,
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(index), feature) for index, feature in enumerate(features)))


def ghostnet_fpn_backbone(
    width: float = 1.0,
    *,
    out_indices: Sequence[int] = FASTER_RCNN_OUT_INDICES,
    out_channels: int = 256,
    extra_blocks: ExtraFPNBlock | None = None,
) -> GhostNetFPN:
    """A randomly initialised :class:`GhostNetFPN` on ``ghostnet(width)``; see there for the arguments."""
    return GhostNetFPN(ghostnet(width), out_indices, out_channels, extra_blocks)


def _check_num_classes(num_classes: object) -> None:
    _check_positive_int("num_classes", num_classes, 2, "torchvision counts the background class too, e.g. 91 "
                        "for COCO")


def fasterrcnn_ghostnet_fpn(
    num_classes: int, width: float = 1.1, *, out_channels: int = 256, **kwargs
) -> FasterRCNN:
    """Faster R-CNN with an FPN on a GhostNet of ``width`` (the paper's detector uses 1.1x).

    The FPN reads the stride-4..32 maps (:data:`FASTER_RCNN_OUT_INDICES`) and adds a max-pooled level,
    which matches the five levels of torchvision's default anchors and RoI pooling.

    Args:
        num_classes: object classes *including* the background (torchvision's convention; 91 for COCO).
        width: GhostNet width multiplier.
        out_channels: FPN channels.
        **kwargs: passed to ``torchvision.models.detection.FasterRCNN`` (``min_size``, ``max_size``,
            ``rpn_post_nms_top_n_train``, ``box_detections_per_img``...).
    """
    _check_num_classes(num_classes)
    backbone = ghostnet_fpn_backbone(width, out_indices=FASTER_RCNN_OUT_INDICES, out_channels=out_channels)
    return FasterRCNN(backbone, num_classes=num_classes, **kwargs)


def retinanet_ghostnet_fpn(
    num_classes: int, width: float = 1.1, *, out_channels: int = 256, **kwargs
) -> RetinaNet:
    """RetinaNet with an FPN on a GhostNet of ``width`` (the paper's detector uses 1.1x).

    As torchvision's ``retinanet_resnet50_fpn`` (v1): pyramid levels P3-P5 from the stride-8..32 maps
    (:data:`RETINANET_OUT_INDICES`) and P6, P7 computed from P5 (``LastLevelP6P7``), matching the five
    levels of torchvision's default RetinaNet anchors.

    Args:
        num_classes: object classes including the background (torchvision's convention; 91 for COCO).
        width: GhostNet width multiplier.
        out_channels: FPN channels.
        **kwargs: passed to ``torchvision.models.detection.RetinaNet`` (``min_size``, ``max_size``,
            ``score_thresh``, ``detections_per_img``...).
    """
    _check_num_classes(num_classes)
    _check_positive_int("out_channels", out_channels, 1, "e.g. 256")  # before LastLevelP6P7 uses it
    backbone = ghostnet_fpn_backbone(width, out_indices=RETINANET_OUT_INDICES, out_channels=out_channels,
                                     extra_blocks=LastLevelP6P7(out_channels, out_channels))
    return RetinaNet(backbone, num_classes=num_classes, **kwargs)
