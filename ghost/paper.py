"""The numbers reported by the GhostNet paper (Han et al., CVPR 2020), kept in one place.

Every table or figure that puts "paper" numbers beside measured ones reads them from here.
Models are keyed by ``(model, ratio, dw_size)`` with the names of :func:`ghost.models.create_model`;
plain (non-Ghost) baselines use ``ratio=None, dw_size=None``. The paper's "FLOPs" are
multiply-accumulates (MACs), the convention of :func:`ghost.complexity.count_macs`.

Sources: Table 2 (kernel size ``d`` of the cheap operation, Ghost-VGG-16 with ``s=2``), Table 3 (ratio
``s`` with ``d=3``) and Table 4 (comparison on CIFAR-10) of the paper; for ImageNet, the comparison of ResNet-50
with Ghost-ResNet-50 and the comparison of small networks (GhostNet widths against MobileNetV3-Large 1.0x and
0.75x; the paper's versions number these tables differently); for COCO detection, Table 9
(:data:`COCO_DETECTION`: GhostNet 1.1x as the backbone of RetinaNet and Faster R-CNN).
:data:`GHOSTNETV2_COMPLEXITY` holds the numbers of the GhostNetV2 paper (Tang et al., NeurIPS 2022).
"""

from __future__ import annotations

from typing import NamedTuple

PaperKey = tuple[str, int | None, int | None]


class PaperComplexity(NamedTuple):
    """Parameters and FLOPs (MACs) reported by the paper, in millions (``params_m=None``: not reported)."""

    params_m: float | None
    flops_m: float


def paper_key(model: str, ratio: int | None = None, dw_size: int | None = None) -> PaperKey:
    """Key of the paper dicts for a model; ratio and d are dropped for the plain baselines."""
    if not model.startswith("ghost_"):
        return (model, None, None)
    return (model, None if ratio is None else int(ratio), None if dw_size is None else int(dw_size))


#: CIFAR-10 top-1 test accuracy (%) reported by the paper.
CIFAR10_ACCURACY: dict[PaperKey, float] = {
    ("vgg16_cifar", None, None): 93.6,
    ("ghost_vgg16_cifar", 2, 1): 93.5,
    ("ghost_vgg16_cifar", 2, 3): 93.7,
    ("ghost_vgg16_cifar", 2, 5): 93.4,
    ("ghost_vgg16_cifar", 2, 7): 93.1,
    ("ghost_vgg16_cifar", 3, 3): 93.4,
    ("ghost_vgg16_cifar", 4, 3): 93.0,
    ("ghost_vgg16_cifar", 5, 3): 92.9,
    ("resnet56_cifar", None, None): 93.0,
    ("ghost_resnet56_cifar", 2, 3): 92.7,
}

#: CIFAR-10 model sizes reported by the paper (millions of parameters, millions of FLOPs = MACs).
CIFAR10_COMPLEXITY: dict[PaperKey, PaperComplexity] = {
    ("vgg16_cifar", None, None): PaperComplexity(15.0, 313.0),
    ("ghost_vgg16_cifar", 2, 1): PaperComplexity(7.6, 157.0),
    ("ghost_vgg16_cifar", 2, 3): PaperComplexity(7.7, 158.0),
    ("ghost_vgg16_cifar", 2, 5): PaperComplexity(7.7, 160.0),
    ("ghost_vgg16_cifar", 2, 7): PaperComplexity(7.7, 163.0),
    ("ghost_vgg16_cifar", 3, 3): PaperComplexity(5.2, 107.0),
    ("ghost_vgg16_cifar", 4, 3): PaperComplexity(4.0, 80.0),
    ("ghost_vgg16_cifar", 5, 3): PaperComplexity(3.3, 65.0),
    ("resnet56_cifar", None, None): PaperComplexity(0.85, 125.0),
    ("ghost_resnet56_cifar", 2, 3): PaperComplexity(0.43, 63.0),
}

#: ImageNet model sizes reported by the paper (Ghost-ResNet-50; GhostNet widths and MobileNetV3-Large, whose
#: 0.75x numbers the paper quotes from the MobileNetV3 paper), keyed like the CIFAR dicts with the registry's
#: names (``ghostnet_050`` is GhostNet 0.5x).
#: The paper prints the ResNet-50 FLOPs in billions (4.1B, 2.2B, 1.2B), i.e. to the nearest 100 M.
IMAGENET_COMPLEXITY: dict[PaperKey, PaperComplexity] = {
    ("resnet50", None, None): PaperComplexity(25.6, 4100.0),
    ("ghost_resnet50", 2, 3): PaperComplexity(13.0, 2200.0),
    ("ghost_resnet50", 4, 3): PaperComplexity(6.5, 1200.0),
    ("ghostnet_050", None, None): PaperComplexity(2.6, 42.0),
    ("ghostnet_100", None, None): PaperComplexity(5.2, 141.0),
    ("ghostnet_130", None, None): PaperComplexity(7.3, 226.0),
    ("mobilenet_v3_large", None, None): PaperComplexity(5.4, 219.0),
    ("mobilenet_v3_large_075", None, None): PaperComplexity(4.0, 155.0),
}

#: ImageNet top-1 validation accuracy (%) reported by the paper.
IMAGENET_ACCURACY: dict[PaperKey, float] = {
    ("resnet50", None, None): 75.3,
    ("ghost_resnet50", 2, 3): 75.0,
    ("ghost_resnet50", 4, 3): 74.1,
    ("ghostnet_050", None, None): 66.2,
    ("ghostnet_100", None, None): 73.9,
    ("ghostnet_130", None, None): 75.7,
    ("mobilenet_v3_large", None, None): 75.2,
    ("mobilenet_v3_large_075", None, None): 73.3,
}

#: ImageNet top-5 validation accuracy (%) reported by the paper (MobileNetV3's is not given there).
IMAGENET_TOP5: dict[PaperKey, float] = {
    ("resnet50", None, None): 92.2,
    ("ghost_resnet50", 2, 3): 92.3,
    ("ghost_resnet50", 4, 3): 91.9,
    ("ghostnet_050", None, None): 86.6,
    ("ghostnet_100", None, None): 91.4,
    ("ghostnet_130", None, None): 92.7,
}


class PaperDetection(NamedTuple):
    """A COCO detection row of the paper's Table 9: the GhostNet width of the backbone, the backbone's
    FLOPs (MACs, millions; the paper does not give the input size, 224x224 reproduces them) and the
    detector's COCO mAP (%)."""

    width: float
    backbone_flops_m: float
    map: float


#: COCO detection (Table 9), keyed by the detector builders of :mod:`ghost.models.detection`.
COCO_DETECTION: dict[str, PaperDetection] = {
    "retinanet_ghostnet_fpn": PaperDetection(1.1, 164.0, 26.6),
    "fasterrcnn_ghostnet_fpn": PaperDetection(1.1, 164.0, 26.9),
}

#: ImageNet model sizes of GhostNetV2 (Tang et al., "GhostNetV2: Enhance Cheap Operation with Long-Range
#: Attention", NeurIPS 2022, arXiv:2211.12905, ImageNet comparison table; 167 M FLOPs for 1.0x is also in its
#: abstract), keyed by the registry's names, FLOPs = MACs at 224x224.
GHOSTNETV2_COMPLEXITY: dict[PaperKey, PaperComplexity] = {
    ("ghostnetv2_100", None, None): PaperComplexity(6.1, 167.0),
    ("ghostnetv2_130", None, None): PaperComplexity(8.9, 269.0),
    ("ghostnetv2_160", None, None): PaperComplexity(12.3, 399.0),
}
