"""Ghost layers: the Ghost module as a drop-in for ``nn.Conv2d`` and the paper's building blocks.

Reference: Han et al., "GhostNet: More Features from Cheap Operations", CVPR 2020 (arXiv:1911.11907),
Section 3.1 (Ghost module) and 3.2 (Ghost bottleneck).

A Ghost module replaces one convolution with ``n`` output channels by

1. a *primary* convolution with the original kernel, stride, padding and dilation that makes
   ``m = ceil(n / s)`` intrinsic feature maps, and
2. a *cheap* stride-1 ``d x d`` depthwise convolution that makes ``(s - 1) * m`` ghost maps from them
   (ghost map ``j`` is computed from intrinsic map ``j // (s - 1)``),

then concatenates both and keeps the first ``n`` channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CheapConv2d",
    "GhostBottleneck",
    "GhostConv2d",
    "GhostModule",
    "SqueezeExcite",
    "check_dw_size",
    "check_ratio",
    "hard_sigmoid",
    "make_divisible",
]

ModuleFactory = Callable[[int], nn.Module]
"""A callable that builds a module for a given channel count, e.g. ``nn.BatchNorm2d``."""


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going below 90% of it.

    This is the channel-rounding rule of MobileNet/GhostNet (``_make_divisible`` in the official code).

    Args:
        value: the channel count to round.
        divisor: the multiple to round to.
        min_value: lower bound of the result (defaults to ``divisor``).
    """
    if divisor < 1:
        raise ValueError(f"divisor must be a positive integer, got {divisor!r}")
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """The gate of GhostNet's squeeze-excite: ``relu6(x + 3) / 6``."""
    return F.relu6(x + 3.0) / 6.0


def check_ratio(ratio: object) -> int:
    """Return ``ratio`` if it is a valid ``s`` (an integer >= 1), else raise a ``ValueError`` saying so."""
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        raise ValueError(f"ratio (s) must be an integer >= 1 (e.g. 2, 3, 4, 5), got {ratio!r}")
    return ratio


def check_dw_size(dw_size: object) -> int:
    """Return ``dw_size`` if it is a valid ``d`` (an odd integer >= 1), else raise a ``ValueError`` saying so."""
    if isinstance(dw_size, bool) or not isinstance(dw_size, int) or dw_size < 1 or dw_size % 2 == 0:
        raise ValueError(f"dw_size (d) must be an odd integer >= 1 (e.g. 1, 3, 5, 7), got {dw_size!r}")
    return dw_size


def _select_channels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[:, index]`` for an NCHW tensor, in ``x``'s memory format.

    ``index_select`` on dim 1 returns a contiguous (NCHW) tensor even from a channels_last input, and every
    later layer of a channels_last model then converts back (this made a weight-transferred Ghost-VGG-16 train
    1.8x slower per step in bf16 + channels_last on a CPU); any other ``x`` is gathered along the last dim of
    its NHWC view, which keeps a channels_last ``x`` channels_last (``gather``: ``index_select`` on the last dim
    is several times slower).
    """
    if x.is_contiguous():
        return x.index_select(1, index)
    nhwc = x.permute(0, 2, 3, 1)
    return nhwc.gather(3, index.expand(nhwc.shape[0], nhwc.shape[1], nhwc.shape[2], -1)).permute(0, 3, 1, 2)


def _interleave_depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          multiplier: int, padding: tuple[int, int]) -> torch.Tensor:
    """A depthwise conv with channel multiplier ``multiplier`` as ``multiplier`` convs of multiplier 1.

    Output channel ``c * multiplier + j`` is input channel ``c`` convolved with filter ``j`` of that channel,
    as in ``F.conv2d(x, weight, bias, padding=padding, groups=C)``; the outputs are interleaved along the
    channels of their NHWC views, so a channels_last ``x`` gives a channels_last result.
    """
    channels, k = x.shape[1], weight.shape[-1]
    if multiplier == 1:
        return F.conv2d(x, weight, bias, padding=padding, groups=channels)
    filters = weight.view(channels, multiplier, 1, k, k)
    biases = None if bias is None else bias.view(channels, multiplier)
    maps = [
        F.conv2d(x, filters[:, j], None if biases is None else biases[:, j], padding=padding, groups=channels)
        for j in range(multiplier)
    ]
    nhwc = torch.stack([m.permute(0, 2, 3, 1) for m in maps], dim=-1)
    return nhwc.reshape(*nhwc.shape[:3], channels * multiplier).permute(0, 3, 1, 2)


class CheapConv2d(nn.Conv2d):
    """The cheap operation of a Ghost module: a stride-1 depthwise ``nn.Conv2d`` with faster CPU routes.

    Same parameters, ``state_dict`` keys and function as the ``nn.Conv2d`` it subclasses. On a CPU, in eager
    mode, a channels_last input takes the route that the oneDNN kernels of PyTorch 2.11-2.13 run fastest,
    measured forward + backward on a Sapphire Rapids Xeon (``results/train_throughput_cpu.md``): a channel
    multiplier ``(s - 1) > 1`` runs as ``s - 1`` convs of multiplier 1 (the multiplier kernel was 1.3-2x
    slower), and a bf16 conv with ``d >= 5`` is computed in float32 and rounded back to bf16 (the bf16
    depthwise kernel of that size was 2-3x slower than the float32 one). Everywhere else (CUDA, TorchScript,
    torch.fx and jit tracing, ``torch.compile``, ONNX export, NCHW inputs) it is ``nn.Conv2d.forward``, so
    exported graphs and FLOP counts see one depthwise conv.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._conv_forward(x, self.weight, self.bias)
        return self._eager_forward(x)

    @torch.jit.unused
    def _eager_forward(self, x):  # noqa: ANN001, ANN202 (TorchScript resolves no annotations of unused methods)
        if self._takes_cpu_route(x):
            return self._cpu_forward(x)
        return self._conv_forward(x, self.weight, self.bias)

    def _takes_cpu_route(self, x: torch.Tensor) -> bool:
        """Whether ``x`` is an eager channels_last CPU input of a zero-padded depthwise conv, not a graph being
        recorded (torch.fx, tracing, ``torch.compile``, ONNX export)."""
        return (
            not isinstance(x, torch.fx.Proxy)  # torch.fx records one conv, as for nn.Conv2d
            and x.device.type == "cpu"
            and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
            and self.groups == self.in_channels
            and self.padding_mode == "zeros"
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
            and not torch.onnx.is_in_onnx_export()
        )

    def _cpu_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution by the fastest measured route for ``x``'s dtype, kernel size and multiplier."""
        autocast = torch.is_autocast_enabled("cpu")
        dtype = torch.get_autocast_dtype("cpu") if autocast else x.dtype
        multiplier = self.out_channels // self.in_channels
        if dtype is torch.bfloat16 and self.kernel_size[0] >= 5:
            with torch.autocast("cpu", enabled=False):
                bias = None if self.bias is None else self.bias.float()
                out = _interleave_depthwise(x.float(), self.weight.float(), bias, multiplier, self.padding)
            return out.to(torch.bfloat16)
        return _interleave_depthwise(x, self.weight, self.bias, multiplier, self.padding)


def _branch(conv: nn.Conv2d, norm_layer: ModuleFactory | None, act_layer: Callable[[], nn.Module] | None):
    layers: list[nn.Module] = [conv]
    if norm_layer is not None:
        layers.append(norm_layer(conv.out_channels))
    if act_layer is not None:
        layers.append(act_layer())
    return nn.Sequential(*layers)


class GhostConv2d(nn.Module):
    """A Ghost module with the constructor of ``nn.Conv2d``: a drop-in replacement for a convolution.

    The first nine arguments are those of :class:`torch.nn.Conv2d` and mean the same; for every valid
    combination the output shape equals that of the ``nn.Conv2d`` built with the same arguments.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode:
            as in ``nn.Conv2d``. They configure the primary convolution, which makes
            ``init_channels = ceil(out_channels / ratio)`` intrinsic maps. ``groups`` must divide both
            ``in_channels`` and ``init_channels``.
        ratio: ``s``, the expansion ratio: ``out_channels / init_channels``. ``ratio=1`` is a plain conv.
        dw_size: ``d``, the odd kernel size of the cheap depthwise convolution (stride 1, "same"
            zero padding), which makes ``new_channels = (ratio - 1) * init_channels`` ghost maps.
        norm_layer: if given (e.g. ``nn.BatchNorm2d``), each branch is ``conv -> norm(-> act)`` as in the
            paper's module, which then *replaces* the host's conv-BN(-act). ``None`` (default) makes a pure
            drop-in for the conv alone: the host's own BN/activation stay where they are.
        act_layer: activation applied inside both branches (after ``norm_layer`` if any), e.g.
            ``nn.ReLU``. The intrinsic maps go through it before the cheap operation, as in the paper.
        device, dtype: factory arguments, as in ``nn.Conv2d``.

    Submodules (names follow the official GhostNet code, so its checkpoints load):
        ``primary_conv``: ``nn.Sequential(conv[, norm][, act])``;
        ``cheap_operation``: ``nn.Sequential(depthwise conv[, norm][, act])``, or ``None`` if ``ratio == 1``.

    The ghost maps are sliced to the ``out_channels - init_channels`` the output needs, before the
    concatenation (which then writes a dense tensor: slicing after it left every later layer a strided view,
    and made Ghost-VGG-16 s=3 spend twice s=2's time in ReLU in bf16 + channels_last training), and only when
    ``ratio`` does not divide ``out_channels`` (``needs_slice``), so exported graphs of the common case have no
    extra Slice node.

    ``channel_order`` (a buffer, ``None`` by default) reorders the output: when set to ``out_channels``
    indices into ``cat(intrinsic, ghost)``, output channel ``p`` is map ``channel_order[p]`` (one gather in
    place of the slice). :func:`ghost.surgery.transfer_weights` sets it so that a Ghost module initialised
    from a trained conv keeps the conv's channel order. It is saved in the ``state_dict`` when set, and a
    module without one takes it from the ``state_dict`` it loads.

    Example:
        >>> layer = GhostConv2d(64, 128, 3, stride=2, padding=1, ratio=2, dw_size=3)
        >>> layer(torch.randn(1, 64, 32, 32)).shape
        torch.Size([1, 128, 16, 16])
    """

    __constants__ = ["needs_slice"]
    __jit_unused_properties__ = ["primary"]  # TorchScript cannot type ``primary_conv[0]``; forward never uses it

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        ratio: int = 2,
        dw_size: int = 3,
        norm_layer: ModuleFactory | None = None,
        act_layer: Callable[[], nn.Module] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.ratio = check_ratio(ratio)
        self.dw_size = check_dw_size(dw_size)
        if out_channels < 1 or in_channels < 1:
            raise ValueError(
                f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.init_channels = math.ceil(out_channels / ratio)
        self.new_channels = self.init_channels * (ratio - 1)
        self.needs_slice = self.init_channels + self.new_channels != out_channels
        if in_channels % groups or self.init_channels % groups:
            raise ValueError(
                f"cannot split a grouped conv (groups={groups}) into a Ghost module: the primary conv makes "
                f"init_channels = ceil({out_channels}/{ratio}) = {self.init_channels} maps from {in_channels} "
                f"inputs, and groups must divide both; pick a ratio for which it does, or keep this conv"
            )
        factory = {"device": device, "dtype": dtype}
        primary = nn.Conv2d(
            in_channels, self.init_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, **factory,
        )
        self.primary_conv = _branch(primary, norm_layer, act_layer)
        self.cheap_operation: nn.Sequential | None = None
        if self.new_channels:
            cheap = CheapConv2d(
                self.init_channels, self.new_channels, self.dw_size, 1, self.dw_size // 2,
                groups=self.init_channels, bias=bias, **factory,
            )
            self.cheap_operation = _branch(cheap, norm_layer, act_layer)
        self.register_buffer("channel_order", None)

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        *,
        ratio: int = 2,
        dw_size: int = 3,
        norm_layer: ModuleFactory | None = None,
        act_layer: Callable[[], nn.Module] | None = None,
    ) -> GhostConv2d:
        """Build a freshly initialised Ghost module with ``conv``'s hyper-parameters, device and dtype.

        The conv's weights are not reused: a Ghost module computes a different function.
        """
        if type(conv) is not nn.Conv2d:
            raise ValueError(f"from_conv expects an nn.Conv2d, got {type(conv).__name__}")
        return cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
            ratio=ratio, dw_size=dw_size, norm_layer=norm_layer, act_layer=act_layer,
            device=conv.weight.device, dtype=conv.weight.dtype,
        )

    @property
    def primary(self) -> nn.Conv2d:
        """The primary convolution (without its norm/activation)."""
        return self.primary_conv[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.primary_conv(x)
        if self.cheap_operation is None:
            return out if self.channel_order is None else _select_channels(out, self.channel_order)
        ghosts = self.cheap_operation(out)
        if self.channel_order is not None:  # indices into the whole concatenation
            return _select_channels(torch.cat([out, ghosts], dim=1), self.channel_order)
        if self.needs_slice:  # sliced before the concat, which then writes a dense output in x's memory format
            ghosts = ghosts[:, : self.out_channels - self.init_channels]
        return torch.cat([out, ghosts], dim=1)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        key = prefix + "channel_order"
        if self.channel_order is None and key in state_dict:  # a placeholder the loader copies the order into
            self.channel_order = torch.empty_like(state_dict[key], device=self.primary.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, ratio={self.ratio}, dw_size={self.dw_size}, "
            f"init_channels={self.init_channels}, new_channels={self.new_channels}"
        )


class GhostModule(GhostConv2d):
    """The paper's Ghost module with the official constructor: conv-BN(-ReLU) in both branches.

    Equivalent to ``GhostConv2d(inp, oup, kernel_size, stride, kernel_size // 2, bias=False,
    ratio=ratio, dw_size=dw_size, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU if relu else None)``.

    Args:
        inp: input channels.
        oup: output channels.
        kernel_size: primary conv kernel (1 in GhostNet's bottlenecks).
        ratio: ``s``.
        dw_size: ``d``.
        stride: primary conv stride.
        relu: whether both branches end with a ReLU (``False`` for a bottleneck's linear projection).
    """

    def __init__(
        self,
        inp: int,
        oup: int,
        kernel_size: int = 1,
        ratio: int = 2,
        dw_size: int = 3,
        stride: int = 1,
        relu: bool = True,
    ) -> None:
        super().__init__(
            inp, oup, kernel_size, stride, kernel_size // 2, bias=False, ratio=ratio, dw_size=dw_size,
            norm_layer=nn.BatchNorm2d, act_layer=_inplace_relu if relu else None,
        )


def _inplace_relu() -> nn.Module:
    return nn.ReLU(inplace=True)


class SqueezeExcite(nn.Module):
    """GhostNet's squeeze-and-excitation: global pool, 1x1 reduce, ReLU, 1x1 expand, hard-sigmoid gate.

    Args:
        in_chs: channels of the input (and output).
        se_ratio: reduction ratio; the hidden width is ``make_divisible(in_chs * se_ratio, divisor)``.
        divisor: channel rounding multiple (4 in GhostNet).
    """

    def __init__(self, in_chs: int, se_ratio: float = 0.25, divisor: int = 4) -> None:
        super().__init__()
        reduced = make_divisible(in_chs * se_ratio, divisor)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = nn.Conv2d(in_chs, reduced, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, in_chs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.conv_expand(self.act1(self.conv_reduce(self.avg_pool(x))))
        return x * hard_sigmoid(gate)


class GhostBottleneck(nn.Module):
    """The Ghost bottleneck (paper Fig. 3): Ghost module (ReLU), [stride-2 depthwise conv], [SE],
    Ghost module (linear), plus a shortcut (identity, or depthwise + pointwise conv when the shape changes).

    Args:
        in_chs: input channels.
        mid_chs: expansion (hidden) channels.
        out_chs: output channels.
        dw_kernel_size: kernel of the stride-2 depthwise conv and of the shortcut's depthwise conv.
        stride: 1 or 2.
        se_ratio: squeeze-excite reduction; 0 disables SE.
        ratio: ``s`` of both Ghost modules.
        dw_size: ``d`` of both Ghost modules.

    ``conv_dw`` and ``bn_dw`` are ``None`` when ``stride == 1`` (so the module scripts with TorchScript).
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        dw_kernel_size: int = 3,
        stride: int = 1,
        se_ratio: float = 0.0,
        *,
        ratio: int = 2,
        dw_size: int = 3,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        self.stride = stride
        pad = (dw_kernel_size - 1) // 2
        self.ghost1 = GhostModule(in_chs, mid_chs, ratio=ratio, dw_size=dw_size, relu=True)
        self.conv_dw: nn.Conv2d | None = None
        self.bn_dw: nn.BatchNorm2d | None = None
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, pad, groups=mid_chs, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        self.se = SqueezeExcite(mid_chs, se_ratio=se_ratio) if se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_chs, out_chs, ratio=ratio, dw_size=dw_size, relu=False)
        if in_chs == out_chs and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride, pad, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ghost1(x)
        if self.conv_dw is not None and self.bn_dw is not None:
            out = self.bn_dw(self.conv_dw(out))
        if self.se is not None:
            out = self.se(out)
        out = self.ghost2(out)
        return out + self.shortcut(x)
