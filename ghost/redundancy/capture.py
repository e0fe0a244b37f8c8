"""Capturing feature maps of named layers with forward hooks.

Works on any ``nn.Module``, including models converted by :func:`ghost.ghostify`: a Ghost layer's
intrinsic maps are the output of ``<name>.primary_conv`` and its ghost maps the output of
``<name>.cheap_operation``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import nn

from ghost.layers import GhostConv2d

__all__ = ["capture_feature_maps", "comparison_points", "conv_layers", "ghost_layers", "matching_layers"]


def _is_dense_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == 1


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the model's convolution layers, in definition order: the natural layers to analyse.

    These are the Ghost layers (:class:`ghost.GhostConv2d`) and the dense (``groups == 1``) ``nn.Conv2d``
    modules that are not part of a Ghost layer; depthwise/grouped convolutions are left out.
    """
    names: list[str] = []
    ghost_prefixes: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in ghost_prefixes):
            continue
        if isinstance(module, GhostConv2d):
            names.append(name)
            ghost_prefixes.append(name + ".")
        elif _is_dense_conv(module):
            names.append(name)
    return names


def ghost_layers(model: nn.Module) -> list[str]:
    """Names of the model's :class:`ghost.GhostConv2d` layers with ghost maps (``ratio > 1``)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, GhostConv2d) and module.cheap_operation is not None
    ]


def comparison_points(ghost: nn.Module) -> dict[str, str]:
    """For each Ghost layer of a converted model, the module whose output to compare with the baseline.

    Under ``ghostify``'s ``"paper"`` policy a Ghost layer absorbs the conv's BatchNorm (and activation),
    whose host modules become ``nn.Identity``; its own output is then post-BN(-activation) while the
    baseline conv's output is pre-BN. The outputs of the *last absorbed host module* mean the same in both
    models (the baseline's BN/activation output; the Ghost layer's output passed through identities), so
    that module is the comparison point. A layer that absorbed nothing (``"dropin"``, or a model without
    a ``ghost_report``) is its own comparison point.

    Returns:
        ``{ghost layer name: comparison module name}`` for every Ghost layer with ghost maps.
    """
    absorbed = _absorbed(ghost)
    return {name: (absorbed.get(name) or (name,))[-1] for name in ghost_layers(ghost)}


def _absorbed(ghost: nn.Module) -> dict[str, tuple[str, ...]]:
    report = getattr(ghost, "ghost_report", None)
    return {record.name: tuple(record.absorbed) for record in getattr(report, "layers", [])}


def _ends_in_activation(branch: nn.Module) -> bool:
    return not isinstance(branch[-1], (nn.Conv2d, nn.BatchNorm2d))


def matching_layers(baseline: nn.Module, ghost: nn.Module) -> list[str]:
    """Where to compare a baseline with its Ghost version, layer by layer: for every Ghost layer of
    ``ghost`` that replaced a dense ``nn.Conv2d`` of ``baseline`` (``ghostify`` keeps module names), its
    :func:`comparison point <comparison_points>`, a module name present in both models.

    Left out are Ghost layers whose output has been through an activation that the baseline applies only
    later, by a module it shares with other layers (``ghostify`` copies such an activation, e.g.
    torchvision ResNet's single ``relu``, into the Ghost layer without absorbing it): no module output of
    the baseline matches them. In torchvision's ResNet-50 that keeps ``conv3`` and the downsampling convs.

    Raises:
        ValueError: if there is no such layer (the models are not a baseline and its conversion).
    """
    base_modules = dict(baseline.named_modules())
    ghost_modules = dict(ghost.named_modules())
    absorbed = _absorbed(ghost)
    names = []
    for name, point in comparison_points(ghost).items():
        if name not in base_modules or not _is_dense_conv(base_modules[name]) or point not in base_modules:
            continue
        base_activated = any(not isinstance(base_modules[n], nn.BatchNorm2d) for n in absorbed.get(name, ()))
        if base_activated == _ends_in_activation(ghost_modules[name].primary_conv):
            names.append(point)
    if not names:
        raise ValueError(
            f"no layer of {type(ghost).__name__} is a GhostConv2d where {type(baseline).__name__} has a "
            "Conv2d of the same name with a matching output; pass a baseline and its Ghost version (e.g. "
            "vgg16_cifar and ghost_vgg16_cifar), or name the layers to compare"
        )
    return names


def _check_layers(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    if isinstance(layers, str) or not layers:
        raise ValueError(f"layers must be a non-empty list of module names, got {layers!r}")
    modules = dict(model.named_modules())
    found: dict[str, nn.Module] = {}
    for name in layers:
        if name not in modules:
            candidates = difflib.get_close_matches(name, list(modules), n=5, cutoff=0.5)
            candidates = candidates or conv_layers(model)[:5] or [n for n in modules if n][:5]
            raise ValueError(
                f"unknown layer {name!r} in {type(model).__name__}; valid names include "
                f"{', '.join(candidates)} (see model.named_modules())"
            )
        found[name] = modules[name]
    return found


@torch.no_grad()
def capture_feature_maps(
    model: nn.Module, inputs: torch.Tensor, layers: Sequence[str], *, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``inputs`` and return the output of each named layer.

    The model runs in eval mode (its previous mode is restored afterwards) without gradients, in
    chunks of ``batch_size`` images; the maps come back as detached CPU copies (so a later in-place
    activation cannot change them).

    Args:
        model: any module.
        inputs: a batch ``[N, 3, H, W]``, preprocessed as the model expects.
        layers: names from ``model.named_modules()``, e.g. ``["features.3", "features.3.primary_conv"]``.
        batch_size: images per forward pass.

    Returns:
        ``{name: tensor [N, ...]}`` in the order of ``layers``.

    Raises:
        ValueError: for an unknown name (with suggestions), a layer whose output is not a tensor, or a
            module that runs more than once per forward pass (e.g. a shared ``nn.ReLU``), whose output
            would be ambiguous.
    """
    modules = _check_layers(model, layers)
    if inputs.dim() != 4 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch [N, C, H, W], got shape {tuple(inputs.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    calls: dict[str, int] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                raise ValueError(
                    f"layer {name!r} ({type(module).__name__}) returns {type(output).__name__}, not a "
                    "tensor; pick a layer whose output is a feature map"
                )
            calls[name] += 1
            chunks[name].append(output.detach().to("cpu", copy=True))  # later in-place ops must not alter it

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), inputs.device)
        for start in range(0, inputs.shape[0], batch_size):
            calls.update(dict.fromkeys(modules, 0))
            model(inputs[start : start + batch_size].to(device))
            for name, count in calls.items():
                if count != 1:
                    raise ValueError(
                        f"layer {name!r} ran {count} times in one forward pass, so its output is ambiguous; "
                        "pick a module that runs exactly once (e.g. a conv rather than a shared activation)"
                    )
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in chunks.items()}
