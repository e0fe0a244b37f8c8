"""Model parts that the conversions (``ghostify``, ``prepare_for_inference``) cannot rewrite exactly, named with
their real cause: refused up front, or reported as the reason a layer is kept."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

__all__ = ["hooks_text", "norm_state_reason", "refuse_unsupported"]

_BN_PARAMETERS = {"weight", "bias"}
_BN_BUFFERS = {"running_mean", "running_var", "num_batches_tracked"}
_HOOK_DICTS = {
    "_forward_pre_hooks": "forward pre-hook", "_forward_hooks": "forward hook", "_backward_hooks": "backward hook",
    "_backward_pre_hooks": "backward pre-hook",
}


def _old_reparametrisation(module: nn.Module) -> str:
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):
            return "weight_norm"
        if isinstance(hook, SpectralNorm):
            return "spectral_norm"
    return ""


def _is_observer(module: nn.Module) -> bool:
    return isinstance(module, (torch.ao.quantization.ObserverBase, torch.ao.quantization.FakeQuantizeBase))


def refuse_unsupported(model: nn.Module, caller: str) -> None:
    """Raise a ``ValueError`` naming the cause and the fix if ``model`` holds a part that ``caller`` cannot copy,
    trace or rewrite: a TorchScript submodule, eager-mode quantization observers, or an old-style
    ``torch.nn.utils.weight_norm`` / ``spectral_norm`` (whose recomputed weight ``copy.deepcopy`` cannot copy)."""
    for name, module in model.named_modules():
        label = name or "the model itself"
        if isinstance(module, torch.jit.ScriptModule):
            kind = getattr(module, "original_name", type(module).__name__)
            raise ValueError(
                f"{label} is a TorchScript module ({kind}): {caller} cannot trace or replace "
                f"what runs inside it; apply {caller} to the eager model, then torch.jit.script the result"
            )
        if _is_observer(module):
            raise ValueError(
                f"the model is prepared for eager-mode quantization ({label} is a "
                f"{type(module).__name__} inserted by torch.ao.quantization.prepare): its observers would be "
                f"lost or miscalibrated; apply {caller} to the float model, then prepare and calibrate the result"
            )
        kind = _old_reparametrisation(module)
        if kind:
            raise ValueError(
                f"{label} uses the old-style torch.nn.utils.{kind}, whose recomputed weight cannot be copied "
                f"(copy.deepcopy fails on it) or folded; use torch.nn.utils.parametrizations.{kind} instead, or "
                f"remove it with torch.nn.utils.remove_{kind} first"
            )


def hooks_text(module: nn.Module) -> str:
    """The hooks registered on ``module`` in words (e.g. ``"1 forward hook"``), ``""`` if none."""
    counts = {label: len(getattr(module, attr, {}) or {}) for attr, label in _HOOK_DICTS.items()}
    return ", ".join(f"{n} {label}{'s' if n > 1 else ''}" for label, n in counts.items() if n)


def norm_state_reason(norm: nn.Module) -> str:
    """Why a copy of ``norm`` resized for another channel count would not compute what it computes: state
    beyond a BatchNorm's own (an extra buffer or parameter, one in a submodule such as a fused PReLU), or
    hooks; ``""`` if there is none."""
    extra = [n for n, _ in norm.named_parameters(recurse=False) if n not in _BN_PARAMETERS]
    extra += [n for n, _ in norm.named_buffers(recurse=False) if n not in _BN_BUFFERS]
    for child_name, child in norm.named_children():
        extra += [f"{child_name}.{n}" for n, _ in child.named_parameters()]
        extra += [f"{child_name}.{n}" for n, _ in child.named_buffers()]
    if extra:
        return (f"it holds state beyond a BatchNorm's ({', '.join(extra[:3])}), which a copy for the Ghost "
                f"module's channel counts cannot keep")
    hooks = [f"{name or 'it'} has {text}" for name, sub in norm.named_modules() if (text := hooks_text(sub))]
    if hooks:
        return f"{'; '.join(hooks)}, which its copies inside the Ghost module would not run"
    return ""
