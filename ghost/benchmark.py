"""Wall-clock timing of model inference, for measured (not theoretical) speed-ups."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["inference_latency", "time_calls"]


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
