"""ghostify: model surgery on the paper's networks and torchvision's zoo."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ghost import GhostConv2d, ghostify
from ghost.complexity import count_macs, count_params
from ghost.layers import CheapConv2d
from ghost.models import create_model


def _ghosts(model: nn.Module) -> dict[str, GhostConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, GhostConv2d)}


def _copy_host_weights(converted: nn.Module, original: nn.Module) -> None:
    """Load each replaced conv's weights (and its absorbed BN) into a ratio-1 Ghost module's primary branch."""
    modules = dict(original.named_modules())
    with torch.no_grad():
        for record in converted.ghost_report.layers:
            if not record.replaced:
                continue
            ghost = converted.get_submodule(record.name)
            ghost.primary.load_state_dict(modules[record.name].state_dict())
            bns = [a for a in record.absorbed if isinstance(modules[a], nn.BatchNorm2d)]
            if bns:
                ghost.primary_conv[1].load_state_dict(modules[bns[0]].state_dict())


@pytest.mark.parametrize(
    ("name", "size"),
    [("vgg16_cifar", 32), ("resnet56_cifar", 32), ("resnet18", 64), ("resnet50", 64), ("mobilenet_v2", 64),
     ("efficientnet_b0", 64), ("densenet121", 64), ("alexnet", 64), ("mobilenet_v3_small", 64)],
)
def test_paper_policy_with_ratio_one_computes_the_host_function(name: str, size: int) -> None:
    """With s=1 a Ghost module is its primary branch: loading the host's conv and BN into it must give the
    host's outputs exactly. This fails if a BN or activation is stacked twice, dropped, or moved (e.g. a
    ReLU placed before a residual addition)."""
    torch.manual_seed(0)
    original = create_model(name).eval()
    for m in original.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    converted = ghostify(original, ratio=1, input_size=(3, size, size))
    _copy_host_weights(converted, original)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(x), original(x), rtol=1e-4, atol=1e-5)


def test_input_model_is_untouched_and_copy_is_converted() -> None:
    model = create_model("resnet56_cifar")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    converted = ghostify(model)
    assert not _ghosts(model) and len(_ghosts(converted)) == 54
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert ghostify(model, inplace=True) is model and len(_ghosts(model)) == 54


def test_paper_policy_absorbs_bn_and_relu_but_never_adds_a_relu_before_the_add() -> None:
    model = create_model("ghost_resnet56_cifar", ratio=2, dw_size=3)
    block = model.layer1[0]
    assert isinstance(block.bn1, nn.Identity) and isinstance(block.relu1, nn.Identity)
    assert isinstance(block.bn2, nn.Identity)
    assert isinstance(block.relu2, nn.ReLU)  # after the residual addition: stays in the host
    assert [type(m) for m in block.conv1.primary_conv] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in block.conv2.primary_conv] == [nn.Conv2d, nn.BatchNorm2d]
    assert [type(m) for m in block.conv2.cheap_operation] == [CheapConv2d, nn.BatchNorm2d]
    # the stem conv is kept by default, with its BN and ReLU
    assert type(model.conv1) is nn.Conv2d and isinstance(model.bn1, nn.BatchNorm2d)
    record = {r.name: r for r in model.ghost_report.layers}["layer1.0.conv1"]
    assert record.absorbed == ("layer1.0.bn1", "layer1.0.relu1")


def test_torchvision_shared_relu_and_inplace_residual_add() -> None:
    model = ghostify(create_model("resnet18"), input_size=(3, 64, 64))
    block = model.layer1[0]
    assert isinstance(block.bn1, nn.Identity) and isinstance(block.bn2, nn.Identity)
    assert isinstance(block.relu, nn.ReLU)  # shared by two call sites: stays
    assert [type(m) for m in block.conv1.primary_conv] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in block.conv2.primary_conv] == [nn.Conv2d, nn.BatchNorm2d]  # `out += identity` next
    assert isinstance(model.layer2[0].downsample[1], nn.Identity)  # the shortcut conv's BN is absorbed
    notes = {r.name: r.reason for r in model.ghost_report.layers}
    assert "layer1.0.relu is shared" in notes["layer1.0.conv1"]


def test_dropin_policy_keeps_host_bn_and_act() -> None:
    model = ghostify(create_model("vgg16_cifar"), policy="dropin", input_size=(3, 32, 32))
    assert isinstance(model.features[4], nn.BatchNorm2d) and isinstance(model.features[5], nn.ReLU)
    assert all(len(g.primary_conv) == 1 and len(g.cheap_operation) == 1 for g in _ghosts(model).values())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_stem_depthwise_and_grouped_convs() -> None:
    model = ghostify(create_model("mobilenet_v2"), input_size=(3, 64, 64))
    reasons = {r.name: r.reason for r in model.ghost_report.layers if not r.replaced}
    assert reasons["features.0.0"].startswith("stem conv reading the image")
    assert reasons["features.1.conv.0.0"] == "depthwise conv: already cheap"
    stem = ghostify(create_model("mobilenet_v2"), replace_stem=True, input_size=(3, 64, 64))
    assert isinstance(stem.features[0][0], GhostConv2d)

    grouped = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3, groups=2), nn.Conv2d(16, 12, 3, groups=4))
    with pytest.raises(ValueError, match="replaced no conv.*1: grouped conv .*pass convert_grouped=True"):
        ghostify(grouped, input_size=(3, 16, 16))
    converted = ghostify(grouped, input_size=(3, 16, 16), convert_grouped=True)
    records = converted.ghost_report.layers
    assert records[1].replaced and converted[1].primary.groups == 2
    assert not records[2].replaced and "groups=4 does not divide the 6 intrinsic maps" in records[2].reason


def test_include_exclude_and_overrides() -> None:
    model = ghostify(create_model("resnet56_cifar"), input_size=(3, 32, 32), include=["layer2.*", "layer3.*"],
                     exclude=["layer3.8.*"], overrides={"layer3.*": {"ratio": 4}, "layer3.0.*": {"dw_size": 5}})
    ghosts = _ghosts(model)
    assert not any(n.startswith("layer1") for n in ghosts)
    assert "layer3.8.conv1" not in ghosts and "layer3.7.conv2" in ghosts
    assert ghosts["layer2.0.conv1"].ratio == 2
    assert (ghosts["layer3.1.conv1"].ratio, ghosts["layer3.1.conv1"].dw_size) == (4, 3)
    assert (ghosts["layer3.0.conv2"].ratio, ghosts["layer3.0.conv2"].dw_size) == (4, 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"include": ["layer9.*"]}, "include pattern 'layer9.*' matches no nn.Conv2d"),
        ({"exclude": ["nope"]}, "exclude pattern 'nope' matches no nn.Conv2d"),
        ({"overrides": {"fc*": {"ratio": 3}}}, "overrides pattern 'fc\\*' matches no nn.Conv2d"),
        ({"overrides": {"layer1.*": {"kernel": 3}}}, "unknown keys \\['kernel'\\]"),
        ({"policy": "stacked"}, "policy must be one of"),
        ({"ratio": 2.5}, "ratio \\(s\\) must be an integer"),
        ({"dw_size": 4}, "dw_size \\(d\\) must be an odd integer"),
        ({"input_size": (4, 32, 32)}, "example input \\(4x32x32\\) failed.*pass input_size"),
        ({"input_size": (3, 32, 32), "example_inputs": torch.zeros(1, 3, 32, 32)}, "either input_size or example"),
        ({"example_inputs": "image"}, "example_inputs must be a tensor or a tuple"),
        ({"input_size": (32, 32)}, "input_size must be \\(channels, height, width\\)"),
    ],
)
def test_bad_options_get_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ghostify(create_model("resnet56_cifar"), **kwargs)


def test_no_conv_and_unknown_option() -> None:
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        ghostify(nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(TypeError):
        ghostify(create_model("resnet56_cifar"), kernel=3)


def test_state_dict_round_trip() -> None:
    options = dict(ratio=3, dw_size=5, overrides={"layer3.*": {"ratio": 2}}, input_size=(3, 32, 32))
    trained = ghostify(create_model("resnet56_cifar"), **options)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01 * torch.randn_like(p))
    fresh = ghostify(create_model("resnet56_cifar"), **options)
    fresh.load_state_dict(trained.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fresh.eval()(x), trained.eval()(x))


def test_report_totals_agree_with_the_counters(tmp_path) -> None:
    original = create_model("vgg16_cifar")
    converted = ghostify(original, input_size=(3, 32, 32))
    report = converted.ghost_report
    assert report.params_before == count_params(original) == 14_987_722
    assert report.params_after == count_params(converted)
    assert report.macs_before == count_macs(original, (3, 32, 32))
    assert report.macs_after == count_macs(converted, (3, 32, 32))
    assert report.speedup == pytest.approx(report.macs_before / report.macs_after)
    replaced = [r for r in report.layers if r.replaced]
    assert len(replaced) == 12 and sum(r.params_before - r.params_after for r in replaced) == (
        report.params_before - report.params_after)
    text = str(report)
    assert "features.3" in text and "12/13 convs replaced" in text and "theoretical speed-up" in text
    report.to_csv(tmp_path / "report.csv")
    assert (tmp_path / "report.csv").read_text().count("\n") == 14


ZOO = ["alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "googlenet", "mnasnet0_5", "mobilenet_v2",
       "mobilenet_v3_small", "regnet_y_400mf", "resnet18", "resnext50_32x4d", "shufflenet_v2_x0_5",
       "squeezenet1_1", "vgg11_bn", "wide_resnet50_2"]


@pytest.mark.parametrize(
    ("name", "ratio", "dw_size"),
    [(name, 2, 3) for name in ZOO] + [(name, 4, 5) for name in ("resnet18", "mobilenet_v3_small", "googlenet")]
    + [(name, 3, 1) for name in ("densenet121", "shufflenet_v2_x0_5", "efficientnet_b0")],
)
def test_torchvision_zoo_converts(name: str, ratio: int, dw_size: int) -> None:
    original = create_model(name, num_classes=10)
    converted = ghostify(original, ratio=ratio, dw_size=dw_size, input_size=(3, 64, 64))
    assert count_params(converted) < count_params(original)
    assert all((g.ratio, g.dw_size) == (ratio, dw_size) for g in _ghosts(converted).values())
    x = torch.randn(2, 3, 64, 64)
    outputs = converted.train()(x)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)  # googlenet: logits and aux logits
    assert outputs[0].shape == (2, 10)
    sum(o.sum() for o in outputs).backward()
    grads = [p.grad for g in _ghosts(converted).values() for p in g.parameters()]
    assert grads and all(g is not None for g in grads)
    converted.eval()
    with torch.no_grad():
        assert converted(x).shape == original.eval()(x).shape
