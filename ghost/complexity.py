"""Parameter and FLOP counting in the paper's convention.

The GhostNet paper reports "FLOPs" as multiply-accumulates (MACs) of convolution and fully-connected layers
at its input size (224x224 for ImageNet, 32x32 for CIFAR). BatchNorm, activations, pooling, additions and
the squeeze-excite multiplication are *not* counted; ghost channels that a Ghost module computes and then
slices off *are* counted (they are computed). Two independent counters implement this convention:

- ``backend="analytic"``: forward hooks on ``nn.Conv2d`` and ``nn.Linear`` applying the closed-form count;
- ``backend="fvcore"``: fvcore's JIT-trace counter restricted to convolution and matmul-like operators
  (fvcore alone also counts BatchNorm, upsampling and pooling, which is one reason published FLOP numbers
  disagree).

They agree exactly on every model in this repo (see ``tests/test_complexity.py``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["conv2d_macs", "count_macs", "count_params", "example_input", "linear_macs", "module_macs"]

# fvcore's operator groups (keys of ``by_operator()``) that are multiply-accumulates of conv/linear layers.
_FVCORE_MAC_OPS = ("conv", "addmm", "linear", "matmul", "bmm")


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BatchNorm affine parameters included, buffers excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def conv2d_macs(conv: nn.Conv2d, output_shape: Sequence[int]) -> int:
    """MACs of one call of ``conv`` producing ``output_shape`` (``[N, C, H, W]`` or ``[C, H, W]``), per image.

    ``out_h * out_w * out_channels * (in_channels / groups) * kernel_h * kernel_w``; bias adds are not counted.
    """
    out_h, out_w = output_shape[-2], output_shape[-1]
    kernel_h, kernel_w = conv.kernel_size
    return out_h * out_w * conv.out_channels * (conv.in_channels // conv.groups) * kernel_h * kernel_w


def linear_macs(linear: nn.Linear, output_shape: Sequence[int]) -> int:
    """MACs of one call of ``linear``, per sample (extra leading dims such as tokens are multiplied in)."""
    rows = 1
    for size in output_shape[1:-1]:
        rows *= size
    return rows * linear.in_features * linear.out_features


def module_macs(module: nn.Module, output_shape: Sequence[int]) -> int:
    """MACs of one call of ``module`` per sample: conv and linear layers count, every other module is 0."""
    if isinstance(module, nn.Conv2d):
        return conv2d_macs(module, output_shape)
    if isinstance(module, nn.Linear):
        return linear_macs(module, output_shape)
    return 0


def example_input(model: nn.Module, input_size: Sequence[int]) -> torch.Tensor:
    """A zero batch of one image of ``input_size`` = ``(C, H, W)`` on the model's device and dtype."""
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (channels, height, width), got {tuple(input_size)!r}")
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else None
    dtype = reference.dtype if reference is not None else None
    return torch.zeros(1, *input_size, device=device, dtype=dtype)


def _analytic_macs(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += module_macs(module, output.shape)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def _fvcore_macs(model: nn.Module, x: torch.Tensor) -> int:
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # fvcore's import and its JIT tracer emit deprecation warnings under recent torch versions.
        warnings.simplefilter("ignore")
        try:
            from fvcore.nn import FlopCountAnalysis
        except ImportError as error:
            raise ValueError("backend='fvcore' needs fvcore: pip install fvcore (or use backend='analytic')") from error
        analysis = FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        by_operator = analysis.by_operator()
        return int(sum(by_operator.get(key, 0) for key in _FVCORE_MAC_OPS))


def count_macs(
    model: nn.Module,
    input_size: Sequence[int] = (3, 224, 224),
    *,
    backend: str = "analytic",
) -> int:
    """Multiply-accumulates of conv and linear layers for one image of ``input_size`` (paper convention).

    The model runs once in eval mode on a zero input (its training flags are restored afterwards).

    Args:
        model: any ``nn.Module`` taking one image tensor.
        input_size: ``(channels, height, width)``.
        backend: ``"analytic"`` (hooks, no extra dependency) or ``"fvcore"``.
    """
    if backend not in ("analytic", "fvcore"):
        raise ValueError(f"backend must be 'analytic' or 'fvcore', got {backend!r}")
    x = example_input(model, input_size)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return _analytic_macs(model, x) if backend == "analytic" else _fvcore_macs(model, x)
    finally:
        for module, mode in modes.items():
            module.training = mode
