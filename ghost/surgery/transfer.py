"""Initialise a Ghost model from a *trained* host instead of from scratch: weight transfer and least squares.

The intrinsic filters are the host's own filters, and the cheap depthwise filters are fitted by least squares to
reproduce the host's other maps on a small calibration set (the paper's observation that many maps are cheap
transforms of others; least-squares channel reconstruction as in He et al., "Channel Pruning for Accelerating
Very Deep Neural Networks", ICCV 2017). :func:`transfer_weights` initialises ``ghost``, a :func:`ghost.ghostify`
conversion of the host's architecture (or ``create_model("ghost_<name>")``), from the trained ``host``:

1. Every tensor the two models share by name (the stem, kept convs, BatchNorms, the classifier) is copied.
2. The converted layers are fitted one at a time in forward order, on calibration data that flows through the
   already converted earlier layers (so errors do not compound unseen). For a host conv with ``n`` output maps,
   the target ``T_j`` is the host's map ``j`` before the activation (after the BatchNorm when the Ghost module
   absorbed it: ``policy="paper"``), computed by the host on its own input:

   a. every host filter ``i`` is applied to the converted model's input of the layer, followed by the host's
      BatchNorm weight and bias with *recalibrated* statistics (the mean and unbiased variance of that filter's
      output on the calibration data) and the branch's activation: the map ``S_i`` that filter ``i`` makes as
      an intrinsic map, which is what the cheap operation reads. (Refitting the BatchNorm's scale and shift by
      least squares to ``T_i`` instead was no better in a small CIFAR-10 check, and would make the module's
      train-mode output differ from the host's.)
   b. for every pair ``(i, j)``, the ``d x d`` filter plus bias that best maps ``S_i`` to ``T_j`` (the fit of
      :func:`ghost.redundancy.fit_cheap_op`, solved the same way, but pooled over all calibration images and
      for all ``n x n`` pairs at once from normal equations accumulated batch by batch), and its residual;
   c. the assignment (:func:`assign_ghosts`): ``m = ceil(n / s)`` host maps become intrinsic maps and each makes
      up to ``s - 1`` of the others, greedily by increasing residual;
   d. the Ghost module is written: its intrinsic filters and their BatchNorm weight and bias are the chosen
      host filters' (bit for bit), its cheap filters the fits. Every BatchNorm in it gets the calibration
      statistics of its own input (running mean and unbiased variance, exact, so nothing needs recalibrating
      afterwards); the ghost maps' BatchNorms get the weight and bias that make them add the fitted bias, so
      the module computes the fits in eval mode, and about the same in train mode (batch statistics).
      ``channel_order`` (:class:`ghost.layers.GhostConv2d`) puts each host map back at its own position, so
      the next layers, whatever the model, read the channels they were trained on.

3. BatchNorms outside the converted modules that run after the first converted layer (e.g. a classifier's) see
   inputs the conversion changed: their running statistics are recalibrated on the calibration data (mean and
   unbiased variance of their input), in forward order with the fits. The BatchNorms before it keep the host's.

A branch without a BatchNorm (``policy="dropin"``) keeps the host filter as it is, takes the fitted bias in
its conv's bias, and is fitted without a bias when its conv has none (the host's BatchNorm after the
module then sees its inputs change and is recalibrated, step 3).

Cost: per converted layer, the calibration data runs once through the converted model and once through the
host up to that layer (the layer's inputs are kept, e.g. 130 MB for 512 CIFAR-10 images at VGG-16's widest
layer), and the fits take about ``N * H * W * n^2 * d^2`` float64 multiply-adds for ``N``
calibration images of ``H x W`` maps (seconds per layer on a CPU for a few hundred CIFAR-10 images).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm.auto import tqdm

from ghost.layers import GhostConv2d
from ghost.surgery.convert import ghostify
from ghost.surgery.report import LayerRecord

__all__ = ["LayerFit", "assign_ghosts", "ghostify_trained", "transfer_weights"]

_CHUNK = 2**23  # float64 im2col entries per chunk of images (64 MiB)


@dataclass(frozen=True)
class LayerFit:
    """How closely one converted layer reproduces the host's pre-activation maps on the calibration data.

    The errors are normalised mean squared errors, pooled over maps: the summed squared residual over the
    summed variance of the host's maps (0: exact; 1: no better than each map's mean).

    Attributes:
        name: the layer (the host conv's module name).
        channels: its ``n`` output maps; intrinsic: the ``m`` of them made by host filters.
        intrinsic_nmse: of the intrinsic maps (host filters on the converted input, recalibrated BatchNorm).
        ghost_nmse: of the ghost maps (the cheap depthwise fits); NaN when there are none (``s = 1``).
        nmse: of all ``n`` maps.
        reordered: whether the module needed a ``channel_order`` to keep the host's channel order.
    """

    name: str
    channels: int
    intrinsic: int
    intrinsic_nmse: float
    ghost_nmse: float
    nmse: float
    reordered: bool


def ghostify_trained(
    host: nn.Module,
    calibration: torch.Tensor | Sequence[torch.Tensor],
    ratio: int = 2,
    dw_size: int = 3,
    *,
    progress: bool = False,
    **options,
) -> nn.Module:
    """Convert a trained model into its Ghost version, initialised from the host by :func:`transfer_weights`.

    Args:
        host: the trained model (left unchanged; in eval mode during the transfer, then as it was).
        calibration: batches of model inputs (a tensor is one batch), e.g. a few hundred training images
            preprocessed as for evaluation.
        ratio, dw_size: ``s`` and ``d``.
        progress: show a progress bar over the layers.
        **options: further :func:`ghost.ghostify` options (``policy``, ``include``, ``exclude``, ``overrides``,
            ``replace_stem``...). The model is traced on the first calibration image unless ``input_size`` or
            ``example_inputs`` is given.

    Returns:
        The converted model, with ``ghost_report`` (see ``ghostify``) and ``transfer_fits`` (a
        :class:`LayerFit` per converted layer).
    """
    batches = _batches(calibration)
    if "input_size" not in options and "example_inputs" not in options:
        options["example_inputs"] = batches[0][:1].clone()
    ghost = ghostify(host, ratio, dw_size, **options)
    ghost.transfer_fits = transfer_weights(host, ghost, batches, progress=progress)
    return ghost


@torch.no_grad()
def transfer_weights(
    host: nn.Module,
    ghost: nn.Module,
    calibration: torch.Tensor | Sequence[torch.Tensor],
    *,
    progress: bool = False,
) -> list[LayerFit]:
    """Initialise ``ghost`` in place from the trained ``host`` (the algorithm is in the module docstring).

    Args:
        host: the trained model.
        ghost: a conversion of the host's architecture by :func:`ghost.ghostify` (it carries the
            ``ghost_report`` that names the converted layers and the BatchNorms they absorbed), e.g.
            ``create_model("ghost_<name>")`` for a host built by ``create_model("<name>")``; on the host's device.
        calibration: batches of model inputs (a tensor is one batch).
        progress: show a progress bar over the layers.

    Returns:
        A :class:`LayerFit` per converted layer, in forward order.

    Raises:
        ValueError: ``ghost`` is not a ghostify conversion of the host's architecture, the two models are on
            different devices, a converted layer's branches cannot hold the fits (a BatchNorm without affine
            weights or running statistics, a fused norm-activation), or the calibration data is empty.
    """
    batches = _batches(calibration)
    report = getattr(ghost, "ghost_report", None)
    if report is None:
        raise ValueError("the Ghost model has no ghost_report: build it from the host's architecture with "
                         "ghost.ghostify(...) or create_model('ghost_<name>')")
    layers = {record.name: record for record in report.layers if record.replaced}
    device = next(ghost.parameters()).device
    if next(host.parameters()).device != device:
        raise ValueError(f"the host is on {next(host.parameters()).device} and the Ghost model on {device}; "
                         "move both to one device")
    modes = host.training, ghost.training
    host.eval()
    ghost.eval()
    try:
        _copy_shared(host, ghost, layers)
        fits = []
        steps = _forward_order(ghost, layers, batches[0].to(device))
        for name, calls in tqdm(steps, desc="transfer", unit="layer", disable=not progress, dynamic_ncols=True):
            if name in layers:
                fits.append(_fit_layer(host, ghost, layers[name], batches, calls))
            else:
                _recalibrate(ghost, name, batches, calls)
    finally:
        host.train(modes[0])
        ghost.train(modes[1])
    return fits


def assign_ghosts(cost: torch.Tensor, ratio: int) -> tuple[list[int], list[list[int]]]:
    """Choose ``m = ceil(n / ratio)`` of ``n`` maps as intrinsic maps and the (up to ``ratio - 1``) other maps
    each one makes, greedily: pairs ``(i, j)`` are taken in increasing ``cost[i, j]`` (the squared error of
    making map ``j`` from intrinsic map ``i``), and ``j`` becomes a ghost of ``i`` when ``j`` is still free
    and ``i`` is an intrinsic map with a free slot, or is free itself while fewer than ``m`` are chosen. A
    map left at the end (only one can be) becomes intrinsic, or takes the cheapest free slot.

    Returns:
        The intrinsic maps in increasing order, and for each the maps it makes.
    """
    n = cost.shape[0]
    if ratio == 1:
        return list(range(n)), [[] for _ in range(n)]
    m, slots = math.ceil(n / ratio), ratio - 1
    makes: dict[int, list[int]] = {}
    source: list[int | None] = [None] * n  # for each map: itself if intrinsic, else the map that makes it
    free = n
    for flat in torch.argsort(cost.flatten(), stable=True).tolist():
        if free == 0:
            break
        i, j = divmod(flat, n)
        if i == j or source[j] is not None or (source[i] is not None and source[i] != i):
            continue
        if source[i] is None:
            if len(makes) == m:
                continue
            source[i], makes[i], free = i, [], free - 1
        if len(makes[i]) < slots:
            makes[i].append(j)
            source[j], free = i, free - 1
    for j in (j for j in range(n) if source[j] is None):
        if len(makes) < m:
            makes[j] = []
        else:
            makes[min((i for i in makes if len(makes[i]) < slots), key=lambda i: cost[i, j].item())].append(j)
    intrinsic = sorted(makes)
    return intrinsic, [makes[i] for i in intrinsic]


# ---------------------------------------------------------------- plumbing: data, state, forward order


def _batches(calibration: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    batches = [calibration] if isinstance(calibration, torch.Tensor) else list(calibration)
    if not batches or any(not isinstance(b, torch.Tensor) or len(b) == 0 for b in batches):
        raise ValueError("the calibration data must be one or more non-empty batches (tensors) of model inputs")
    return batches


def _copy_shared(host: nn.Module, ghost: nn.Module, layers: dict[str, LayerRecord]) -> None:
    """Copy every host tensor into the Ghost model's tensor of the same name, outside the converted layers."""
    state = host.state_dict()
    converted = tuple(f"{name}." for name in layers)
    for key, value in ghost.state_dict().items():
        if key.startswith(converted):
            continue
        if key not in state or state[key].shape != value.shape:
            raise ValueError(
                f"the Ghost model is not a conversion of the host: its {key} {tuple(value.shape)} has no "
                f"counterpart of that shape in the host; build it from the host's architecture with "
                f"ghost.ghostify or create_model('ghost_<name>')"
            )
        value.copy_(state[key])
    host_modules = dict(host.named_modules())
    for name in layers:
        conv, module = host_modules.get(name), ghost.get_submodule(name)
        shape = (module.in_channels, module.out_channels, module.primary.kernel_size, module.primary.stride,
                 module.primary.padding, module.primary.dilation, module.primary.groups)
        if type(conv) is not nn.Conv2d or shape != (conv.in_channels, conv.out_channels, conv.kernel_size,
                                                    conv.stride, conv.padding, conv.dilation, conv.groups):
            raise ValueError(f"the Ghost model is not a conversion of the host: its {name} ({type(module).__name__} "
                             f"{module.in_channels} -> {module.out_channels}) replaced no such nn.Conv2d of the "
                             "host; build it from the host's architecture with ghost.ghostify or "
                             "create_model('ghost_<name>')")


def _forward_order(ghost: nn.Module, layers: dict[str, LayerRecord], batch: torch.Tensor) -> list[tuple[str, int]]:
    """``(name, calls per forward pass)`` of the converted layers and of the BatchNorms outside them that run
    after the first converted layer, in the order they first run."""
    modules = dict(ghost.named_modules())
    inside = tuple(f"{name}." for name in layers)
    watched = [name for name, module in modules.items() if name in layers
               or (isinstance(module, _BatchNorm) and module.running_mean is not None and not name.startswith(inside))]
    calls: dict[str, int] = {}

    def counter(name: str):
        def count(_module: nn.Module, _args: tuple) -> None:
            calls[name] = calls.get(name, 0) + 1
        return count

    handles = [modules[name].register_forward_pre_hook(counter(name)) for name in watched]
    try:
        ghost(batch)
    finally:
        for handle in handles:
            handle.remove()
    idle = sorted(set(layers) - set(calls))
    if idle:
        raise ValueError(f"converted layers {', '.join(idle)} never ran on the calibration data, so they cannot be "
                         "fitted; calibrate with the inputs the model is meant for")
    order = list(calls.items())
    first = next(k for k, (name, _) in enumerate(order) if name in layers)
    return order[first:]


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the maps it needs are captured."""


def _captured(model: nn.Module, module: nn.Module, batches: list[torch.Tensor], calls: int,
              inputs: bool) -> Iterator[list[torch.Tensor]]:
    """For each batch, the inputs (or outputs) of ``module``'s ``calls`` calls in one forward pass of ``model``."""
    device = next(model.parameters()).device
    for batch in batches:
        yield _run_until(model, module, batch.to(device), calls, inputs)


def _run_until(model: nn.Module, module: nn.Module, batch: torch.Tensor, calls: int,
               inputs: bool) -> list[torch.Tensor]:
    """Run ``model`` on ``batch`` until ``module`` has been called ``calls`` times; its inputs (or outputs).
    The hook is only registered meanwhile, so calling ``module`` directly elsewhere is not captured."""
    maps: list[torch.Tensor] = []

    def keep(_module: nn.Module, args: tuple, output: torch.Tensor | None = None) -> None:
        maps.append((args[0] if inputs else output).detach().clone())
        if len(maps) == calls:
            raise _Stop

    handle = module.register_forward_pre_hook(keep) if inputs else module.register_forward_hook(keep)
    try:
        model(batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    if len(maps) != calls:
        raise ValueError(f"a module ran {len(maps)} times on a calibration batch instead of {calls}: the "
                         "transfer needs a model whose forward pass does not depend on its input's values")
    return maps


# ---------------------------------------------------------------- fitting one layer


@dataclass
class _Branch:
    """A Ghost module branch ``conv[-norm][-rest]``; ``rest`` (activations) may be empty."""

    conv: nn.Conv2d
    norm: nn.BatchNorm2d | None
    rest: nn.Sequential


def _branch(branch: nn.Sequential, name: str) -> _Branch:
    conv, *rest = branch
    norm = rest.pop(0) if rest and isinstance(rest[0], _BatchNorm) else None
    if norm is not None and (type(norm) is not nn.BatchNorm2d or not norm.affine or norm.running_mean is None):
        raise ValueError(
            f"{name}: the transfer writes its fits into a plain nn.BatchNorm2d with affine weights and running "
            f"statistics, not a {type(norm).__name__} (affine={norm.affine}); exclude this layer or convert with "
            f"policy='dropin'"
        )
    return _Branch(conv, norm, nn.Sequential(*rest))


class _Moments:
    """Normal equations of the least-squares fits ``T_j ~ w (*) S_i + b`` (``w`` a ``d x d`` filter, zero
    "same" padding) of every pair of maps, accumulated over calibration batches in float64."""

    def __init__(self, n: int, d: int) -> None:
        self.d, k = d, d * d
        self.gram = torch.zeros(n, k, k, dtype=torch.float64)  # sum over pixels of p p^T, per source map
        self.sums = torch.zeros(n, k, dtype=torch.float64)  # sum of p
        self.cross = torch.zeros(n, k, n, dtype=torch.float64)  # sum of p * target, per (source, target)
        self.count = 0  # pixels

    def add(self, sources: torch.Tensor, targets: torch.Tensor) -> None:
        """Accumulate one batch of source maps ``S`` and target maps ``T``, both ``[B, n, H, W]``."""
        b, n, h, w = sources.shape
        d, r = self.d, self.d // 2
        chunk = max(1, _CHUNK // (n * d * d * h * w))
        for s, t in zip(sources.split(chunk), targets.split(chunk), strict=True):
            # the d*d shifted copies of every source map (im2col), laid out [n, d*d, pixels] for two matmuls
            padded = F.pad(s.double().transpose(0, 1), (r, r, r, r))
            patches = torch.stack([padded[:, :, dy:dy + h, dx:dx + w] for dy in range(d) for dx in range(d)], 1)
            patches = patches.reshape(n, d * d, -1)
            t = t.double().transpose(0, 1).reshape(n, -1)
            self.gram += (patches @ patches.transpose(1, 2)).cpu()
            self.sums += patches.sum(2).cpu()
            self.cross += (patches.reshape(n * d * d, -1) @ t.T).view(n, d * d, n).cpu()
            self.count += t.shape[1]

    def solve(self, t_sum: torch.Tensor, t_sq: torch.Tensor, bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Solutions ``[n, d*d (+1 for the bias), n]`` and residual sums of squares ``[n, n]`` of every
        ``(source i, target j)`` pair, given the targets' sums and sums of squares: the minimum-norm
        least-squares solution, from the pseudo-inverse of the normal equations as in
        :func:`ghost.redundancy.fit_cheap_op` (robust to a rank-deficient source such as an all-zero map)."""
        gram, cross = self.gram, self.cross
        if bias:
            n = gram.shape[0]
            ones = torch.full((n, 1, 1), float(self.count), dtype=torch.float64)
            gram = torch.cat([torch.cat([gram, self.sums[:, :, None]], 2),
                              torch.cat([self.sums[:, None, :], ones], 2)], 1)
            cross = torch.cat([cross, t_sum.expand(n, 1, n)], 1)
        solution = torch.linalg.pinv(gram, hermitian=True) @ cross
        residual = t_sq[None, :] - (solution * cross).sum(1)
        return solution, residual.clamp_min(0.0)


def _filter_stats(conv: nn.Conv2d, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and unbiased variance, over the calibration pixels, of each host filter's output on the converted
    model's input of the layer, and the number of pixels."""
    total = square = torch.zeros(conv.out_channels, dtype=torch.float64)
    count = 0
    for x in inputs:
        z = conv(x).double()
        total, square = total + z.sum((0, 2, 3)).cpu(), square + z.square().sum((0, 2, 3)).cpu()
        count += z.numel() // conv.out_channels
    mean = total / count
    return mean, ((square - count * mean.square()) / max(1, count - 1)).clamp_min(0.0), count


def _intrinsic_affine(norm: nn.BatchNorm2d | None, mean: torch.Tensor,
                      var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale, shift`` of the affine map ``scale * z + shift`` that the host's BatchNorm computes with the
    statistics ``mean``/``var`` of its input ``z`` (the identity without a BatchNorm)."""
    if norm is None:
        return torch.ones_like(mean), torch.zeros_like(mean)
    scale = norm.weight.detach().double().cpu() / (var + norm.eps).sqrt()
    return scale, norm.bias.detach().double().cpu() - scale * mean


def _set_norm(norm: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, shift: torch.Tensor) -> None:
    """Give ``norm`` the running statistics ``mean``/``var`` of its input ``u``, and the weight and bias with which
    it computes ``u + shift`` in eval mode."""
    std = (var + norm.eps).sqrt()
    norm.running_mean.copy_(mean)
    norm.running_var.copy_(var)
    norm.weight.copy_(std)
    norm.bias.copy_(shift + mean)


def _fit_layer(host: nn.Module, ghost: nn.Module, record: LayerRecord, batches: list[torch.Tensor],
               calls: int) -> LayerFit:
    """Fit one converted layer (steps a-d of the module docstring) and write it."""
    module: GhostConv2d = ghost.get_submodule(record.name)
    conv = host.get_submodule(record.name)
    primary = _branch(module.primary_conv, record.name)
    cheap = None if module.cheap_operation is None else _branch(module.cheap_operation, record.name)
    # the host's map before the activation: its BatchNorm's output when the module absorbed it, else the conv's
    host_norm = host.get_submodule(record.absorbed[0]) if primary.norm is not None else None
    target = conv if host_norm is None else host_norm
    n = conv.out_channels

    # the layer's inputs in the converted model (kept for both passes) and the host's maps, call by call
    layer_inputs = [x for xs in _captured(ghost, module, batches, calls, inputs=True) for x in xs]
    host_maps = (t for ts in _captured(host, target, batches, calls, inputs=False) for t in ts)
    mean, var, count = _filter_stats(conv, layer_inputs)  # step a
    scale, shift = _intrinsic_affine(host_norm, mean, var)
    sums = torch.zeros(3, n, dtype=torch.float64)  # of T, T^2, and of (T - S_i before the activation)^2
    moments = None if cheap is None else _Moments(n, module.dw_size)
    for x, t in zip(layer_inputs, host_maps, strict=True):  # step b
        before = conv(x) * scale.to(x).view(1, -1, 1, 1) + shift.to(x).view(1, -1, 1, 1)
        t64 = t.double()
        sums += torch.stack([t64.sum((0, 2, 3)), t64.square().sum((0, 2, 3)),
                             (before.double() - t64).square().sum((0, 2, 3))]).cpu()
        if moments is not None:
            moments.add(primary.rest(before), t)
    solution, residual = None, torch.zeros(n, n, dtype=torch.float64)
    if moments is not None:
        with_bias = cheap.norm is not None or cheap.conv.bias is not None
        solution, residual = moments.solve(sums[0], sums[1], with_bias)
    intrinsic, makes = assign_ghosts(residual, module.ratio)  # step c
    _write_primary(primary, conv, host_norm, intrinsic, mean, var)  # step d
    if cheap is not None:
        _write_cheap(cheap, module, intrinsic, makes, solution, moments)
    module.channel_order = _channel_order(module, intrinsic, makes)
    spread = (sums[1] - sums[0].square() / count).clamp_min(0.0)  # each host map's squared deviations
    return _layer_fit(record.name, spread, sums[2], residual, intrinsic, makes, module.channel_order is not None)


def _write_primary(primary: _Branch, conv: nn.Conv2d, host_norm: nn.BatchNorm2d | None, intrinsic: list[int],
                   mean: torch.Tensor, var: torch.Tensor) -> None:
    """The intrinsic filters (and their BatchNorm's weight and bias) are the host's; the statistics recalibrated."""
    index = torch.tensor(intrinsic, device=conv.weight.device)
    primary.conv.weight.copy_(conv.weight[index])
    if conv.bias is not None:
        primary.conv.bias.copy_(conv.bias[index])
    if primary.norm is not None:
        primary.norm.weight.copy_(host_norm.weight[index])
        primary.norm.bias.copy_(host_norm.bias[index])
        primary.norm.running_mean.copy_(mean[intrinsic])
        primary.norm.running_var.copy_(var[intrinsic])


def _channel_order(module: GhostConv2d, intrinsic: list[int], makes: list[list[int]]) -> torch.Tensor | None:
    """For each host map, its index in the module's ``cat(intrinsic, ghost)``; ``None`` where that is the identity
    (intrinsic slot ``q`` is map ``intrinsic[q]``, ghost slot ``q * (s - 1) + r`` the ``r``-th map it makes)."""
    order = [0] * module.out_channels
    for q, (i, targets) in enumerate(zip(intrinsic, makes, strict=True)):
        order[i] = q
        for r, j in enumerate(targets):
            order[j] = module.init_channels + q * (module.ratio - 1) + r
    if order == list(range(module.out_channels)):
        return None
    return torch.tensor(order, device=module.primary.weight.device)


def _layer_fit(name: str, spread: torch.Tensor, own: torch.Tensor, residual: torch.Tensor, intrinsic: list[int],
               makes: list[list[int]], reordered: bool) -> LayerFit:
    """The fit errors of a layer from each host map's squared deviations (``spread``), the intrinsic candidates'
    residuals (``own``) and the pair residuals."""
    own_rss, own_ss = own[intrinsic].sum().item(), spread[intrinsic].sum().item()
    ghost_rss = sum(residual[i, j].item() for i, targets in zip(intrinsic, makes, strict=True) for j in targets)
    ghost_ss = spread.sum().item() - own_ss
    return LayerFit(name, len(spread), len(intrinsic), _ratio(own_rss, own_ss),
                    _ratio(ghost_rss, ghost_ss) if any(makes) else math.nan,
                    _ratio(own_rss + ghost_rss, spread.sum().item()), reordered)


def _write_cheap(cheap: _Branch, module: GhostConv2d, intrinsic: list[int], makes: list[list[int]],
                 solution: torch.Tensor, moments: _Moments) -> None:
    """Write the fitted ``d x d`` filters (and biases) of the ghost maps; unused slots make zero maps."""
    d, k = module.dw_size, module.dw_size**2
    slots = module.new_channels
    weight = torch.zeros(slots, k, dtype=torch.float64)
    bias, mean, var = (torch.zeros(slots, dtype=torch.float64) for _ in range(3))
    for q, targets in enumerate(makes):
        i = intrinsic[q]
        for r, j in enumerate(targets):
            g = q * (module.ratio - 1) + r
            x = solution[i, :, j]
            weight[g] = x[:k]
            bias[g] = x[k] if len(x) > k else 0.0
            # statistics of the cheap conv's output u = w (*) S_i over the calibration pixels
            mean[g] = weight[g] @ moments.sums[i] / moments.count
            square = weight[g] @ moments.gram[i] @ weight[g]
            var[g] = max(0.0, (square - moments.count * mean[g] ** 2).item() / max(1, moments.count - 1))
    cheap.conv.weight.copy_(weight.view(slots, 1, d, d))
    if cheap.norm is not None:
        if cheap.conv.bias is not None:
            cheap.conv.bias.zero_()
        _set_norm(cheap.norm, mean, var, bias)
    elif cheap.conv.bias is not None:
        cheap.conv.bias.copy_(bias)


def _ratio(residual: float, spread: float) -> float:
    return residual / spread if spread > 0 else (0.0 if residual == 0 else math.nan)


# ---------------------------------------------------------------- BatchNorms outside the converted layers


def _recalibrate(ghost: nn.Module, name: str, batches: list[torch.Tensor], calls: int) -> None:
    """Set a BatchNorm's running statistics to the mean and unbiased variance of its input on the calibration
    data (through the converted model as it is now); its weight and bias stay."""
    norm = ghost.get_submodule(name)
    total = square = None
    count = 0
    for maps in _captured(ghost, norm, batches, calls, inputs=True):
        for x in maps:
            dims = [dim for dim in range(x.dim()) if dim != 1]
            x = x.double()
            total = x.sum(dims) if total is None else total + x.sum(dims)
            square = x.square().sum(dims) if square is None else square + x.square().sum(dims)
            count += x.numel() // x.shape[1]
    mean = total / count
    norm.running_mean.copy_(mean)
    norm.running_var.copy_(((square - count * mean.square()) / max(1, count - 1)).clamp_min(0.0))
