"""GhostNetV2: timm's state_dicts load strictly and compute the same function, exact sizes, DFC attention,
and ghostify leaves its Ghost modules alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghost import ghostify
from ghost.complexity import count_macs, count_params
from ghost.layers import GhostModule
from ghost.models import GhostModuleV2, GhostNetV2, create_model, default_input_size, model_source

timm = pytest.importorskip("timm")

WIDTHS = {"ghostnetv2_100": 1.0, "ghostnetv2_130": 1.3, "ghostnetv2_160": 1.6}


pytestmark = pytest.mark.usefixtures("single_thread")


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that equal outputs mean equal functions."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=generator) * 0.4 - 0.2)
    return model


@pytest.mark.parametrize("name", list(WIDTHS))
def test_timm_state_dict_loads_strictly_both_ways_with_the_same_parameter_count(name: str) -> None:
    reference = timm.create_model(name, pretrained=False)
    ours = create_model(name)
    assert isinstance(ours, GhostNetV2) and model_source(name) == "ghost"
    assert sorted(ours.state_dict()) == sorted(reference.state_dict())
    ours.load_state_dict(reference.state_dict(), strict=True)
    reference.load_state_dict(ours.state_dict(), strict=True)
    assert count_params(ours) == count_params(reference)


def test_same_outputs_as_timm_in_eval_mode() -> None:
    reference = _randomise_bn(timm.create_model("ghostnetv2_100", pretrained=False)).eval()
    ours = create_model("ghostnetv2_100").eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 96, 80, generator=torch.Generator().manual_seed(1))  # odd maps at strides 16 and 32
    with torch.no_grad():
        expected, actual = reference(x), ours(x)
    assert expected.std() > 1e-3  # not a degenerate comparison
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "params", "macs"),
    [("ghostnetv2_100", 6_156_908, 167_048_288), ("ghostnetv2_130", 8_960_404, 269_322_976),
     ("ghostnetv2_160", 12_392_698, 398_607_224)],
)
def test_exact_sizes(name: str, params: int, macs: int) -> None:
    model = create_model(name)
    assert default_input_size(name) == (3, 224, 224)
    assert count_params(model) == params
    assert count_macs(model, (3, 224, 224)) == macs


def test_fvcore_counts_the_same_macs() -> None:
    pytest.importorskip("fvcore")
    model = create_model("ghostnetv2_100")
    assert count_macs(model, (3, 64, 64), backend="fvcore") == count_macs(model, (3, 64, 64)) == 17_490_368


def test_dfc_attention_sits_on_the_expansion_module_of_every_bottleneck_after_the_second() -> None:
    model = create_model("ghostnetv2", width=1.0, num_classes=10).eval()
    bottlenecks = [b for stage in model.blocks[:-1] for b in stage]
    assert len(bottlenecks) == 16
    assert [isinstance(b.ghost1, GhostModuleV2) for b in bottlenecks] == [False, False] + [True] * 14
    assert not any(isinstance(b.ghost2, GhostModuleV2) for b in bottlenecks)
    assert all(isinstance(b.ghost1, GhostModule) for b in bottlenecks)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_ghost_module_v2_gates_the_ghost_module_output_with_pooled_dfc_attention() -> None:
    torch.manual_seed(0)
    module = _randomise_bn(GhostModuleV2(8, 12)).eval()
    x = torch.randn(2, 8, 7, 9)
    with torch.no_grad():
        plain = GhostModule.forward(module, x)
        pooled = F.avg_pool2d(x, 2)  # 3 x 4
        a = module.short_conv[1](module.short_conv[0](pooled))
        h = module.short_conv[3](F.conv2d(a, module.short_conv[2].weight, padding=(0, 2), groups=12))
        v = module.short_conv[5](F.conv2d(h, module.short_conv[4].weight, padding=(2, 0), groups=12))
        gate = torch.sigmoid(v)
        rows, cols = torch.arange(7) * 3 // 7, torch.arange(9) * 4 // 9  # nearest upsampling 3x4 -> 7x9
        expected = plain * gate[:, :, rows][:, :, :, cols]
        torch.testing.assert_close(module(x), expected)
    assert [tuple(c.kernel_size) for c in module.short_conv if isinstance(c, nn.Conv2d)] == [(1, 1), (1, 5), (5, 1)]


def test_ghostify_leaves_the_ghost_modules_of_ghostnetv2_alone() -> None:
    report = ghostify(create_model("ghostnetv2_100"), input_size=(3, 64, 64), verify=False).ghost_report
    in_ghost = [r for r in report.layers if ".ghost1." in r.name or ".ghost2." in r.name]
    assert len(in_ghost) == 14 * 5 + 2 * 2 + 16 * 2  # DFC modules: primary, cheap, 3 attention convs
    assert any(".short_conv." in r.name for r in in_ghost)
    assert all(not r.replaced and r.reason.startswith("part of an existing Ghost module") for r in in_ghost)
    replaced = [r.name for r in report.layers if r.replaced]  # the host's other convs, as in GhostNet
    assert "conv_head" in replaced and "blocks.9.0.conv" in replaced and "blocks.3.0.se.conv_reduce" in replaced
