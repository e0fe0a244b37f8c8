"""The paper's toy experiment: how well does a cheap ``d x d`` linear filter map one feature map to another?

Han et al. (Section 3.1) fit a depthwise ``d x d`` filter from one map of a similar pair to the other and
report the mean squared error for ``d`` in {1, 3, 5, 7}. Here the fit is an exact least-squares solve
(float64): the design matrix is the im2col (``unfold``) of the source with "same" zero padding plus a
column of ones for the bias, so ``target ~= conv2d(source, filter, padding=d // 2) + bias`` (PyTorch's
conv2d is a cross-correlation, and so is the returned filter).

Two versions of the experiment:

- :func:`pair_fit_errors`, **in-sample**: one filter per pair *and per image*, scored on the pixels it was fitted
  to. A larger ``d`` contains every smaller one, so this error falls with ``d`` by construction; it measures
  how much a filter of that size can absorb, not redundancy.
- :func:`held_out_fit_errors`, **held out**: one filter per channel pair shared by every image (as a Ghost
  module's cheap operation is one filter per channel, whatever the input), fitted on some images and scored on
  others. A filter larger than the true relation pays for its extra freedom here, so the error can rise with ``d``.

Both apply one rule for which layers enter a ``d`` sweep (:func:`in_d_sweep`): the tables and the figures use it
alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ghost.redundancy._threads import single_threaded

__all__ = ["CheapOpFit", "fit_cheap_op", "held_out_fit_errors", "in_d_sweep", "pair_fit_errors"]


@dataclass(frozen=True)
class CheapOpFit:
    """A least-squares fit ``target ~= conv2d(source, weight, padding=d // 2) + bias``.

    Attributes:
        weight: the ``[d, d]`` filter (float64).
        bias: the scalar bias.
        mse: mean squared residual over the ``H * W`` pixels.
        nmse: ``mse`` divided by the target's variance (``1 - R^2``); NaN for a constant target.
    """

    weight: torch.Tensor
    bias: float
    mse: float
    nmse: float


def _check_kernel_size(d: object) -> int:
    if isinstance(d, bool) or not isinstance(d, int) or d < 1 or d % 2 == 0:
        raise ValueError(f"the filter size d must be an odd integer >= 1 (e.g. 1, 3, 5, 7), got {d!r}")
    return d


def in_d_sweep(height: int, width: int, kernel_sizes: Sequence[int]) -> bool:
    """Whether maps of ``height x width`` are large enough for a sweep over ``kernel_sizes``: both sides at least
    twice the largest ``d``. On smaller maps the zero padding of a ``d x d`` window covers a large part of every
    window (on 4x4 maps a 3x3 in-sample fit has 10 parameters for 16 pixels), so the fit says more about the
    resolution than about redundancy. With d up to 7 this keeps maps of 14x14 and more (CIFAR's 32x32 and 16x16,
    ImageNet's 112 to 14)."""
    largest = max(_check_kernel_size(d) for d in kernel_sizes)
    return min(height, width) >= 2 * largest


def _check_pairs(fmap: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> None:
    if fmap.dim() != 4:
        raise ValueError(f"feature maps must be [N, C, H, W], got shape {tuple(fmap.shape)}")
    if not pairs:
        raise ValueError("pairs is empty: pass at least one (source, target) channel pair")
    channels = fmap.shape[1]
    if any(not (0 <= c < channels) for pair in pairs for c in pair):
        raise ValueError(f"channel indices in pairs must lie in [0, {channels}), got {list(pairs)}")


def _design(sources: torch.Tensor, d: int) -> torch.Tensor:
    """The im2col of maps ``[B, H, W]`` with "same" zero padding plus a ones column: ``[B, H*W, d*d + 1]``."""
    patches = F.unfold(sources[:, None], kernel_size=d, padding=d // 2).transpose(1, 2)
    return torch.cat([patches, torch.ones_like(patches[..., :1])], dim=2)


@single_threaded()
def _fit_batched(
    sources: torch.Tensor, targets: torch.Tensor, d: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fit per map pair: sources, targets ``[B, H, W]`` -> weight ``[B, d, d]``, bias, mse, nmse."""
    sources = sources.detach().to("cpu", torch.float64)
    targets = targets.detach().to("cpu", torch.float64)
    batch = sources.shape[0]
    design = _design(sources, d)
    rhs = targets.reshape(batch, -1, 1)
    # The minimum-norm least-squares solution of design @ x = rhs, computed from the (d*d+1)-sized normal
    # equations with an SVD-based solver: pinv(A^T A) A^T = pinv(A), so this is the exact solution (and
    # robust to rank deficiency, e.g. an all-zero source), at a fraction of the cost of factorising the
    # HW x (d*d+1) design matrix itself.
    gram = design.transpose(1, 2) @ design
    solution = torch.linalg.lstsq(gram, design.transpose(1, 2) @ rhs, driver="gelsd").solution
    residual = (design @ solution - rhs).squeeze(2)
    mse = residual.pow(2).mean(dim=1)
    variance = rhs.squeeze(2).var(dim=1, unbiased=False)
    nmse = torch.where(variance > 0, mse / variance.clamp_min(torch.finfo(torch.float64).tiny), torch.nan)
    return solution[:, :-1, 0].reshape(batch, d, d), solution[:, -1, 0], mse, nmse


def fit_cheap_op(source: torch.Tensor, target: torch.Tensor, d: int) -> CheapOpFit:
    """Least-squares fit of a ``d x d`` filter plus bias mapping the 2-D map ``source`` to ``target``.

    Args:
        source, target: maps ``[H, W]`` of the same shape.
        d: odd filter size (``1`` is an affine map ``a * source + b``).

    Returns:
        The filter, bias, and the fit's (normalised) mean squared error.
    """
    d = _check_kernel_size(d)
    if source.dim() != 2 or source.shape != target.shape:
        raise ValueError(
            f"source and target must be 2-D maps [H, W] of the same shape, got {tuple(source.shape)} and "
            f"{tuple(target.shape)}"
        )
    weight, bias, mse, nmse = _fit_batched(source[None], target[None], d)
    return CheapOpFit(weight=weight[0], bias=bias.item(), mse=mse.item(), nmse=nmse.item())


def pair_fit_errors(
    fmap: torch.Tensor, pairs: Sequence[tuple[int, int]], kernel_sizes: Sequence[int] = (1, 3, 5, 7)
) -> dict[int, tuple[float, float]]:
    """The toy experiment on a layer, **in sample**: for every channel pair ``(i, j)`` and every image, fit a
    ``d x d`` filter from map ``i`` to map ``j`` and score it on the same pixels; return
    ``{d: (mean mse, mean nmse)}`` over all fits (it falls with ``d`` by construction, see the module docstring).

    Args:
        fmap: feature maps ``[N, C, H, W]``.
        pairs: channel index pairs, e.g. from :func:`ghost.redundancy.top_pairs`.
        kernel_sizes: odd filter sizes ``d``.

    The mean nmse skips fits whose target is constant (NaN nmse); it is NaN if all are. Maps too small for the
    sweep (:func:`in_d_sweep`) get NaN errors for every ``d``.
    """
    _check_pairs(fmap, pairs)
    if not in_d_sweep(fmap.shape[2], fmap.shape[3], kernel_sizes):
        return {d: (math.nan, math.nan) for d in kernel_sizes}
    sources = torch.cat([fmap[:, i] for i, _ in pairs])
    targets = torch.cat([fmap[:, j] for _, j in pairs])
    errors: dict[int, tuple[float, float]] = {}
    for d in kernel_sizes:
        # chunks of about 2**23 design-matrix entries (64 MiB) keep memory flat for large maps
        chunk = max(1, 2**23 // (sources[0].numel() * (d * d + 1)))
        chunks = zip(sources.split(chunk), targets.split(chunk), strict=True)
        fits = [_fit_batched(s, t, d) for s, t in chunks]
        mse = torch.cat([fit[2] for fit in fits])
        nmse = torch.cat([fit[3] for fit in fits])
        errors[d] = (mse.mean().item(), nmse.nanmean().item())
    return errors


@single_threaded()
def _held_out_pair(source: torch.Tensor, target: torch.Tensor, fitted: int, d: int) -> tuple[float, float]:
    """One filter and bias fitted on images ``[:fitted]`` of the maps ``[N, H, W]`` and scored on the rest: the
    held-out mse and mse over the held-out target's variance (NaN for a constant target)."""
    source = source.detach().to("cpu", torch.float64)
    target = target.detach().to("cpu", torch.float64)
    gram = torch.zeros(d * d + 1, d * d + 1, dtype=torch.float64)
    moment = torch.zeros(d * d + 1, 1, dtype=torch.float64)
    chunk = max(1, 2**23 // (source[0].numel() * (d * d + 1)))  # about 64 MiB of design matrix at a time
    for images, maps in zip(source[:fitted].split(chunk), target[:fitted].split(chunk), strict=True):
        design = _design(images, d).flatten(0, 1)
        gram += design.T @ design
        moment += design.T @ maps.reshape(-1, 1)
    solution = torch.linalg.lstsq(gram, moment, driver="gelsd").solution
    squared = torch.cat([(_design(images, d) @ solution).squeeze(2).sub(maps.flatten(1)).pow(2).flatten()
                         for images, maps in zip(source[fitted:].split(chunk), target[fitted:].split(chunk),
                                                 strict=True)])
    mse = squared.mean().item()
    variance = target[fitted:].var(unbiased=False).item()
    return mse, mse / variance if variance > 0 else math.nan


def held_out_fit_errors(
    fmap: torch.Tensor,
    pairs: Sequence[tuple[int, int]],
    kernel_sizes: Sequence[int] = (1, 3, 5, 7),
    held_out: float = 0.5,
) -> dict[int, tuple[float, float]]:
    """The toy experiment on a layer, **held out**: for every channel pair ``(i, j)`` one ``d x d`` filter and
    bias, shared by every image, fitted (least squares over all their pixels) on the first images and scored on
    the last ``held_out`` share of them; return ``{d: (mean mse, mean nmse)}`` over the pairs.

    Args:
        fmap: feature maps ``[N, C, H, W]`` with ``N >= 2``.
        pairs: channel index pairs, e.g. from :func:`ghost.redundancy.top_pairs`.
        kernel_sizes: odd filter sizes ``d``.
        held_out: share of the images scored (in ``(0, 1)``; at least one image on each side).

    nmse is the held-out mse over the variance of the held-out target maps; pairs with a constant target are
    skipped in its mean. Maps too small for the sweep (:func:`in_d_sweep`) get NaN errors for every ``d``.
    """
    _check_pairs(fmap, pairs)
    if not 0 < held_out < 1:
        raise ValueError(f"held_out is the share of images scored, in (0, 1), got {held_out}")
    scored = math.ceil(held_out * fmap.shape[0])
    if fmap.shape[0] < 2 or scored >= fmap.shape[0]:
        raise ValueError(f"a held-out fit needs images on both sides: {fmap.shape[0]} images with held_out="
                         f"{held_out} leave none to fit; pass more images or a smaller held_out")
    if not in_d_sweep(fmap.shape[2], fmap.shape[3], kernel_sizes):
        return {d: (math.nan, math.nan) for d in kernel_sizes}
    errors: dict[int, tuple[float, float]] = {}
    for d in kernel_sizes:
        fits = torch.tensor([_held_out_pair(fmap[:, i], fmap[:, j], fmap.shape[0] - scored, d) for i, j in pairs],
                            dtype=torch.float64)
        errors[d] = (fits[:, 0].mean().item(), fits[:, 1].nanmean().item())
    return errors
