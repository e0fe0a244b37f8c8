"""Wall-clock timing of model inference, for measured (not theoretical) speed-ups."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ghost_time_breakdown", "inference_latency", "time_calls"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int = 3, repeats: int = 10) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls (CUDA synchronised)."""
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def inference_latency(
    model: nn.Module,
    input_size: tuple[int, int, int],
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    *,
    warmup: int = 3,
    repeats: int = 10,
    channels_last: bool = False,
) -> dict[str, float]:
    """Median, 10th and 90th percentile latency (milliseconds per batch) of ``model`` in eval mode.

    The model is moved to ``device`` and run under ``torch.inference_mode`` on a random batch.
    """
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).eval()
    x = torch.randn(batch_size, *input_size, device=device).contiguous(memory_format=memory_format)
    with torch.inference_mode():
        times = sorted(1000 * t for t in time_calls(lambda: model(x), device, warmup, repeats))
    deciles = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
    return {"median_ms": statistics.median(times), "p10_ms": deciles[0], "p90_ms": deciles[-1]}


def ghost_time_breakdown(
    model: nn.Module,
    input_size: tuple[int, int, int],
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    *,
    warmup: int = 2,
    repeats: int = 5,
) -> dict[str, float]:
    """Where a Ghost model's forward time goes: median milliseconds per forward pass spent in the primary
    branches, in the cheap branches, in the Ghost modules' concatenation and slicing, and elsewhere.

    Every Ghost module and branch is timed with hooks (synchronising CUDA around each), which adds overhead:
    use the parts to see proportions, and :func:`inference_latency` for the latency itself.
    """
    from ghost.layers import GhostConv2d

    device = torch.device(device)
    model = model.to(device).eval()
    ghosts = [m for m in model.modules() if isinstance(m, GhostConv2d)]
    if not ghosts:
        raise ValueError("the model has no GhostConv2d: convert it with ghost.ghostify first")
    parts = {"ghost": 0.0, "primary": 0.0, "cheap": 0.0}
    starts: dict[int, float] = {}

    def pre(module, _inputs):
        _sync(device)
        starts[id(module)] = time.perf_counter()

    def post(key: str):
        def hook(module, _inputs, _output):
            _sync(device)
            parts[key] += time.perf_counter() - starts.pop(id(module))

        return hook

    handles = []
    for ghost in ghosts:
        branches = [("ghost", ghost), ("primary", ghost.primary_conv)]
        if ghost.cheap_operation is not None:
            branches.append(("cheap", ghost.cheap_operation))
        for key, module in branches:
            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post(key))]
    x = torch.randn(batch_size, *input_size, device=device)
    samples: list[dict[str, float]] = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                for key in parts:
                    parts[key] = 0.0
                (total,) = time_calls(lambda: model(x), device, warmup=0, repeats=1)
                if i >= warmup:
                    samples.append({**parts, "total": total})
    finally:
        for handle in handles:
            handle.remove()

    def median_ms(key: str) -> float:
        return 1000 * statistics.median(s[key] for s in samples)

    ghost_ms, primary_ms, cheap_ms, total_ms = (median_ms(k) for k in ("ghost", "primary", "cheap", "total"))
    return {
        "total_ms": total_ms,
        "primary_ms": primary_ms,
        "cheap_ms": cheap_ms,
        "concat_slice_ms": ghost_ms - primary_ms - cheap_ms,
        "rest_ms": total_ms - ghost_ms,
    }
