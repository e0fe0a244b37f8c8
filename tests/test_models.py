"""The paper's networks: exact sizes, GhostNet's official layout, and the registry (timm names included)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from ghost import GhostConv2d
from ghost.complexity import count_macs, count_params
from ghost.models import TIMM_PREFIX, create_model, default_input_size, init_scheme, list_models, model_source


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


def test_registry_lists_the_source_of_every_name() -> None:
    assert {model_source(n) for n in list_models(source="ghost")} == {"ghost"}
    assert "ghostnetv2_100" in list_models(source="ghost") and "resnet50" not in list_models(source="ghost")
    assert model_source("resnet50") == model_source("ghost_resnet50") == "torchvision"
    assert model_source("vgg16_cifar") == model_source("ghost_vgg16_cifar") == "ghost"
    assert set(list_models(source=("ghost", "torchvision"))) == set(list_models(source="ghost")) | set(
        list_models(source="torchvision"))
    with pytest.raises(ValueError, match="unknown source"):
        list_models(source="hub")


def test_timm_names_are_prefixed_and_never_shadow_torchvision_or_this_repo() -> None:
    pytest.importorskip("timm")
    timm_names = list_models(source="timm")
    assert timm_names and all(n.startswith(TIMM_PREFIX) for n in timm_names)
    names = list_models()
    for clash in ("resnet18", "efficientnet_b0", "ghostnet_100", "ghostnetv2_100"):  # in two zoos
        assert clash in names and TIMM_PREFIX + clash in names
        assert model_source(TIMM_PREFIX + clash) == "timm" != model_source(clash)
    assert type(create_model("resnet18")).__module__.startswith("torchvision.")
    assert type(create_model("timm/resnet18")).__module__.startswith("timm.")
    assert "ghost_timm/resnet18" in list_models("ghost_timm/resnet1*", ghost_variants=True)


def test_create_model_builds_timm_models_and_their_ghost_variants() -> None:
    pytest.importorskip("timm")
    model = create_model("timm/lcnet_050", num_classes=10).eval()
    assert type(model).__module__.startswith("timm.") and model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert default_input_size("timm/inception_v3") == default_input_size("ghost_timm/inception_v3") == (3, 299, 299)
    assert init_scheme("timm/resnet18") is None  # timm initialises in its constructors; ghostify's new layers: default
    ghost = create_model("ghost_timm/lcnet_050", ratio=3, dw_size=5, input_size=(3, 64, 64), num_classes=10)
    assert ghost.ghost_report.init == "PyTorch default" and ghost.ghost_report.inputs == "3x64x64"
    ghosts = [m for m in ghost.modules() if isinstance(m, GhostConv2d)]
    assert ghosts and all((g.ratio, g.dw_size) == (3, 5) for g in ghosts)
    assert ghost.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_timm_name_errors() -> None:
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match="unknown timm model 'timm/ghostnet_10'; did you mean .*timm/ghostnet_100"):
        create_model("timm/ghostnet_10")
    with pytest.raises(ValueError, match="unknown timm model 'ghost_timm/lcnet_05'; did you mean .*ghost_timm/lcnet_0"):
        create_model("ghost_timm/lcnet_05")
    with pytest.raises(ValueError, match="unknown model 'convnext_atto'; did you mean timm/convnext_atto"):
        create_model("convnext_atto")  # timm-only names need the prefix
    with pytest.raises(ValueError, match="names pretrained weights.*use 'timm/resnet18'"):
        create_model("timm/resnet18.a1_in1k")
    with pytest.raises(ValueError, match="randomly initialised"):
        create_model("timm/resnet18", pretrained=True)


def test_without_timm_everything_else_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` fails as if it were not installed
    assert not [n for n in list_models(ghost_variants=True) if TIMM_PREFIX in n]
    assert model_source("ghostnetv2_100") == "ghost" and default_input_size("resnet18") == (3, 224, 224)
    for call in (lambda: create_model("timm/resnet18"), lambda: default_input_size("ghost_timm/resnet18"),
                 lambda: list_models(source="timm")):
        with pytest.raises(ValueError, match="need the optional timm package: pip install timm"):
            call()
