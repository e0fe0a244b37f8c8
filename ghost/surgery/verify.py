"""The ratio-1 equivalence check of ``ghostify`` (and the output comparison that ``prepare_for_inference`` reuses).

With ``ratio=1`` a Ghost module is its primary branch: a conv with the host conv's hyper-parameters,
followed by the absorbed norm and activation. Built with the swaps ``ghostify`` decided on and loaded
with the host's own conv and norm weights, this *twin* must compute exactly what the host computes. If it
does not, a swap changed the network's function (a reader of the conv's or norm's output that the trace
missed, a module called through a reference that was not replaced, a weight read elsewhere...).

What is compared: every leaf of the outputs (tensors and Python numbers, inside tuples, lists, mappings,
dataclasses and plain objects), each with its own tolerance, with inf/NaN positions compared by equality;
in eval mode and in train mode (each run on a fresh copy of the host, with the same random seed, so the
caller's model and its BatchNorm statistics are never touched); and how many times each Ghost module ran
against how many times its host conv ran. Code paths that the example input does not take are not checked.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ghost.surgery.dataflow import output_leaves
from ghost.surgery.plan import Swap, apply_swaps, load_host_weights

__all__ = ["MODES", "Reference", "TwinResult", "comparable_leaves", "compare_outputs", "find_offenders",
           "reference", "run_twin"]

MODES = ("eval", "train")
_SEED = 0


@dataclass
class TwinResult:
    """One run of a ratio-1 twin: whether it matched the host, by how much, and how often each Ghost module ran."""

    matches: bool
    max_abs_diff: float
    ran: dict[str, dict[str, int]] = field(default_factory=dict)  # mode -> swap name -> calls
    error: str = ""


@dataclass
class Reference:
    """The host's outputs per mode and how many times each of its convs ran, on the example inputs.

    Attributes:
        outputs: mode -> the host's return value in that mode.
        calls: mode -> conv name -> number of calls.
        skipped: mode -> why that mode could not be checked (the host itself fails to run in it).
    """

    outputs: dict[str, Any] = field(default_factory=dict)
    calls: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _comparable(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, bool, int, float, complex))


def comparable_leaves(outputs: Any) -> list[tuple[str, Any]]:
    """The leaves of ``outputs`` that carry values (tensors, numbers)."""
    return [(p, v) for p, v in output_leaves(outputs) if _comparable(v)]


def _tensor_diff(a: torch.Tensor, b: torch.Tensor, slack: float) -> tuple[float, bool]:
    """The largest finite difference of two tensors and whether it is within ``slack`` units of ``a``'s own
    scale; inf/NaN must sit at the same positions with the same values."""
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return math.inf, False
    if a.is_meta or not a.numel():
        return 0.0, True
    if not a.is_floating_point() and not a.is_complex():
        same = torch.equal(a, b)
        return (0.0 if same else math.inf), same
    a, b = a.detach(), b.detach()
    finite = torch.isfinite(a)
    if not torch.equal(finite, torch.isfinite(b)):
        return math.inf, False
    if not torch.equal(a[~finite].nan_to_num(nan=0.0), b[~finite].nan_to_num(nan=0.0)):
        return math.inf, False  # the same inf/NaN positions must hold the same +inf/-inf
    if not finite.any():
        return 0.0, True
    left, right = a[finite].to(torch.complex128 if a.is_complex() else torch.float64), b[finite].to(
        torch.complex128 if a.is_complex() else torch.float64)
    diff = float((left - right).abs().max())
    scale = max(float(left.abs().max()), 1.0)
    return diff, diff <= slack * torch.finfo(a.dtype).eps * scale


def _number_diff(a: Any, b: Any, slack: float) -> tuple[float, bool]:
    if type(a) is not type(b):
        return math.inf, False
    if isinstance(a, (bool, int)):
        return (0.0 if a == b else math.inf), a == b
    if math.isnan(abs(a)) or math.isnan(abs(b)) or math.isinf(abs(a)) or math.isinf(abs(b)):
        same = (a == b) or (math.isnan(abs(a)) and math.isnan(abs(b)))
        return (0.0 if same else math.inf), same
    diff = abs(a - b)
    return diff, diff <= slack * 2.0**-52 * max(abs(a), 1.0)


def _equal(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - a value that cannot be compared does not match
        return False


def compare_outputs(expected: Any, actual: Any, slack: float = 16.0) -> tuple[bool, float, str]:
    """Whether ``actual`` reproduces ``expected`` leaf by leaf: the same structure, every tensor within
    ``slack`` units in the last place of its own largest value (a per-tensor tolerance, so one large output
    does not hide a difference in a small one), inf/NaN at the same positions, every number and string equal
    up to the same tolerance. Returns ``(matches, largest finite difference, what differs)``."""
    left, right = output_leaves(expected), output_leaves(actual)
    if [p for p, _ in left] != [p for p, _ in right]:
        return False, math.inf, "the outputs have a different structure"
    worst, first_bad = 0.0, ""
    for (path, a), (_, b) in zip(left, right, strict=True):
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            diff, ok = _tensor_diff(a, b, slack)
        elif _comparable(a) and _comparable(b) and not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
            diff, ok = _number_diff(a, b, slack)
        else:
            ok = _equal(a, b)
            diff = 0.0 if ok else math.inf
        if math.isfinite(diff):
            worst = max(worst, diff)
        if not ok and not first_bad:
            first_bad = f"{path} differs" + (f" by {diff:.3g}" if math.isfinite(diff) else "")
    return not first_bad, worst, first_bad


def _devices(model: nn.Module) -> list[int]:
    return sorted({t.device.index or 0 for t in (*model.parameters(), *model.buffers()) if t.is_cuda})


def _run(model: nn.Module, mode: str, args: Sequence[Any], kwargs: Mapping[str, Any], counted: Mapping[str, nn.Module]
         ) -> tuple[Any, dict[str, int]]:
    """Run ``model`` once in ``mode`` without gradients and with a fixed random seed (so dropout draws the
    same masks for the host and its twin), counting the calls of the ``counted`` modules."""
    calls = dict.fromkeys(counted, 0)

    def count(name: str):
        def hook(*_: Any) -> None:
            calls[name] += 1
        return hook

    handles = [m.register_forward_pre_hook(count(n)) for n, m in counted.items()]
    model.train(mode == "train")
    try:
        with torch.random.fork_rng(devices=_devices(model)), torch.no_grad():
            torch.manual_seed(_SEED)
            outputs = model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, calls


def reference(host: nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Reference:
    """The host's outputs and conv call counts in each mode, each mode run on a fresh copy of ``host``."""
    ref = Reference()
    for mode in MODES:
        copied = copy.deepcopy(host)
        convs = {n: m for n, m in copied.named_modules() if isinstance(m, nn.Conv2d)}
        try:
            ref.outputs[mode], ref.calls[mode] = _run(copied, mode, args, kwargs, convs)
        except Exception as error:  # noqa: BLE001 - a mode the host cannot run in cannot be checked; said so
            if mode == "eval":
                raise
            ref.skipped[mode] = f"{type(error).__name__}: {str(error)[:200]}"
    return ref


def run_twin(host: nn.Module, swaps: Sequence[Swap], args: Sequence[Any], kwargs: Mapping[str, Any],
             ref: Reference) -> TwinResult:
    """Build the ratio-1 twin of ``host`` under ``swaps`` (a fresh one per mode), run it on the example
    inputs in every mode of ``ref`` and compare its outputs with the host's."""
    result = TwinResult(True, 0.0)
    for mode, expected in ref.outputs.items():
        twin = copy.deepcopy(host)
        ghosts = apply_swaps(twin, swaps, unit_ratio=True)
        load_host_weights(ghosts, host, swaps)
        try:
            outputs, result.ran[mode] = _run(twin, mode, args, kwargs, ghosts)
        except Exception as error:  # noqa: BLE001 - a twin that fails to run is a mismatch, reported as such
            return TwinResult(False, math.inf, result.ran, f"in {mode} mode, {type(error).__name__}: {error}")
        matches, diff, what = compare_outputs(expected, outputs)
        result.max_abs_diff = max(result.max_abs_diff, diff)
        if not matches:
            result.matches, result.error = False, f"in {mode} mode, {what}"
            return result
    return result


def find_offenders(host: nn.Module, swaps: Sequence[Swap], args: Sequence[Any], kwargs: Mapping[str, Any],
                   ref: Reference) -> list[Swap]:
    """The swaps that make the twin differ from the host, found by bisection in execution order.

    Repeatedly finds the shortest prefix of the remaining swaps (on top of those already known to be
    harmless) whose twin mismatches; its last swap is an offender. Costs about ``log2(len(swaps))`` twin
    runs per offender.

    Raises:
        ValueError: if the host itself does not reproduce its outputs (a non-deterministic model).
    """
    def matches(subset: Sequence[Swap]) -> bool:
        return run_twin(host, subset, args, kwargs, ref).matches

    unchanged = run_twin(host, [], args, kwargs, ref)
    if not unchanged.matches:
        raise ValueError(
            f"the model does not reproduce its own outputs on a copy run on the same example input with the same "
            f"random seed ({unchanged.error}): it depends on something besides its input and weights (state "
            f"kept between calls, an unseeded random source, the clock...), so no conversion can be checked "
            f"against it; pass verify=False to convert unchecked"
        )
    good: list[Swap] = []
    remaining = sorted(swaps, key=lambda s: s.order)
    offenders: list[Swap] = []
    while remaining and not matches(good + remaining):
        low, high = 0, len(remaining)  # good + remaining[:low] matches, good + remaining[:high] does not
        while high - low > 1:
            middle = (low + high) // 2
            if matches(good + remaining[:middle]):
                low = middle
            else:
                high = middle
        offenders.append(remaining[high - 1])
        good += remaining[: high - 1]
        remaining = remaining[high:]
    return offenders
