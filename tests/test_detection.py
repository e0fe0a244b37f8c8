"""GhostNet as a detection backbone: forward_features, multi-scale feature maps, torchvision's detectors."""

from __future__ import annotations

import pytest
import torch

from ghost.layers import make_divisible
from ghost.models import GhostNetFeatures, create_model, ghostnet, ghostnetv2
from ghost.models.detection import (
    GhostNetFPN,
    fasterrcnn_ghostnet_fpn,
    ghostnet_fpn_backbone,
    retinanet_ghostnet_fpn,
)

# Paper Table 1, written out independently of the implementation: the channels of the last layer at each
# stride (the 16-channel bottleneck at 112x112, the last 24-, 40- and 112-channel bottlenecks, the 960-channel
# 1x1 conv) for width 1.0.
STAGE_END_CHANNELS = (16, 24, 40, 112, 960)
STRIDES = (2, 4, 8, 16, 32)


@pytest.mark.parametrize(("builder", "width"), [(ghostnet, 0.5), (ghostnet, 1.0), (ghostnetv2, 0.5)])
def test_feature_maps_have_the_advertised_channels_and_strides(builder, width: float) -> None:
    model = builder(width).eval()
    channels = [make_divisible(c * width, 4) for c in STAGE_END_CHANNELS]
    assert [info["num_chs"] for info in model.feature_info] == channels
    assert [info["reduction"] for info in model.feature_info] == list(STRIDES)
    x = torch.randn(1, 3, 70, 50)  # not multiples of 32: sizes round up
    with torch.no_grad():
        maps = GhostNetFeatures(model)(x)
    expected = [(1, c, -(-70 // s), -(-50 // s)) for c, s in zip(channels, STRIDES, strict=True)]
    assert [tuple(m.shape) for m in maps] == expected


def test_feature_maps_are_the_outputs_of_the_modules_feature_info_names() -> None:
    model = ghostnet(0.5).eval()
    captured = {}
    for info in model.feature_info:
        module = model.get_submodule(info["module"])
        module.register_forward_hook(lambda _m, _i, out, name=info["module"]: captured.setdefault(name, out))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model(x)
        maps = GhostNetFeatures(model, out_indices=(1, 3))(x)
    assert len(maps) == 2
    torch.testing.assert_close(maps[0], captured["blocks.2"], rtol=0, atol=0)
    torch.testing.assert_close(maps[1], captured["blocks.6"], rtol=0, atol=0)


def test_forward_features_is_the_classifiers_computation_before_pooling() -> None:
    model = ghostnet(0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 480, 1, 1)
        torch.testing.assert_close(features, GhostNetFeatures(model, out_indices=(4,))(x)[0], rtol=0, atol=0)
        # the classifier's head written out on the features reproduces model(x) exactly
        pre_logits = torch.flatten(model.act2(model.conv_head(model.global_pool(features))), 1)
        torch.testing.assert_close(model.forward_head(features, pre_logits=True), pre_logits, rtol=0, atol=0)
        torch.testing.assert_close(model.classifier(pre_logits), model(x), rtol=0, atol=0)


def test_features_share_the_classifiers_parameters_and_names() -> None:
    model = ghostnet(0.5)
    keys = set(model.state_dict())
    features = GhostNetFeatures(model, out_indices=(0, 2))
    assert len(model.state_dict()) == 512 and set(model.state_dict()) == keys  # the classifier is unchanged
    assert set(features.state_dict()) < keys  # a classifier checkpoint's names, minus the head and later stages
    assert len(features.blocks) == 5 and features.blocks[4] is model.blocks[4]
    assert features.conv_stem.weight is model.conv_stem.weight
    assert [info["reduction"] for info in features.feature_info] == [2, 8]


@pytest.mark.parametrize("out_indices", [(3, 1), (1, 1), (), (5,), (-1,), 2, (1.0,)])
def test_bad_out_indices_are_rejected(out_indices) -> None:
    with pytest.raises(ValueError, match=r"out_indices must be distinct increasing integers in 0\.\.4"):
        GhostNetFeatures(ghostnet(0.5), out_indices)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="model must be a GhostNet"):
        GhostNetFeatures(create_model("resnet18"))
    with pytest.raises(ValueError, match="out_channels must be an integer >= 1"):
        ghostnet_fpn_backbone(0.5, out_channels=0)
    with pytest.raises(ValueError, match="out_channels must be an integer >= 1"):
        retinanet_ghostnet_fpn(3, width=0.5, out_channels=0)
    with pytest.raises(ValueError, match="extra_blocks must be"):
        ghostnet_fpn_backbone(0.5, extra_blocks=torch.nn.Identity())
    for build in (fasterrcnn_ghostnet_fpn, retinanet_ghostnet_fpn):
        with pytest.raises(ValueError, match="num_classes must be an integer >= 2.*background"):
            build(1, width=0.5)
    with pytest.raises(ValueError, match="width must be > 0"):
        fasterrcnn_ghostnet_fpn(3, width=0)


def test_fpn_levels_of_both_detectors() -> None:
    x = torch.randn(1, 3, 64, 64)
    faster = fasterrcnn_ghostnet_fpn(91)  # defaults: the paper's 1.1x, 256 channels
    retina = retinanet_ghostnet_fpn(91)
    assert faster.backbone.out_channels == retina.backbone.out_channels == 256
    widths = [make_divisible(c * 1.1, 4) for c in STAGE_END_CHANNELS]
    assert [info["num_chs"] for info in faster.backbone.body.feature_info] == widths[1:]
    assert [info["num_chs"] for info in retina.backbone.body.feature_info] == widths[2:]
    with torch.no_grad():
        levels = {name: model.backbone.eval()(x) for name, model in (("faster", faster), ("retina", retina))}
    assert {k: tuple(v.shape) for k, v in levels["faster"].items()} == {
        "0": (1, 256, 16, 16), "1": (1, 256, 8, 8), "2": (1, 256, 4, 4), "3": (1, 256, 2, 2), "pool": (1, 256, 1, 1)}
    assert {k: tuple(v.shape) for k, v in levels["retina"].items()} == {
        "0": (1, 256, 8, 8), "1": (1, 256, 4, 4), "2": (1, 256, 2, 2), "p6": (1, 256, 1, 1), "p7": (1, 256, 1, 1)}


def _random_targets(generator: torch.Generator, size: int, num_classes: int) -> list[dict[str, torch.Tensor]]:
    targets = []
    for count in (2, 3):
        corner = torch.rand(count, 2, generator=generator) * size / 2
        extent = (0.2 + 0.3 * torch.rand(count, 2, generator=generator)) * size
        boxes = torch.cat([corner, (corner + extent).clamp(max=size)], dim=1)
        labels = torch.randint(1, num_classes, (count,), generator=generator)
        targets.append({"boxes": boxes, "labels": labels})
    return targets


# Small settings so that a training step runs in seconds on a CPU: tiny images, few proposals and RoIs.
SIZE = 64
DETECTORS = {
    "faster_rcnn": (fasterrcnn_ghostnet_fpn, {
        "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100, "rpn_pre_nms_top_n_test": 200,
        "rpn_post_nms_top_n_test": 50, "box_batch_size_per_image": 32, "box_score_thresh": 0.0,
        "box_detections_per_img": 50}),
    "retinanet": (retinanet_ghostnet_fpn, {"score_thresh": 0.0, "detections_per_img": 50}),
}


@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_detector_trains_and_detects_on_a_ghostnet_backbone(detector: str) -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    build, options = DETECTORS[detector]
    num_classes = 4
    model = build(num_classes, width=0.5, out_channels=64, min_size=SIZE, max_size=SIZE, **options)
    assert isinstance(model.backbone, GhostNetFPN)
    images = [torch.rand(3, SIZE, SIZE, generator=generator) for _ in range(2)]
    targets = _random_targets(generator, SIZE, num_classes)

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    stem_before = model.backbone.body.conv_stem.weight.detach().clone()
    losses = model(images, targets)
    assert set(losses) == ({"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
                           if detector == "faster_rcnn" else {"classification", "bbox_regression"})
    assert all(torch.isfinite(loss) and loss.ndim == 0 for loss in losses.values())
    sum(losses.values()).backward()
    backbone = list(model.backbone.body.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in backbone)
    assert model.backbone.body.conv_stem.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(model.backbone.body.conv_stem.weight, stem_before)

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for found in detections:
        count = found["boxes"].shape[0]
        assert 0 < count <= 50
        assert found["boxes"].shape == (count, 4) and found["scores"].shape == found["labels"].shape == (count,)
        assert (found["boxes"] >= 0).all() and (found["boxes"] <= SIZE).all()
        assert (found["labels"] >= 0).all() and (found["labels"] < num_classes).all()
        assert ((found["scores"] >= 0) & (found["scores"] <= 1)).all()
