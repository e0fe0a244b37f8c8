"""The swaps ``ghostify`` decided on, and how they are applied to a model (or to its ratio-1 twin)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ghost.layers import GhostConv2d

__all__ = ["Swap", "apply_swaps", "load_host_weights", "resized_norm"]


@dataclass(frozen=True)
class Swap:
    """One conv to replace by a Ghost module.

    Attributes:
        name: the conv's module name.
        ratio, dw_size: ``s`` and ``d``.
        norm: name of the host BatchNorm absorbed into both branches (``None``: none).
        act: name of the host activation copied into both branches (``None``: none).
        absorbed: host module names that become ``nn.Identity`` (the norm, and the activation unless shared).
        order: when the conv first ran in the traced forward pass.
    """

    name: str
    ratio: int
    dw_size: int
    norm: str | None
    act: str | None
    absorbed: tuple[str, ...]
    order: int


def resized_norm(norm: nn.BatchNorm2d, channels: int) -> nn.BatchNorm2d:
    """A fresh copy of ``norm`` for ``channels`` channels: same class (a fused norm-activation such as
    timm's ``BatchNormAct2d`` keeps its activation), eps, momentum, affine/statistics flags, device and
    dtype; reset parameters and running statistics."""
    fresh = copy.deepcopy(norm)
    fresh.num_features = channels
    for name, param in norm.named_parameters(recurse=False):
        setattr(fresh, name, nn.Parameter(param.new_empty(channels), requires_grad=param.requires_grad))
    for name, buffer in norm.named_buffers(recurse=False):
        if buffer.dim() == 1:
            fresh.register_buffer(name, buffer.new_empty(channels))
    fresh.reset_parameters()
    return fresh


def _ghost_for(model: nn.Module, swap: Swap, ratio: int, init: Callable[[nn.Module], None] | None) -> GhostConv2d:
    conv = model.get_submodule(swap.name)
    norm_layer = act_layer = None
    if swap.norm is not None:
        norm_layer = functools.partial(resized_norm, model.get_submodule(swap.norm))
    if swap.act is not None:
        act_layer = functools.partial(copy.deepcopy, model.get_submodule(swap.act))
    ghost = GhostConv2d.from_conv(conv, ratio=ratio, dw_size=swap.dw_size, norm_layer=norm_layer,
                                  act_layer=act_layer)
    if init is not None:
        init(ghost)
    return ghost


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply_swaps(
    model: nn.Module,
    swaps: Iterable[Swap],
    *,
    unit_ratio: bool = False,
    init: Callable[[nn.Module], None] | None = None,
) -> dict[str, GhostConv2d]:
    """Replace each swap's conv by its Ghost module in place, and its absorbed host modules by identities.

    With ``unit_ratio`` every Ghost module gets ``ratio=1`` (the twin used for the equivalence check).
    Returns the new Ghost modules by name.
    """
    swaps = list(swaps)
    ghosts = {s.name: _ghost_for(model, s, 1 if unit_ratio else s.ratio, init) for s in swaps}
    for swap in swaps:
        _set_module(model, swap.name, ghosts[swap.name])
        for host in swap.absorbed:
            _set_module(model, host, nn.Identity())
    return ghosts


def load_host_weights(ghosts: dict[str, GhostConv2d], host: nn.Module, swaps: Iterable[Swap]) -> None:
    """Load each swapped conv's weights (and its absorbed norm's state) from ``host`` into the primary
    branch of its ratio-1 Ghost module, which then computes what the host's conv(-norm-act) computed."""
    with torch.no_grad():
        for swap in swaps:
            ghost = ghosts[swap.name]
            ghost.primary.load_state_dict(host.get_submodule(swap.name).state_dict())
            if swap.norm is not None:
                ghost.primary_conv[1].load_state_dict(host.get_submodule(swap.norm).state_dict())
