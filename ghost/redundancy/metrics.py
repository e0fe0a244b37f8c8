"""Redundancy metrics of a layer's feature maps ``[N, C, H, W]``.

Similarity between two channels is the absolute cosine similarity of their maps flattened over
``H * W``, computed per image and averaged over the batch: two maps that differ only by a scale
(of either sign) have similarity 1, orthogonal maps 0. A channel that is all zero in an image has
similarity 0 with every other channel in that image.
"""

from __future__ import annotations

import math

import torch

from ghost.redundancy._threads import single_threaded

__all__ = [
    "channel_similarity",
    "effective_rank",
    "near_duplicate_share",
    "nearest_neighbour_similarity",
    "top_pairs",
]


def _check_fmap(fmap: torch.Tensor) -> None:
    if fmap.dim() != 4 or 0 in fmap.shape:
        raise ValueError(
            f"feature maps must be a non-empty [N, C, H, W] tensor, got shape {tuple(fmap.shape)}; "
            "add a batch dimension with fmap[None] for a single image"
        )


def _check_similarity(sim: torch.Tensor) -> None:
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise ValueError(
            f"expected a [C, C] similarity matrix with C >= 2 (from channel_similarity), got shape {tuple(sim.shape)}"
        )


@single_threaded()
def channel_similarity(fmap: torch.Tensor) -> torch.Tensor:
    """The ``[C, C]`` matrix of absolute cosine similarity between channels, averaged over the batch.

    Args:
        fmap: feature maps ``[N, C, H, W]``.

    Returns:
        A symmetric float64 matrix with entries in ``[0, 1]`` and ones on the diagonal.
    """
    _check_fmap(fmap)
    flat = fmap.detach().flatten(2).to(torch.float64)
    unit = flat / flat.norm(dim=2, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    sim = (unit @ unit.transpose(1, 2)).abs().mean(0).clamp(max=1.0)
    sim.fill_diagonal_(1.0)
    return sim


def nearest_neighbour_similarity(sim: torch.Tensor) -> torch.Tensor:
    """For each channel, its similarity to the most similar *other* channel (``[C]``)."""
    _check_similarity(sim)
    off_diagonal = sim.clone()
    off_diagonal.fill_diagonal_(-math.inf)
    return off_diagonal.max(dim=1).values


def near_duplicate_share(sim: torch.Tensor, threshold: float = 0.9) -> float:
    """Share of channels (in ``[0, 1]``) whose nearest neighbour has similarity ``>= threshold``."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return (nearest_neighbour_similarity(sim) >= threshold).double().mean().item()


def top_pairs(sim: torch.Tensor, k: int, *, disjoint: bool = False) -> list[tuple[int, int, float]]:
    """The ``k`` most similar channel pairs ``(i, j, similarity)`` with ``i < j``, most similar first
    (ties broken by channel index). Fewer come back if the layer has fewer than ``k`` pairs.

    With ``disjoint=True`` no channel appears in two pairs (greedily: a pair is skipped if it shares a
    channel with a more similar one already taken), as in the paper's Figure 1.
    """
    _check_similarity(sim)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rows, cols = torch.triu_indices(sim.shape[0], sim.shape[0], offset=1)
    values = sim[rows, cols]
    # a stable sort on descending similarity keeps the (row, col) order among ties
    order = torch.sort(values, descending=True, stable=True).indices
    pairs: list[tuple[int, int, float]] = []
    used: set[int] = set()
    for index in order.tolist() if disjoint else order[:k].tolist():
        i, j = int(rows[index]), int(cols[index])
        if disjoint and (i in used or j in used):
            continue
        pairs.append((i, j, float(values[index])))
        used.update((i, j))
        if len(pairs) == k:
            break
    return pairs


@single_threaded()
def effective_rank(fmap: torch.Tensor) -> float:
    """Effective rank of the ``C x (H*W)`` activation matrix, averaged over the batch.

    The definition of Roy & Vetterli ("The effective rank: a measure of effective dimensionality",
    EUSIPCO 2007): with singular values ``sigma_i`` and ``p_i = sigma_i / sum(sigma)``, the effective
    rank is ``exp(-sum_i p_i log p_i)``. It lies between 1 (rank one: every channel a multiple of one
    map) and ``min(C, H*W)`` (all singular values equal). An all-zero matrix counts as 0. The matrix is
    not centred.
    """
    _check_fmap(fmap)
    flat = fmap.detach().flatten(2).to(torch.float64)
    # singular values as square roots of the eigenvalues of the smaller Gram matrix (much faster than a
    # batched SVD on the CPU; values below ~1e-8 of the largest, which barely move the entropy, are lost)
    gram = flat @ flat.transpose(1, 2) if flat.shape[1] <= flat.shape[2] else flat.transpose(1, 2) @ flat
    sigma = torch.linalg.eigvalsh(gram).clamp_min(0.0).sqrt()
    total = sigma.sum(dim=1, keepdim=True)
    p = sigma / total.clamp_min(torch.finfo(torch.float64).tiny)
    entropy = -(p * torch.log(p.clamp_min(torch.finfo(torch.float64).tiny))).sum(dim=1)
    ranks = torch.where(total.squeeze(1) > 0, torch.exp(entropy), torch.zeros_like(entropy))
    return ranks.mean().item()
