"""ghostify never silently changes what a model computes: data-flow readers, aliases, fused norm-acts, existing
Ghost modules, MAC-neutral layers, dtype/device, several inputs, the ratio-1 check and initialisation parity."""

from __future__ import annotations

import itertools
import math

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ghost import GhostConv2d, ghostify
from ghost.models import create_model
from ghost.surgery import dataflow
from tests.test_surgery import _copy_host_weights


class _Net(nn.Module):
    """stem conv -> conv -> bn -> relu, with a forward chosen by the subclass."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()


class ReluPlusY(_Net):
    def forward(self, x):
        y = self.bn(self.conv(self.stem(x)))
        return self.relu(y) + y


class BnPlusY(_Net):
    def forward(self, x):
        y = self.conv(self.stem(x))
        return self.bn(y) + y


class TwoNames(_Net):
    def __init__(self) -> None:
        super().__init__()
        self.alias = self.conv

    def forward(self, x):
        return self.relu(self.bn(self.alias(self.stem(x))))


class PlainList(_Net):
    def __init__(self) -> None:
        super().__init__()
        self.held = [self.conv]

    def forward(self, x):
        return self.relu(self.bn(self.held[0](self.stem(x))))


class WeightRead(_Net):
    def __init__(self) -> None:
        super().__init__()
        self.other = nn.Conv2d(8, 16, 3, padding=1, bias=False)

    def forward(self, x):
        x = self.stem(x)
        return self.relu(self.bn(self.other(x))) + F.conv2d(x, self.conv.weight, padding=1)


class TiedWeights(_Net):
    def __init__(self) -> None:
        super().__init__()
        self.twin = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.twin.weight = self.conv.weight

    def forward(self, x):
        x = self.stem(x)
        return self.relu(self.bn(self.conv(x))) + self.twin(x)


class TwoInputs(_Net):
    def forward(self, x, bias, *, scale=1.0):
        return self.relu(self.bn(self.conv(self.stem(x)))).mean((2, 3)) * scale + bias


def _randomise_bn(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2.0)
            if m.affine:
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def _assert_host_function(original: nn.Module, size: int = 16, **options) -> nn.Module:
    """ghostify at ratio 1, load the host's weights independently of the library's own check, compare."""
    converted = ghostify(original, ratio=1, input_size=(3, size, size), **options)
    _copy_host_weights(converted, original)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(x), original(x), rtol=1e-5, atol=1e-5)
    return converted


def _record(model: nn.Module, name: str):
    return {r.name: r for r in model.ghost_report.layers}[name]


def test_plain_code_reading_the_bn_output_keeps_the_activation_in_the_host() -> None:
    converted = _assert_host_function(_randomise_bn(ReluPlusY()))
    record = _record(converted, "conv")
    assert record.replaced and record.absorbed == ("bn",) and isinstance(converted.relu, nn.ReLU)
    assert "bn's output is also read by the model's forward (ReluPlusY): activation not absorbed" in record.reason
    assert [type(m) for m in converted.conv.primary_conv] == [nn.Conv2d, nn.BatchNorm2d]


def test_plain_code_reading_the_conv_output_keeps_the_bn_in_the_host() -> None:
    converted = _assert_host_function(_randomise_bn(BnPlusY()))
    record = _record(converted, "conv")
    assert record.replaced and record.absorbed == () and isinstance(converted.bn, nn.BatchNorm2d)
    assert "conv's output is also read by the model's forward (BnPlusY): BatchNorm not absorbed" in record.reason


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        (TwoNames, "registered under several names (conv, alias)"),
        (PlainList, "its Ghost module never ran: the model calls this conv through a reference"),
        (WeightRead, "its weight is read outside its own forward (by the model's forward (WeightRead))"),
        (TiedWeights, "its parameters are tied to twin"),
    ],
)
def test_convs_whose_replacement_would_break_the_model_are_kept(cls: type, reason: str) -> None:
    original = _randomise_bn(cls())
    converted = ghostify(original, ratio=2, input_size=(3, 16, 16), replace_stem=True)
    record = _record(converted, "conv")
    assert not record.replaced and reason in record.reason
    assert type(converted.conv) is nn.Conv2d and isinstance(converted.stem, GhostConv2d)
    assert converted.ghost_report.verified
    converted(torch.randn(1, 3, 16, 16))  # runs: no "'GhostConv2d' object has no attribute 'weight'"


def test_a_conv_called_twice_becomes_one_shared_ghost_module() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.conv = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(self.stem(x)))

    converted = _assert_host_function(Twice().eval())
    assert _record(converted, "conv").reason == "called several times: BN/act not absorbed"


def test_the_ratio_one_check_keeps_what_the_trace_missed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blind the trace to plain-code readers: the check must find the broken swap by bisection and keep it."""
    monkeypatch.setattr(dataflow.Flow, "readers_outside",
                        lambda self, value, call: [r for r in self.readers.get(value, [])
                                                   if r != 0 and not self.within(r, call.index)])
    converted = ghostify(_randomise_bn(ReluPlusY()), input_size=(3, 16, 16), replace_stem=True)
    assert isinstance(converted.stem, GhostConv2d) and type(converted.conv) is nn.Conv2d
    assert "replacing it changed the model's outputs in the ratio-1 check" in _record(converted, "conv").reason
    assert converted.ghost_report.verified
    assert "the 1 Ghost modules each ran as often as their host conv" in converted.ghost_report.verification
    unchecked = ghostify(_randomise_bn(ReluPlusY()), input_size=(3, 16, 16), verify=False)
    assert unchecked.ghost_report.verification == "not checked (verify=False)" and not unchecked.ghost_report.verified
    assert _record(unchecked, "conv").absorbed == ("bn", "relu")  # what the blinded trace alone would do


def test_a_random_model_cannot_be_checked() -> None:
    calls = itertools.count()  # state outside the model, which no copy of it resets

    class Noisy(_Net):
        def forward(self, x):
            return self.relu(self.bn(self.conv(self.stem(x)))) + next(calls)

    with pytest.raises(ValueError, match="does not reproduce its own outputs.*verify=False"):
        ghostify(Noisy(), input_size=(3, 16, 16))


def test_a_model_drawing_from_the_global_generator_is_checked_under_a_fixed_seed() -> None:
    class Noisy(_Net):
        def forward(self, x):
            return self.relu(self.bn(self.conv(self.stem(x)))) + torch.rand(1)

    converted = ghostify(Noisy(), input_size=(3, 16, 16))
    assert converted.ghost_report.verified and _record(converted, "conv").absorbed == ("bn", "relu")


def test_example_inputs_with_positional_and_keyword_arguments() -> None:
    model = _randomise_bn(TwoInputs())
    args, kwargs = (torch.randn(2, 3, 16, 16), torch.randn(2, 16)), {"scale": 2.0}
    converted = ghostify(model, example_inputs=args, example_kwargs=kwargs)
    assert converted.ghost_report.inputs == "2x3x16x16, 2x16" and converted.ghost_report.verified
    assert _record(converted, "conv").absorbed == ("bn", "relu") and not _record(converted, "stem").replaced
    assert converted(*args, **kwargs).shape == (2, 16)
    with torch.inference_mode():
        frozen = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="made under torch.inference_mode\\(\\) carry no version counter"):
        ghostify(model, example_inputs=frozen)


def test_new_modules_keep_the_hosts_dtype_and_device() -> None:
    converted = ghostify(torchvision.models.resnet18().double(), input_size=(3, 32, 32))
    assert {p.dtype for p in converted.parameters()} == {torch.float64}
    assert converted.layer1[0].conv1.primary_conv[1].running_mean.dtype == torch.float64
    assert converted.eval()(torch.randn(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64
    with torch.device("meta"):
        meta = torchvision.models.resnet18()
    meta.layer1[0].bn1 = nn.BatchNorm2d(64, affine=False, device="meta")
    converted = ghostify(meta, input_size=(3, 32, 32))
    assert {t.device.type for t in [*converted.parameters(), *converted.buffers()]} == {"meta"}
    assert converted.ghost_report.verification == "structure only: meta tensors carry no values to compare"


def test_timm_fused_norm_act_is_absorbed_whole_and_exactly() -> None:
    original = _randomise_bn(timm.create_model("efficientnet_b0", pretrained=False, num_classes=10))
    converted = _assert_host_function(original, size=32)
    record = _record(converted, "blocks.1.0.conv_pw")
    assert record.absorbed == ("blocks.1.0.bn1",) and "BatchNormAct2d (fused norm-activation)" in record.reason
    norm = converted.blocks[1][0].conv_pw.primary_conv[1]
    assert type(norm).__name__ == "BatchNormAct2d" and isinstance(norm.act, nn.SiLU)
    assert isinstance(converted.blocks[1][0].bn1, nn.Identity)


def test_layers_without_a_mac_saving_are_kept() -> None:
    converted = ghostify(timm.create_model("efficientnet_b0", pretrained=False), input_size=(3, 64, 64))
    record = _record(converted, "blocks.0.0.se.conv_expand")  # 8 -> 32 channels on a 1x1 map
    assert not record.replaced and record.reason == "a Ghost module (s=2, d=3) would not reduce its MACs (256 -> 272)"
    assert all(r.macs_after < r.macs_before for r in converted.ghost_report.layers if r.replaced)


def test_existing_ghost_modules_are_never_converted_again() -> None:
    for host in (timm.create_model("ghostnet_100", pretrained=False, num_classes=10), create_model("ghostnet")):
        converted = ghostify(host, input_size=(3, 64, 64))
        records = {r.name: r for r in converted.ghost_report.layers}
        inner = [r for n, r in records.items() if ".ghost1." in n or ".ghost2." in n]
        assert inner and not any(r.replaced for r in inner)
        assert inner[0].reason.startswith("part of an existing Ghost module, blocks.0.0.ghost1 (GhostModule)")
        assert type(converted.blocks[0][0].ghost1.primary_conv[0]) is nn.Conv2d


def test_ghost_variants_are_initialised_like_their_hosts() -> None:
    torch.manual_seed(0)
    ghost = create_model("ghost_vgg16_cifar")
    assert ghost.ghost_report.init == "kaiming_normal_fan_out"
    primary = ghost.features[40].primary  # 512 -> 256 intrinsic maps, 3x3
    expected_std = math.sqrt(2 / (primary.out_channels * 9))
    assert float(primary.weight.detach().std()) == pytest.approx(expected_std, rel=0.03)
    default = ghostify(create_model("vgg16_cifar"), input_size=(3, 32, 32))
    assert default.ghost_report.init == "PyTorch default"
    assert float(default.features[40].primary.weight.detach().std()) < 0.5 * expected_std
