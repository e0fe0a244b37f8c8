"""The paper's toy experiment: how well does a cheap ``d x d`` linear filter map one feature map to another?

Han et al. (Section 3.1) fit a depthwise ``d x d`` filter from one map of a similar pair to the other and
report the mean squared error for ``d`` in {1, 3, 5, 7}. Here the fit is an exact least-squares solve
(float64): the design matrix is the im2col (``unfold``) of the source with "same" zero padding plus a
column of ones for the bias, so ``target ~= conv2d(source, filter, padding=d // 2) + bias`` (PyTorch's
conv2d is a cross-correlation, and so is the returned filter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ghost.redundancy._threads import single_threaded

__all__ = ["CheapOpFit", "fit_cheap_op", "pair_fit_errors"]


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


@single_threaded()
def _fit_batched(
    sources: torch.Tensor, targets: torch.Tensor, d: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fit per map pair: sources, targets ``[B, H, W]`` -> weight ``[B, d, d]``, bias, mse, nmse."""
    sources = sources.detach().to("cpu", torch.float64)
    targets = targets.detach().to("cpu", torch.float64)
    batch = sources.shape[0]
    patches = F.unfold(sources[:, None], kernel_size=d, padding=d // 2).transpose(1, 2)  # [B, HW, d*d]
    design = torch.cat([patches, torch.ones_like(patches[..., :1])], dim=2)
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
    """The toy experiment on a layer: for every channel pair ``(i, j)`` and every image, fit a ``d x d``
    filter from map ``i`` to map ``j``; return ``{d: (mean mse, mean nmse)}`` over all fits.

    Args:
        fmap: feature maps ``[N, C, H, W]``.
        pairs: channel index pairs, e.g. from :func:`ghost.redundancy.top_pairs`.
        kernel_sizes: odd filter sizes ``d``.

    The mean nmse skips fits whose target is constant (NaN nmse); it is NaN if all are. A ``d`` whose fit
    has at least as many parameters (``d * d + 1``) as the map has pixels fits exactly by construction and
    says nothing about redundancy: its errors are reported as NaN (e.g. ``d >= 3`` on 2x2 maps).
    """
    if fmap.dim() != 4:
        raise ValueError(f"feature maps must be [N, C, H, W], got shape {tuple(fmap.shape)}")
    if not pairs:
        raise ValueError("pairs is empty: pass at least one (source, target) channel pair")
    channels = fmap.shape[1]
    if any(not (0 <= c < channels) for pair in pairs for c in pair):
        raise ValueError(f"channel indices in pairs must lie in [0, {channels}), got {list(pairs)}")
    sources = torch.cat([fmap[:, i] for i, _ in pairs])
    targets = torch.cat([fmap[:, j] for _, j in pairs])
    errors: dict[int, tuple[float, float]] = {}
    for d in kernel_sizes:
        d = _check_kernel_size(d)
        if d * d + 1 >= sources[0].numel():
            errors[d] = (math.nan, math.nan)
            continue
        # chunks of about 2**23 design-matrix entries (64 MiB) keep memory flat for large maps
        chunk = max(1, 2**23 // (sources[0].numel() * (d * d + 1)))
        chunks = zip(sources.split(chunk), targets.split(chunk), strict=True)
        fits = [_fit_batched(s, t, d) for s, t in chunks]
        mse = torch.cat([fit[2] for fit in fits])
        nmse = torch.cat([fit[3] for fit in fits])
        errors[d] = (mse.mean().item(), nmse.nanmean().item())
    return errors
