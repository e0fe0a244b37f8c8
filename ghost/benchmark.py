"""Wall-clock timing of model inference, for measured (not theoretical) speed-ups, and where a step's time goes.

:func:`time_interleaved` is how every comparison is timed: the calls being compared (a baseline and its Ghost
version, in one runtime) alternate call by call after their warmup, so that machine noise (other processes,
frequency changes) hits them alike. :func:`latency_stats` turns the times into a median and p10-p90.
:class:`ModelPair` names what is compared: a baseline and its Ghost version, built by :meth:`ModelPair.build`.
:func:`step_kind_times` splits the CPU time of a PyTorch step (a training step, say) into :data:`STEP_OP_KINDS`
with ``torch.profiler``.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ghost.models import GHOST_PREFIX, TIMM_PREFIX, create_model, default_input_size
from ghost.runs import DEFAULT_DW_SIZE, DEFAULT_RATIO

__all__ = [
    "TIMM_PREFIX",
    "STEP_OP_KINDS",
    "ModelPair",
    "create_benchmark_model",
    "inference_latency",
    "latency_stats",
    "step_kind_times",
    "step_op_kind",
    "time_calls",
    "time_interleaved",
]


STEP_OP_KINDS = ("conv", "depthwise conv", "batchnorm", "activation", "add/sum", "concat/slice", "casts/copies",
                 "linear", "pooling", "optimizer", "other")
"""What :func:`step_op_kind` returns for a PyTorch operator: dense and grouped convolutions (forward and
backward); depthwise ones (one input channel per filter, as the Ghost module's cheap operation); BatchNorm;
activations and their backward; elementwise additions and sums (among them autograd's sum of the gradients of a
tensor read twice, as the Ghost module's intrinsic maps are); concatenations and slices; dtype casts and copies;
matrix products; pooling; the optimizer's update; everything else (the loss, allocation, autograd's own work)."""

_KIND_PATTERNS = (  # the first match wins: "addmm" is linear before it is an addition
    ("optimizer", r"optimizer|_foreach"),
    ("batchnorm", r"batch_?norm"),
    ("conv", r"conv"),
    ("linear", r"^(addmm|mm|bmm|linear|matmul|t)(backward\d*)?$"),
    ("activation", r"relu|threshold|clamp|hardswish|hardsigmoid|sigmoid|silu|gelu|hardtanh"),
    ("concat/slice", r"^(cat|slice|narrow|split|split_with_sizes|chunk|stack|unbind)(_?backward\d*)?$"),
    ("add/sum", r"^(add|add_|sum|sub|sub_)(backward\d*)?$"),
    ("casts/copies", r"^(_to_copy|copy_|to|clone|contiguous)(backward\d*)?$"),
    ("pooling", r"pool|^mean(backward\d*)?$"),
)


def _base_name(name: str) -> str:
    """``aten::native_batch_norm`` -> ``native_batch_norm``; ``autograd::engine::evaluate_function:
    ConvolutionBackward0`` -> ``convolutionbackward0``: the operator's own name, in lower case."""
    return name.rsplit(": ", 1)[-1].rsplit("::", 1)[-1].strip().lower()


def _is_depthwise(base: str, input_shapes: Sequence[Sequence[int]]) -> bool:
    """Whether a convolution's recorded shapes are depthwise: weight ``(C_out, 1, k, k)`` on a multi-channel input
    (forward ops take ``input, weight``; ``convolution_backward`` takes ``grad_output, input, weight``)."""
    first = 1 if "backward" in base else 0
    if len(input_shapes) < first + 2:
        return False
    data, weight = input_shapes[first], input_shapes[first + 1]
    return len(data) == 4 and len(weight) == 4 and weight[1] == 1 and data[1] > 1


def step_op_kind(name: str, input_shapes: Sequence[Sequence[int]] = ()) -> str:
    """The :data:`STEP_OP_KINDS` entry of a ``torch.profiler`` event name (``aten::...``, autograd nodes,
    ``Optimizer.step#...``); a convolution is depthwise by its ``input_shapes`` (as recorded with
    ``record_shapes=True``)."""
    base = _base_name(name)
    for kind, pattern in _KIND_PATTERNS:
        if re.search(pattern, base):
            return "depthwise conv" if kind == "conv" and _is_depthwise(base, input_shapes) else kind
    return "other"


def step_kind_times(fn: Callable[[], object], warmup: int = 1, repeats: int = 3) -> dict[str, float]:
    """Milliseconds of CPU self time per call of ``fn`` in each of :data:`STEP_OP_KINDS` (every kind present).

    ``fn`` is called ``warmup`` times untimed, then ``repeats`` times under ``torch.profiler`` (CPU activities,
    shapes recorded); each operator's self time (its own, its children's excluded) goes to its kind, so the
    kinds add up to the time spent in operators. Python between operators is not counted, and the profiler
    slows each operator a little: compare kinds and models profiled alike, and take speed from
    :func:`time_interleaved`.
    """
    _check_counts(warmup, repeats)
    for _ in range(warmup):
        fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(repeats):
            fn()
    out = dict.fromkeys(STEP_OP_KINDS, 0.0)
    for event in prof.key_averages(group_by_input_shape=True):
        out[step_op_kind(event.key, event.input_shapes)] += event.self_cpu_time_total / 1000 / repeats
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_counts(warmup: int, repeats: int) -> None:
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int = 3, repeats: int = 10) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls (CUDA synchronised)."""
    return time_interleaved({"fn": fn}, device, warmup, repeats)["fn"]


def time_interleaved(
    calls: Mapping[str, Callable[[], object]],
    device: torch.device | str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
) -> dict[str, list[float]]:
    """Seconds taken by ``repeats`` calls of each of ``calls``, the calls alternating one by one.

    Each callable first gets ``warmup`` untimed calls; then round ``i`` times one call of each, in the given
    order on even rounds and in reverse order on odd ones (ABBA), so that slow drifts and bursts of noise
    fall on all of them alike. CUDA is synchronised around every timed call.

    Returns:
        ``{key: [seconds per call, in call order]}`` with ``repeats`` entries per key.
    """
    _check_counts(warmup, repeats)
    if not calls:
        raise ValueError("time_interleaved needs at least one callable")
    device = torch.device(device)
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {key: [] for key in calls}
    order = list(calls)
    for i in range(repeats):
        for key in order if i % 2 == 0 else reversed(order):
            fn = calls[key]
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - start)
    return times


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """Median, 10th and 90th percentile, in milliseconds, of per-call times given in seconds."""
    if not seconds:
        raise ValueError("latency_stats needs at least one time")
    times = sorted(1000 * t for t in seconds)
    deciles = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
    return {"median_ms": statistics.median(times), "p10_ms": deciles[0], "p90_ms": deciles[-1]}


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

    The model is moved to ``device`` and run under ``torch.inference_mode`` on a random batch. For other
    runtimes (ONNX Runtime, OpenVINO, ``torch.compile``) see :func:`ghost.runtimes.build_runner`.
    """
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).eval()
    x = torch.randn(batch_size, *input_size, device=device).contiguous(memory_format=memory_format)
    with torch.inference_mode():
        return latency_stats(time_calls(lambda: model(x), device, warmup, repeats))


def create_benchmark_model(name: str, *, ratio: int = DEFAULT_RATIO, dw_size: int = DEFAULT_DW_SIZE) -> nn.Module:
    """A randomly initialised :func:`ghost.models.create_model` model in eval mode (``timm/<name>`` for a timm
    model); a ``ghost_<name>`` is built with ``ratio`` and ``dw_size``.

    Raises:
        ValueError: unknown name, or ``timm/...`` without timm installed.
    """
    if name.startswith(GHOST_PREFIX):
        return create_model(name, ratio=ratio, dw_size=dw_size).eval()
    return create_model(name).eval()


@dataclass(frozen=True)
class ModelPair:
    """A baseline and the Ghost model compared with it, at one input size.

    Attributes:
        label: how the comparison is named in tables (the baseline's name for a ghostified pair).
        baseline, ghost: model names for :func:`create_benchmark_model`.
        ratio, dw_size: ``s`` and ``d`` of a ghostified pair; ``None`` for a separately designed Ghost model
            (e.g. GhostNet against MobileNetV3).
        input_size: ``(C, H, W)``.
    """

    label: str
    baseline: str
    ghost: str
    ratio: int | None
    dw_size: int | None
    input_size: tuple[int, int, int]

    @classmethod
    def parse(cls, entry: str, *, ratio: int = DEFAULT_RATIO, dw_size: int = DEFAULT_DW_SIZE) -> ModelPair:
        """Parse ``NAME`` (``NAME`` against ``ghost_NAME`` built with ``ratio`` and ``dw_size``) or
        ``BASELINE:GHOST`` (two separate models, e.g. ``mobilenet_v3_large:ghostnet`` or
        ``mobilenet_v3_large:timm/ghostnet_100``), checking that the names exist. Input sizes are
        :func:`ghost.models.default_input_size`.

        Raises:
            ValueError: unknown name, ``timm/...`` without timm, or models of different input sizes.
        """
        entry = entry.strip()
        if entry.count(":") > 1 or not all(entry.split(":")):
            raise ValueError(f"expected NAME or BASELINE:GHOST, got {entry!r}")
        if ":" in entry:
            baseline, ghost = entry.split(":")
            sizes = {default_input_size(baseline), default_input_size(ghost)}
            if len(sizes) > 1:
                raise ValueError(f"{baseline} and {ghost} take different input sizes {sorted(sizes)}")
            return cls(f"{ghost} vs {baseline}", baseline, ghost, None, None, sizes.pop())
        return cls(entry, entry, GHOST_PREFIX + entry, ratio, dw_size, default_input_size(entry))

    def build(self) -> dict[str, nn.Module]:
        """``{"baseline": model, "ghost": model}``, randomly initialised, in eval mode."""
        options = {"ratio": self.ratio or DEFAULT_RATIO, "dw_size": self.dw_size or DEFAULT_DW_SIZE}
        return {"baseline": create_benchmark_model(self.baseline, **options),
                "ghost": create_benchmark_model(self.ghost, **options)}
