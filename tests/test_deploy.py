"""Deploy mode: BatchNorm folding (ghost.deploy) and export of Ghost models (TorchScript, torch.export, ONNX)."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
import torchvision
from torch import nn

from ghost.deploy import fold_batchnorm
from ghost.layers import GhostConv2d
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
                assert type(branch[0]) is nn.Conv2d and branch[0].bias is not None
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


def test_onnx_export_matches_eager(ghost_model: nn.Module, tmp_path) -> None:
    # dynamo=True: the default and maintained exporter (the TorchScript one is deprecated since torch 2.9)
    x = torch.randn(2, 3, 64, 64)
    path = tmp_path / "model.onnx"
    torch.onnx.export(ghost_model, (x,), str(path), dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(output, ghost_model(x).numpy(), rtol=1e-4, atol=1e-5)
