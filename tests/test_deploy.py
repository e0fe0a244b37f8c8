"""Deploy mode (ghost.deploy): BatchNorm folding, redundant activations, and export of Ghost models
(TorchScript, torch.export, ONNX)."""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.fx
import torchvision
from torch import nn

from ghost.deploy import fold_batchnorm, prepare_for_inference, strip_redundant_activations
from ghost.layers import CheapConv2d, GhostConv2d
from ghost.models import create_model
from ghost.models.ghostnet_arch import GhostNet
from ghost.surgery import ghostify

# (builder, input side, BatchNorm2d outside Ghost modules): every one of these host BNs provably follows its conv
FOLD_CASES = {
    "ghost_resnet56_cifar": (lambda: create_model("ghost_resnet56_cifar"), 32, 1),  # stem: fx rule only
    "ghost_vgg16_cifar": (lambda: create_model("ghost_vgg16_cifar"), 32, 1),  # stem in a Sequential
    "ghostified_resnet18": (lambda: ghostify(torchvision.models.resnet18(num_classes=10), input_size=(3, 64, 64)),
                            64, 1),
    "ghostnet_0.5": (lambda: create_model("ghostnet", width=0.5), 64, 16),  # stem, bn_dw, shortcuts, ConvBnAct
}


def _randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters, so folding them matters."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.rand(shape, generator=generator) * 2 - 1)
                module.running_var.copy_(torch.rand(shape, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(shape, generator=generator) - 0.5)
    return model.eval()


def _ghost_submodules(model: nn.Module) -> set[int]:
    return {id(m) for g in model.modules() if isinstance(g, GhostConv2d) for m in g.modules()}


def _host_batchnorms(model: nn.Module) -> int:
    inside = _ghost_submodules(model)
    return sum(type(m) is nn.BatchNorm2d and id(m) not in inside for m in model.modules())


def _mini_ghostnet() -> nn.Module:
    """A small GhostNet: stem, a stride-1 bottleneck, a stride-2 bottleneck with SE, ConvBnAct and the head."""
    cfgs = (((3, 16, 16, 0, 1),), ((5, 48, 24, 0.25, 2),))
    return _randomise_batchnorm(GhostNet(cfgs, num_classes=10, width=0.5))


@pytest.mark.parametrize("case", list(FOLD_CASES))
def test_fold_batchnorm_folds_ghost_branches_and_host_pairs_exactly(case: str) -> None:
    build, side, host_bns = FOLD_CASES[case]
    torch.manual_seed(0)
    model = _randomise_batchnorm(build()).train()
    assert _host_batchnorms(model) == host_bns
    ghosts_before = sum(isinstance(m, GhostConv2d) for m in model.modules())
    folded = fold_batchnorm(model)

    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    ghosts = [m for m in folded.modules() if isinstance(m, GhostConv2d)]
    assert len(ghosts) == ghosts_before > 0
    for ghost in ghosts:
        for branch in (ghost.primary_conv, ghost.cheap_operation):
            if branch is not None:  # Sequential(folded conv[, act]): the BN is gone, not left as an Identity
                assert type(branch[0]) in (nn.Conv2d, CheapConv2d) and branch[0].bias is not None
                assert not any(isinstance(m, (nn.BatchNorm2d, nn.Identity)) for m in branch)
        assert ghost.primary is ghost.primary_conv[0]
    assert not folded.training
    assert _host_batchnorms(model) == host_bns and model.training  # the original is untouched

    model.eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


def test_fold_batchnorm_inplace_returns_the_same_model() -> None:
    model = _mini_ghostnet().train()
    assert fold_batchnorm(model, inplace=True) is model
    assert not model.training and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


class _Untraceable(nn.Module):
    """Data-dependent control flow (fx cannot trace it), a Sequential pair, and a direct conv->BN call."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if x.sum() > 0:
            x = x * 2
        return self.bn(self.conv(x))


def test_untraceable_model_folds_only_sequential_pairs() -> None:
    model = _randomise_batchnorm(_Untraceable())
    folded = fold_batchnorm(model)
    assert [type(m) for m in folded.features] == [nn.Conv2d, nn.Identity, nn.ReLU]
    assert type(folded.bn) is nn.BatchNorm2d  # not provably adjacent without a trace
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


class _MostlyNotAdjacent(nn.Module):
    """conv->BN pairs that must not be folded: the conv output has a second user, a BN called twice,
    a BN subclass with its own forward, a conv whose weight is also read directly, and a conv shared by
    two Sequentials; and one pair that must (conv6, bn5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
        self.conv2, self.conv3, self.bn2 = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.conv4, self.bn3 = nn.Conv2d(4, 4, 1), _ScaledBatchNorm(4)
        self.conv5, self.bn4 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.conv6, self.bn5 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        shared = nn.Conv2d(4, 4, 1)
        self.left, self.right = nn.Sequential(shared, nn.BatchNorm2d(4)), nn.Sequential(shared, nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        x = self.bn1(y) + y
        x = self.bn2(self.conv2(x)) + self.bn2(self.conv3(x))
        x = self.bn3(self.conv4(x))
        x = self.bn4(self.conv5(x)) * self.conv5.weight.mean()
        x = self.bn5(self.conv6(x))
        return self.left(x) + self.right(x)


class _ScaledBatchNorm(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_only_provably_adjacent_pairs_are_folded() -> None:
    model = _randomise_batchnorm(_MostlyNotAdjacent())
    folded = fold_batchnorm(model)
    assert type(folded.bn5) is nn.Identity  # the model traces although a BN subclass cannot be traced into
    for name in ("bn1", "bn2", "bn3", "bn4", "left.1", "right.1"):
        assert isinstance(folded.get_submodule(name), nn.BatchNorm2d), name
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


def test_fold_batchnorm_rejects_a_non_module() -> None:
    with pytest.raises(ValueError, match="expects an nn.Module, got dict"):
        fold_batchnorm({"conv": nn.Conv2d(3, 3, 1)})


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("out_channels", "ratio", "sliced"), [(12, 3, False), (10, 3, True), (16, 2, False)])
def test_ghost_conv_slices_only_when_ratio_does_not_divide_out_channels(
    out_channels: int, ratio: int, sliced: bool
) -> None:
    layer = GhostConv2d(8, out_channels, 3, padding=1, ratio=ratio).eval()
    x = torch.randn(1, 8, 6, 6)
    assert layer(x).shape == nn.Conv2d(8, out_channels, 3, padding=1)(x).shape
    assert layer.needs_slice == sliced
    graph = torch.export.export(layer, (x,)).graph
    assert any(n.target == torch.ops.aten.slice.Tensor for n in graph.nodes) == sliced
    torch.testing.assert_close(torch.jit.script(layer)(x), layer(x))


@pytest.fixture(scope="module", params=["unfolded", "folded"])
def ghost_model(request: pytest.FixtureRequest) -> nn.Module:
    torch.manual_seed(0)
    model = _mini_ghostnet()
    return fold_batchnorm(model) if request.param == "folded" else model


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_matches_eager(ghost_model: nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(ghost_model)(x), ghost_model(x))


def test_torch_export_matches_eager(ghost_model: nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    program = torch.export.export(ghost_model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), ghost_model(x))


@pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning")
def test_onnx_export_matches_eager(ghost_model: nn.Module, tmp_path) -> None:
    # dynamo=True: the default and maintained exporter (the TorchScript one is deprecated since torch 2.9)
    x = torch.randn(2, 3, 64, 64)
    path = tmp_path / "model.onnx"
    torch.onnx.export(ghost_model, (x,), str(path), dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(output, ghost_model(x).numpy(), rtol=1e-4, atol=1e-5)


# --- strip_redundant_activations / prepare_for_inference --------------------------------------------------------


@pytest.fixture(scope="module")
def ghost_resnet18() -> nn.Module:
    """ghostify's paper policy on a ResNet-18: each BasicBlock's conv1 becomes a Ghost module with ReLU
    branches, while the block's shared ``relu`` is still called after it (and after the residual add)."""
    torch.manual_seed(0)
    return _randomise_batchnorm(ghostify(torchvision.models.resnet18(num_classes=10), input_size=(3, 64, 64)))


def _host_relu_calls(graph: torch.fx.Graph, root: nn.Module) -> list[torch.fx.Node]:
    """The graph's calls of ``root``'s ``nn.ReLU`` modules that are not part of a Ghost module."""
    inside = _ghost_submodules(root)
    return [
        node for node in graph.nodes
        if node.op == "call_module" and type(module := root.get_submodule(node.target)) is nn.ReLU
        and id(module) not in inside
    ]


def _host_relu_calls_of(model: nn.Module) -> list[torch.fx.Node]:
    """The host ReLU calls of ``model``'s forward, traced with fx's default tracer (through Ghost modules)."""
    return _host_relu_calls(torch.fx.Tracer().trace(model), model)


def _relu_after_ghost_blocks(model: nn.Module) -> int:
    """How many BasicBlocks call their ``relu`` straight after a Ghost ``conv1`` whose branches end in ReLU."""
    blocks = [m for m in model.modules() if isinstance(m, torchvision.models.resnet.BasicBlock)]
    return sum(
        isinstance(b.conv1, GhostConv2d) and type(b.bn1) is nn.Identity
        and all(type(branch[-1]) is nn.ReLU for branch in (b.conv1.primary_conv, b.conv1.cheap_operation))
        for b in blocks
    )


def test_strip_removes_the_relus_after_ghost_modules_only(ghost_resnet18: nn.Module) -> None:
    model = ghost_resnet18
    blocks = sum(isinstance(m, torchvision.models.resnet.BasicBlock) for m in model.modules())
    redundant = _relu_after_ghost_blocks(model)
    assert redundant == blocks > 0 and type(model.conv1) is nn.Conv2d  # the stem conv is kept, so is its relu
    before = _host_relu_calls_of(model)
    assert len(before) == 1 + 2 * blocks  # stem, and per block: after conv1, after the residual add

    stripped = strip_redundant_activations(model)
    assert isinstance(stripped, torch.fx.GraphModule) and not stripped.training
    after = _host_relu_calls(stripped.graph, stripped)
    assert len(after) == len(before) - redundant
    inputs = [node.args[0] for node in after]
    assert [n.target for n in inputs if n.op == "call_module"] == ["bn1"]  # the stem's
    assert sum(n.op == "call_function" and n.target is operator.add for n in inputs) == blocks  # post-residual
    assert list(stripped.state_dict()) == list(model.state_dict())
    assert len(_host_relu_calls_of(model)) == len(before)  # the model itself is untouched

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(stripped(x), model(x), rtol=1e-4, atol=1e-5)


class _Then(nn.Module):
    """``host(first(x))``: ``host`` is the activation call that may be redundant."""

    def __init__(self, first: nn.Module, host: nn.Module) -> None:
        super().__init__()
        self.first, self.host = first, host

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.host(self.first(x))


class _OffsetGhost(GhostConv2d):
    """A Ghost module subclass with its own forward: its outputs are no longer its branches' activations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) - 1


def _ghost(act: Callable[[], nn.Module] | None, cls: type[GhostConv2d] = GhostConv2d, **kwargs: object) -> GhostConv2d:
    return cls(4, 6, 3, padding=1, norm_layer=nn.BatchNorm2d, act_layer=act, **kwargs)


def _ghost_with_linear_cheap_branch() -> GhostConv2d:
    ghost = _ghost(nn.ReLU)
    ghost.cheap_operation[-1] = nn.Identity()
    return ghost


STRIP_CASES = {  # (first, host activation, whether the host call is redundant)
    "ghost relu -> relu(inplace)": (lambda: _ghost(nn.ReLU), lambda: nn.ReLU(inplace=True), True),
    "ghost relu, s=1 -> relu": (lambda: _ghost(nn.ReLU, ratio=1), nn.ReLU, True),
    "ghost relu6 -> relu6": (lambda: _ghost(nn.ReLU6), nn.ReLU6, True),
    "ghost hardtanh -> same hardtanh": (lambda: _ghost(lambda: nn.Hardtanh(-1, 1)), lambda: nn.Hardtanh(-1, 1), True),
    "relu -> relu": (nn.ReLU, nn.ReLU, True),
    "relu6 -> relu6": (nn.ReLU6, lambda: nn.ReLU6(inplace=True), True),
    "linear ghost -> relu": (lambda: _ghost(None), nn.ReLU, False),
    "ghost relu -> relu6": (lambda: _ghost(nn.ReLU), nn.ReLU6, False),
    "ghost hardtanh -> other hardtanh": (lambda: _ghost(lambda: nn.Hardtanh(-1, 1)), lambda: nn.Hardtanh(-0.5, 1),
                                         False),
    "ghost with a linear cheap branch -> relu": (_ghost_with_linear_cheap_branch, nn.ReLU, False),
    "ghost subclass with its own forward -> relu": (lambda: _ghost(nn.ReLU, _OffsetGhost), nn.ReLU, False),
    "relu -> relu6": (nn.ReLU, nn.ReLU6, False),
    "relu -> gelu": (nn.ReLU, nn.GELU, False),
}


@pytest.mark.parametrize("case", list(STRIP_CASES))
def test_strip_removes_an_activation_only_where_it_changes_nothing(case: str) -> None:
    first, host, redundant = STRIP_CASES[case]
    torch.manual_seed(0)
    model = _randomise_batchnorm(_Then(first(), host()))
    x = 10 * torch.randn(2, 4, 6, 6)  # beyond every bound above, so a wrongly removed call shows in the outputs
    with torch.no_grad():
        expected = model(x)
        stripped = strip_redundant_activations(model)
        assert any(n.target == "host" for n in stripped.graph.nodes) != redundant
        torch.testing.assert_close(stripped(x), expected, rtol=1e-4, atol=1e-5)


class _InPlaceReader(nn.Module):
    """A Ghost module with ReLU branches, then a ReLU whose input or output another reader modifies in place."""

    def __init__(self, reader: str) -> None:
        super().__init__()
        self.reader = reader
        self.ghost = _ghost(nn.ReLU)
        self.relu = nn.ReLU()
        self.clip = nn.Hardtanh(-1.0, 0.5, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost(x)
        z = self.relu(y)  # a copy of y, whose values equal y's
        if self.reader == "method on the input":
            y.sub_(1)
        elif self.reader == "method on the output":
            z.sub_(1)
        else:
            self.clip(y)
        return z + y


@pytest.mark.parametrize("reader", ["method on the input", "method on the output", "in-place module on the input"])
def test_strip_keeps_an_activation_whose_values_are_modified_in_place(reader: str) -> None:
    torch.manual_seed(0)
    model = _randomise_batchnorm(_InPlaceReader(reader))
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        expected = model(x)
        stripped = strip_redundant_activations(model)
        assert any(n.target == "relu" for n in stripped.graph.nodes)
        torch.testing.assert_close(stripped(x), expected)


class _UntraceableGhost(nn.Module):
    """A Ghost module with ReLU branches and a redundant ReLU, behind data-dependent control flow."""

    def __init__(self) -> None:
        super().__init__()
        self.ghost = _ghost(nn.ReLU)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = -x
        return self.relu(self.ghost(x))


def test_untraceable_model_comes_back_unchanged() -> None:
    torch.manual_seed(0)
    model = _randomise_batchnorm(_UntraceableGhost()).train()
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        expected = model.eval()(x)
        model.train()
        assert strip_redundant_activations(model) is model
        assert not model.training and type(model.relu) is nn.ReLU
        torch.testing.assert_close(model(x), expected)

        prepared = prepare_for_inference(model)
        assert type(prepared) is _UntraceableGhost and not prepared.training
        assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
        torch.testing.assert_close(prepared(x), expected, rtol=1e-4, atol=1e-5)


def _onnx_outputs_and_relus(model: nn.Module, x: torch.Tensor, path: str) -> tuple[np.ndarray, int]:
    torch.onnx.export(model, (x,), path, dynamo=True, verbose=False)
    proto = onnx.load(path)
    nodes = [*proto.graph.node, *(n for function in proto.functions for n in function.node)]
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return output, sum(n.op_type == "Relu" for n in nodes)


@pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning")
def test_prepare_for_inference_folds_strips_and_exports(ghost_resnet18: nn.Module, tmp_path) -> None:
    model = ghost_resnet18
    prepared = prepare_for_inference(model)
    assert isinstance(prepared, torch.fx.GraphModule) and not prepared.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    assert len(_host_relu_calls(prepared.graph, prepared)) == len(_host_relu_calls_of(model)) - (
        _relu_after_ghost_blocks(model)
    )

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).numpy()
        np.testing.assert_allclose(prepared(x).numpy(), expected, rtol=1e-4, atol=1e-5)
    output, relus = _onnx_outputs_and_relus(prepared, x, str(tmp_path / "prepared.onnx"))
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-5)
    _, folded_relus = _onnx_outputs_and_relus(fold_batchnorm(model), x, str(tmp_path / "folded.onnx"))
    assert relus == folded_relus - _relu_after_ghost_blocks(model)


@pytest.mark.parametrize("function", [strip_redundant_activations, prepare_for_inference])
def test_strip_and_prepare_reject_a_non_module(function: Callable[[nn.Module], nn.Module]) -> None:
    with pytest.raises(ValueError, match=f"{function.__name__} expects an nn.Module, got dict"):
        function({"relu": nn.ReLU()})
