"""GhostConv2d as a drop-in for nn.Conv2d, and the paper's building blocks."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from ghost import GhostBottleneck, GhostConv2d, GhostModule, SqueezeExcite, hard_sigmoid, make_divisible
from ghost.layers import CheapConv2d


def _random_conv_args(rng: random.Random) -> tuple[dict, dict, tuple[int, int]]:
    """A random valid nn.Conv2d argument set, a ghost config, and an input size."""
    groups = rng.choice([1, 1, 1, 2, 4])
    in_channels = groups * rng.randint(1, 6)
    out_channels = rng.randint(1, 40)
    kernel = rng.choice([1, 2, 3, 5, (1, 3), (3, 1), (2, 5)])
    stride = rng.choice([1, 1, 2, 3, (1, 2), (2, 1)])
    dilation = rng.choice([1, 1, 2, (1, 2)])
    padding = rng.choice([0, 1, 2, (0, 1), (2, 1), "valid"] + (["same"] if stride == 1 else []))
    ratio = rng.choice([1, 2, 3, 4, 5])
    while out_channels % groups or math.ceil(out_channels / ratio) % groups:  # groups divide both
        out_channels += 1
    conv = dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel, stride=stride,
                padding=padding, dilation=dilation, groups=groups, bias=rng.random() < 0.5,
                padding_mode=rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"]))
    ghost = dict(ratio=ratio, dw_size=rng.choice([1, 3, 5, 7]))
    size = (rng.randint(11, 19), rng.randint(11, 19))
    return conv, ghost, size


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
@pytest.mark.parametrize("block", range(4))
def test_output_shape_matches_conv2d_over_random_arguments(block: int) -> None:
    for seed in range(100 * block, 100 * block + 100):
        conv_args, ghost_args, (h, w) = _random_conv_args(random.Random(seed))
        x = torch.randn(2, conv_args["in_channels"], h, w)
        reference = nn.Conv2d(**conv_args)
        layer = GhostConv2d(**conv_args, **ghost_args)
        context = f"seed {seed}: {conv_args} {ghost_args}"
        assert layer(x).shape == reference(x).shape, context
        for attribute in ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode"):
            assert getattr(layer.primary, attribute) == getattr(reference, attribute), context


def test_channel_counts_and_slicing() -> None:
    layer = GhostConv2d(8, 10, 3, padding=1, ratio=3, dw_size=3)
    assert (layer.init_channels, layer.new_channels) == (4, 8)  # 12 maps computed, sliced to 10
    assert layer.cheap_operation[0].out_channels == 8
    assert layer(torch.randn(1, 8, 6, 6)).shape == (1, 10, 6, 6)


def test_exact_parameter_count() -> None:
    layer = GhostConv2d(64, 128, 3, padding=1, bias=False, ratio=2, dw_size=3)
    assert sum(p.numel() for p in layer.parameters()) == 64 * 64 * 9 + 64 * 9
    with_bias = GhostConv2d(64, 128, 3, padding=1, bias=True, ratio=4, dw_size=5)
    assert sum(p.numel() for p in with_bias.parameters()) == (64 * 32 * 9 + 32) + (96 * 25 + 96)


def test_ghost_map_j_comes_from_intrinsic_map_j_div_s_minus_1() -> None:
    layer = GhostConv2d(3, 12, 3, padding=1, ratio=4, dw_size=1, bias=False)
    cheap = layer.cheap_operation[0]
    with torch.no_grad():
        cheap.weight.copy_(torch.arange(1, 10, dtype=torch.float32).view(9, 1, 1, 1))
    x = torch.randn(2, 3, 5, 5)
    out = layer(x)
    intrinsic = layer.primary_conv(x)
    torch.testing.assert_close(out[:, :3], intrinsic)
    for j in range(9):
        torch.testing.assert_close(out[:, 3 + j], (j + 1) * intrinsic[:, j // 3])


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_channel_order_reorders_the_output_exports_and_travels_with_the_state_dict() -> None:
    torch.manual_seed(0)
    layer = GhostConv2d(4, 5, 3, padding=1, ratio=2, dw_size=3)  # 3 intrinsic + 3 ghost maps, sliced to 5
    assert layer.channel_order is None and "channel_order" not in layer.state_dict()
    x = torch.randn(2, 4, 6, 6)
    intrinsic = layer.primary_conv(x)
    maps = torch.cat([intrinsic, layer.cheap_operation(intrinsic)], 1)
    torch.testing.assert_close(layer(x), maps[:, :5])
    order = torch.tensor([4, 0, 5, 2, 1])
    layer.channel_order = order
    torch.testing.assert_close(layer(x), maps[:, order])
    torch.testing.assert_close(torch.jit.script(layer)(x), layer(x))
    torch.testing.assert_close(torch.export.export(layer, (x,)).module()(x), layer(x))
    fresh = GhostConv2d(4, 5, 3, padding=1, ratio=2, dw_size=3)
    fresh.load_state_dict(layer.state_dict())  # a module without an order takes it from the state_dict
    torch.testing.assert_close(fresh(x), layer(x))
    with pytest.raises(RuntimeError, match="channel_order"):  # strict loading: a plain state_dict lacks the order
        layer.load_state_dict(GhostConv2d(4, 5, 3, padding=1).state_dict())


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_channel_order_keeps_a_channels_last_input_channels_last() -> None:
    torch.manual_seed(0)
    layer = GhostConv2d(4, 5, 3, padding=1, ratio=2, dw_size=3)
    layer.channel_order = torch.tensor([4, 0, 5, 2, 1])
    x = torch.randn(2, 4, 6, 6)
    expected = layer(x)
    assert expected.is_contiguous()  # NCHW in, NCHW out
    layer.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for forward in (layer, torch.jit.script(layer), torch.export.export(layer, (x_cl,)).module()):
        out = forward(x_cl)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, expected)


def _training_step(layer: GhostConv2d, x: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output and input/parameter gradients of ``layer`` on ``x`` (bf16 autocast if ``bf16``)."""
    x = x.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = layer(x)
    (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = [x.grad] + [p.grad for p in layer.parameters()]
    layer.zero_grad()
    return out, grads


def _plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CheapConv2d, "forward", nn.Conv2d.forward)


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize(("ratio", "dw_size", "stride", "groups"),
                         [(s, 3, 1, 1) for s in (1, 2, 3, 4, 5)] + [(2, d, 1, 1) for d in (1, 5, 7)]
                         + [(3, 5, 2, 1), (3, 7, 1, 2), (4, 1, 2, 4)])
def test_cheap_conv_cpu_routes_compute_the_reference_outputs_and_gradients(
        ratio: int, dw_size: int, stride: int, groups: int, bf16: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    out_channels = 11 if groups == 1 else 4 * ratio  # 11: the concatenation is sliced
    layer = GhostConv2d(4, out_channels, 3, stride=stride, padding=1, groups=groups, ratio=ratio, dw_size=dw_size,
                        act_layer=nn.ReLU).to(memory_format=torch.channels_last)
    x = torch.randn(3, 4, 9, 9).contiguous(memory_format=torch.channels_last)
    fast_out, fast_grads = _training_step(layer, x, bf16)
    with monkeypatch.context() as patch:
        _plain(patch)
        ref_out, ref_grads = _training_step(layer, x, bf16)
    assert fast_out.dtype == ref_out.dtype
    tolerance = 3e-2 if bf16 else 1e-5  # relative, in norm: bf16 rounds each conv's output differently
    for fast, ref in zip([fast_out, *fast_grads], [ref_out, *ref_grads], strict=True):
        assert fast.shape == ref.shape
        assert (fast.float() - ref.float()).norm() <= tolerance * ref.float().norm() + 1e-6


@pytest.mark.parametrize(("ratio", "dw_size", "bf16", "convs", "dtype"),
                         [(2, 3, False, 1, torch.float32), (4, 3, False, 3, torch.float32),
                          (3, 3, True, 2, torch.bfloat16), (2, 5, True, 1, torch.float32),
                          (3, 7, True, 2, torch.float32)])
def test_cheap_conv_takes_the_measured_route(ratio: int, dw_size: int, bf16: bool, convs: int, dtype: torch.dtype,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A multiplier s-1 > 1 runs as s-1 depthwise convs; bf16 with d >= 5 runs them in float32."""
    cheap = GhostConv2d(4, 4 * ratio, 1, ratio=ratio, dw_size=dw_size).cheap_operation[0]
    calls: list[torch.dtype] = []
    conv2d = torch.nn.functional.conv2d
    monkeypatch.setattr(torch.nn.functional, "conv2d", lambda x, *a, **k: calls.append(x.dtype) or conv2d(x, *a, **k))
    x = torch.randn(1, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        cheap(x.bfloat16() if bf16 else x)
    assert calls == [dtype] * convs


def test_cheap_conv_is_one_plain_conv_where_a_graph_is_recorded() -> None:
    """TorchScript, torch.fx, tracing, export and NCHW inputs see ``nn.Conv2d.forward``: one depthwise conv node."""
    cheap = GhostConv2d(4, 12, 1, ratio=3, dw_size=5).cheap_operation[0]
    x = torch.randn(1, 4, 5, 5)
    assert not cheap._takes_cpu_route(x)
    assert cheap._takes_cpu_route(x.contiguous(memory_format=torch.channels_last))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    traced = torch.jit.trace(cheap, x_cl)
    assert sum(n.kind() == "aten::_convolution" for n in traced.graph.nodes()) == 1
    fx_graph = torch.fx.symbolic_trace(cheap).graph
    assert sum(n.op == "call_function" and "conv" in str(n.target) for n in fx_graph.nodes) == 1
    exported = torch.export.export(cheap, (x_cl,)).graph
    assert sum("conv" in str(n.target) for n in exported.nodes if n.op == "call_function") == 1
    for forward in (torch.jit.script(cheap), traced, torch.export.export(cheap, (x_cl,)).module()):
        torch.testing.assert_close(forward(x_cl), cheap(x_cl))


def test_ratio_one_is_a_plain_conv() -> None:
    layer = GhostConv2d(4, 6, 3, padding=1, ratio=1)
    assert layer.cheap_operation is None
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(layer(x), layer.primary(x))


@pytest.mark.parametrize("ratio", [0, -2, 1.5, "2", True, None])
def test_invalid_ratio_is_rejected(ratio: object) -> None:
    with pytest.raises(ValueError, match=r"ratio \(s\) must be an integer >= 1"):
        GhostConv2d(4, 8, 3, ratio=ratio)


@pytest.mark.parametrize("dw_size", [0, 2, 4, -1, 3.0, False])
def test_invalid_dw_size_is_rejected(dw_size: object) -> None:
    with pytest.raises(ValueError, match=r"dw_size \(d\) must be an odd integer >= 1"):
        GhostConv2d(4, 8, 3, dw_size=dw_size)


def test_unsplittable_grouped_conv_says_why() -> None:
    with pytest.raises(ValueError, match=r"groups=4.*init_channels = ceil\(6/2\) = 3"):
        GhostConv2d(8, 6, 3, groups=4, ratio=2)
    assert GhostConv2d(8, 16, 3, groups=4, ratio=2).primary.groups == 4


def test_same_padding_with_stride_fails_like_conv2d() -> None:
    with pytest.raises(ValueError, match="padding='same'"):
        GhostConv2d(4, 8, 3, stride=2, padding="same")


def test_from_conv_copies_hyperparameters_device_and_dtype() -> None:
    conv = nn.Conv2d(6, 20, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), bias=False,
                     padding_mode="reflect", dtype=torch.float64)
    layer = GhostConv2d.from_conv(conv, ratio=3, dw_size=5)
    x = torch.randn(1, 6, 17, 23, dtype=torch.float64)
    assert layer(x).shape == conv(x).shape
    assert layer.primary.weight.dtype == torch.float64
    assert layer.primary.bias is None and layer.cheap_operation[0].bias is None
    assert (layer.ratio, layer.dw_size, layer.primary.padding_mode) == (3, 5, "reflect")
    with pytest.raises(ValueError, match="expects an nn.Conv2d"):
        GhostConv2d.from_conv(nn.Linear(3, 3))


def test_norm_and_act_inside_both_branches_act_before_cheap_op() -> None:
    layer = GhostConv2d(4, 8, 3, padding=1, bias=False, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU)
    assert [type(m) for m in layer.primary_conv] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in layer.cheap_operation] == [CheapConv2d, nn.BatchNorm2d, nn.ReLU]
    seen = []
    layer.cheap_operation.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
    layer(torch.randn(2, 4, 6, 6))
    assert seen[0].min() >= 0  # the cheap op reads the activated intrinsic maps


def test_ghost_module_matches_the_official_layout() -> None:
    module = GhostModule(16, 24, kernel_size=1, ratio=2, dw_size=3, relu=False)
    assert [type(m) for m in module.primary_conv] == [nn.Conv2d, nn.BatchNorm2d]
    assert module.primary.kernel_size == (1, 1) and module.primary.bias is None
    keys = set(module.state_dict())
    assert {"primary_conv.0.weight", "primary_conv.1.running_mean", "cheap_operation.0.weight",
            "cheap_operation.1.weight"} <= keys
    assert module(torch.randn(1, 16, 8, 8)).shape == (1, 24, 8, 8)


def test_make_divisible_and_hard_sigmoid() -> None:
    assert make_divisible(16 * 0.5, 4) == 8
    assert make_divisible(72 * 0.25, 4) == 20
    assert make_divisible(10, 8) == 16  # never more than 10% below the value
    assert make_divisible(1, 4) == 4
    torch.testing.assert_close(hard_sigmoid(torch.tensor([-4.0, -3.0, 0.0, 3.0, 5.0])),
                               torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_squeeze_excite_reduction_and_gate() -> None:
    se = SqueezeExcite(72, se_ratio=0.25)
    assert se.conv_reduce.out_channels == 20  # make_divisible(18, 4)
    x = torch.randn(2, 72, 5, 5)
    with torch.no_grad():
        for p in se.parameters():
            p.zero_()
    torch.testing.assert_close(se(x), x * 0.5)  # gate = hard_sigmoid(0) = 0.5


@pytest.mark.parametrize(("in_chs", "out_chs", "stride", "se_ratio"), [(16, 16, 1, 0), (16, 24, 2, 0.25)])
def test_ghost_bottleneck(in_chs: int, out_chs: int, stride: int, se_ratio: float) -> None:
    block = GhostBottleneck(in_chs, 48, out_chs, 3, stride, se_ratio=se_ratio)
    assert block(torch.randn(2, in_chs, 16, 16)).shape == (2, out_chs, 16 // stride, 16 // stride)
    assert (block.se is not None) == (se_ratio > 0)
    assert (block.conv_dw is not None) == (block.bn_dw is not None) == (stride > 1)
    assert len(block.ghost2.primary_conv) == 2  # linear projection: no ReLU
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        GhostBottleneck(8, 8, 8, stride=3)
