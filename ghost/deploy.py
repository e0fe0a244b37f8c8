"""Deploy mode: fold every BatchNorm that provably follows a convolution into that convolution.

In eval mode a BatchNorm is an affine map per channel, so ``bn(conv(x))`` equals one convolution with
rescaled weights and a bias. :func:`fold_batchnorm` applies that rewrite (with PyTorch's own
:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`) where the conv's output provably reaches the BatchNorm only:

- inside every :class:`~ghost.layers.GhostConv2d` (and so :class:`~ghost.layers.GhostModule`), each branch
  ``Sequential(conv, BatchNorm2d[, act])`` becomes ``Sequential(folded conv[, act])``;
- in the host model, a conv directly followed by a BatchNorm inside a plain ``nn.Sequential``;
- in the host model, when ``torch.fx`` can trace it symbolically, a conv whose only user in the traced graph
  is a BatchNorm (e.g. GhostNet's stem and ``ConvBnAct``, or a ResNet's ``bn1(conv1(x))``), where neither
  module is called anywhere else. The BatchNorm is then replaced by ``nn.Identity``, so module names and
  the rest of the model stay as they are. A model that fx cannot trace keeps these pairs unfolded.

Only plain ``nn.Conv2d`` and ``nn.BatchNorm2d`` with running statistics are folded: subclasses with their own
forward (e.g. weight-standardised convs, timm's ``BatchNormAct2d``) are left alone, as is any module that is
registered at more than one place in the model.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ghost.layers import GhostConv2d

__all__ = ["fold_batchnorm"]


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Return an eval-mode copy of ``model`` with its conv→BatchNorm pairs folded into single convolutions.

    See the module docstring for which pairs are folded. The eval-mode outputs are those of ``model`` up to
    floating-point rounding; the folded model is meant for inference and export (TorchScript,
    ``torch.export``, ONNX), not for training, and its ``state_dict`` keys differ from the original's.

    Args:
        model: any ``nn.Module``, e.g. a GhostNet or a model converted by :func:`ghost.surgery.ghostify`.
        inplace: fold ``model`` itself (it is switched to eval mode) instead of a deep copy.

    Returns:
        The folded model, in eval mode.

    Raises:
        ValueError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"fold_batchnorm expects an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    unique = _registered_once(model)
    for module in list(model.modules()):
        if isinstance(module, GhostConv2d):
            _fold_ghost_branches(module, unique)
    for module in list(model.modules()):
        if type(module) is nn.Sequential:
            _fold_sequential(module, unique)
    _fold_traced_pairs(model, unique)
    return model


def _registered_once(model: nn.Module) -> set[int]:
    """Ids of the submodules that appear exactly once in ``model``'s module tree (i.e. are not shared)."""
    counts = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    return {key for key, count in counts.items() if count == 1}


def _foldable(conv: nn.Module, bn: nn.Module, unique: set[int]) -> bool:
    """Whether ``bn(conv(x))`` may be replaced by one folded conv."""
    return (
        type(conv) is nn.Conv2d
        and type(bn) is nn.BatchNorm2d
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.num_features == conv.out_channels
        and id(conv) in unique
        and id(bn) in unique
    )


def _fold_ghost_branches(ghost: GhostConv2d, unique: set[int]) -> None:
    """Rebuild each ``Sequential(conv, BatchNorm2d[, act])`` branch of ``ghost`` as ``Sequential(conv[, act])``."""
    for name in ("primary_conv", "cheap_operation"):
        branch = getattr(ghost, name)
        if branch is not None and len(branch) > 1 and _foldable(branch[0], branch[1], unique):
            setattr(ghost, name, nn.Sequential(fuse_conv_bn_eval(branch[0], branch[1]), *branch[2:]))


def _fold_sequential(sequential: nn.Sequential, unique: set[int]) -> None:
    """Fold every conv that a plain ``nn.Sequential`` feeds straight into a BatchNorm; the BN becomes Identity."""
    for i in range(len(sequential) - 1):
        conv, bn = sequential[i], sequential[i + 1]
        if _foldable(conv, bn, unique):
            sequential[i] = fuse_conv_bn_eval(conv, bn)
            sequential[i + 1] = nn.Identity()


class _Tracer(torch.fx.Tracer):
    """fx's default tracer, which also keeps conv and BatchNorm subclasses as leaves: their forward often has
    control flow that fx cannot trace, and a call to them is all that the folding needs to see."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) or super().is_leaf_module(m, module_qualified_name)


def _fold_traced_pairs(model: nn.Module, unique: set[int]) -> None:
    """Fold the conv→BatchNorm pairs that a ``torch.fx`` trace of ``model`` shows to be adjacent, if it traces."""
    try:
        graph = _Tracer().trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure only means these pairs cannot be proven adjacent
        return
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    attributes = [node.target for node in graph.nodes if node.op == "get_attr"]
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        conv_name, bn_name = source.target, node.target
        if calls[conv_name] != 1 or calls[bn_name] != 1:
            continue
        if any(a.startswith((f"{conv_name}.", f"{bn_name}.")) for a in attributes):
            continue  # a parameter or buffer of the pair is also read directly
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if _foldable(conv, bn, unique):
            model.set_submodule(conv_name, fuse_conv_bn_eval(conv, bn))
            model.set_submodule(bn_name, nn.Identity())
