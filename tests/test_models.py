"""The paper's networks: exact sizes, GhostNet's official layout, and the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ghost import GhostConv2d
from ghost.complexity import count_macs, count_params
from ghost.models import create_model, default_input_size, list_models


@pytest.mark.parametrize(
    ("name", "kwargs", "params", "macs"),
    [
        ("vgg16_cifar", {}, 14_987_722, 313_463_808),
        ("resnet56_cifar", {}, 853_018, 125_485_696),
        ("ghostnet", {"width": 0.5}, 2_587_292, 42_328_152),
        ("ghostnet", {"width": 1.0}, 5_182_508, 141_150_512),
        ("ghostnet", {"width": 1.3}, 7_358_820, 227_003_256),
    ],
)
def test_exact_sizes(name: str, kwargs: dict, params: int, macs: int) -> None:
    model = create_model(name, **kwargs)
    assert count_params(model) == params
    assert count_macs(model, default_input_size(name)) == macs


def test_vgg16_cifar_layout() -> None:
    model = create_model("vgg16_cifar")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.bias is None for c in convs)
    assert [type(m) for m in model.classifier] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet56_has_parameter_free_option_a_shortcuts() -> None:
    model = create_model("resnet56_cifar", num_classes=100)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 55
    block = model.layer2[0]
    assert count_params(block.shortcut) == 0
    x = torch.randn(2, 16, 8, 8)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (2, 32, 4, 4)
    torch.testing.assert_close(shortcut[:, 8:24], x[:, :, ::2, ::2])
    assert shortcut[:, :8].abs().sum() == 0 and shortcut[:, 24:].abs().sum() == 0
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


# Paper Table 1, written out independently of the implementation: (#exp, #out, SE, stride) per bottleneck.
TABLE_1 = [
    (16, 16, 0, 1), (48, 24, 0, 2), (72, 24, 0, 1), (72, 40, 1, 2), (120, 40, 1, 1), (240, 80, 0, 2),
    (200, 80, 0, 1), (184, 80, 0, 1), (184, 80, 0, 1), (480, 112, 1, 1), (672, 112, 1, 1),
    (672, 160, 1, 2), (960, 160, 0, 1), (960, 160, 1, 1), (960, 160, 0, 1), (960, 160, 1, 1),
]


def test_ghostnet_follows_table_1_module_for_module() -> None:
    model = create_model("ghostnet")
    bottlenecks = [b for stage in model.blocks[:-1] for b in stage]
    assert len(bottlenecks) == len(TABLE_1)
    for block, (exp, out, se, stride) in zip(bottlenecks, TABLE_1, strict=True):
        assert isinstance(block.ghost1, GhostConv2d) and block.ghost1.out_channels == exp
        assert block.ghost2.out_channels == out
        assert (block.se is not None) == bool(se)
        assert block.stride == stride
        assert len(block.ghost1.primary_conv) == 3 and len(block.ghost2.primary_conv) == 2
    final = model.blocks[-1][0]
    assert (final.conv.in_channels, final.conv.out_channels, final.conv.kernel_size) == (160, 960, (1, 1))
    assert (model.conv_head.out_channels, model.classifier.in_features) == (1280, 1280)
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_ghostnet_uses_the_official_parameter_names() -> None:
    keys = list(create_model("ghostnet").state_dict())
    assert len(keys) == 512
    assert keys[:2] == ["conv_stem.weight", "bn1.weight"]
    for key in ["blocks.0.0.ghost1.primary_conv.0.weight", "blocks.0.0.ghost1.cheap_operation.1.running_var",
                "blocks.3.0.conv_dw.weight", "blocks.3.0.bn_dw.bias", "blocks.3.0.se.conv_reduce.weight",
                "blocks.3.0.se.conv_expand.bias", "blocks.3.0.shortcut.2.weight", "blocks.9.0.conv.weight",
                "blocks.9.0.bn1.running_mean", "conv_head.bias", "classifier.weight"]:
        assert key in keys
    # a state_dict saved from one instance loads strictly into another (as the released checkpoint would)
    create_model("ghostnet").load_state_dict(create_model("ghostnet").state_dict(), strict=True)


def test_registry_lists_and_builds() -> None:
    names = list_models()
    for name in ["vgg16_cifar", "resnet56_cifar", "ghostnet", "resnet50", "mobilenet_v2"]:
        assert name in names
    assert "ghost_resnet50" in list_models("ghost_res*", ghost_variants=True)
    assert default_input_size("ghost_vgg16_cifar") == (3, 32, 32)
    assert default_input_size("resnet50") == (3, 224, 224)
    model = create_model("ghost_vgg16_cifar", ratio=3, dw_size=5, num_classes=7)
    ghosts = [m for m in model.modules() if isinstance(m, GhostConv2d)]
    assert len(ghosts) == 12 and all((g.ratio, g.dw_size) == (3, 5) for g in ghosts)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert model.ghost_report.inputs == "3x32x32"


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg16_cifr'; did you mean vgg16_cifar"):
        create_model("vgg16_cifr")
    with pytest.raises(ValueError, match="ratio"):
        create_model("ghost_resnet56_cifar", ratio=0)
    with pytest.raises(ValueError, match="randomly initialised"):
        create_model("resnet18", weights="DEFAULT")
    with pytest.raises(TypeError):
        create_model("vgg16_cifar", no_such_option=1)
