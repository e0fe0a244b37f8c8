"""The ratio-1 equivalence check of ``ghostify``.

With ``ratio=1`` a Ghost module is its primary branch: a conv with the host conv's hyper-parameters,
followed by the absorbed norm and activation. Built with the swaps ``ghostify`` decided on and loaded
with the host's own conv and norm weights, this *twin* must compute exactly what the host computes. If it
does not, a swap changed the network's function (a reader of the conv's or norm's output that the trace
missed, a module called through a reference that was not replaced, a weight read elsewhere...). The check
also confirms that every new Ghost module runs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ghost.surgery.dataflow import tensors_in
from ghost.surgery.plan import Swap, apply_swaps, load_host_weights

__all__ = ["TwinResult", "find_offenders", "run_twin"]


@dataclass
class TwinResult:
    """One run of a ratio-1 twin: whether it matched the host, by how much, and which Ghost modules ran."""

    matches: bool
    max_abs_diff: float
    ran: set[str]
    error: str = ""


def _max_abs_diff(expected: Any, actual: Any) -> float | None:
    """Largest absolute difference over the tensors of two outputs; ``None`` if their structure differs."""
    left, right = list(tensors_in(expected)), list(tensors_in(actual))
    if len(left) != len(right):
        return None
    if any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(left, right, strict=True)):
        return None
    diff = 0.0
    for a, b in zip(left, right, strict=True):
        if a.is_meta:
            continue
        if not a.is_floating_point() and not a.is_complex():
            diff = max(diff, 0.0 if torch.equal(a, b) else float("inf"))
        elif a.numel():
            diff = max(diff, float((a.double() - b.double()).abs().nan_to_num(nan=float("inf")).max()))
    return diff


def _tolerance(expected: Any) -> float:
    """The twin runs the host's very operations, so its outputs agree to float rounding: a bound of a few
    units in the last place of the largest output, for the outputs' precision."""
    floats = [t for t in tensors_in(expected) if t.is_floating_point() and not t.is_meta and t.numel()]
    if not floats:
        return 0.0
    scale = max(float(t.abs().max()) for t in floats)
    eps = max(torch.finfo(t.dtype).eps for t in floats)
    return 16 * eps * max(scale, 1.0)


def run_twin(host: nn.Module, swaps: Sequence[Swap], args: Sequence[Any], kwargs: Mapping[str, Any],
             expected: Any) -> TwinResult:
    """Build the ratio-1 twin of ``host`` under ``swaps``, run it on the example inputs in eval mode and
    compare its outputs with ``expected`` (the host's outputs on the same inputs)."""
    twin = copy.deepcopy(host)
    ghosts = apply_swaps(twin, swaps, unit_ratio=True)
    load_host_weights(ghosts, host, swaps)
    ran: set[str] = set()
    handles = [g.register_forward_hook(lambda *_, n=name: ran.add(n)) for name, g in ghosts.items()]
    twin.eval()
    try:
        with torch.no_grad():
            outputs = twin(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - a twin that fails to run is a mismatch, reported as such
        return TwinResult(False, float("inf"), ran, f"{type(error).__name__}: {error}")
    finally:
        for handle in handles:
            handle.remove()
    diff = _max_abs_diff(expected, outputs)
    if diff is None:
        return TwinResult(False, float("inf"), ran, "the outputs have a different structure or shape")
    return TwinResult(diff <= _tolerance(expected), diff, ran)


def find_offenders(host: nn.Module, swaps: Sequence[Swap], args: Sequence[Any], kwargs: Mapping[str, Any],
                   expected: Any) -> list[Swap]:
    """The swaps that make the twin differ from the host, found by bisection in execution order.

    Repeatedly finds the shortest prefix of the remaining swaps (on top of those already known to be
    harmless) whose twin mismatches; its last swap is an offender. Costs about ``log2(len(swaps))`` twin
    runs per offender.

    Raises:
        ValueError: if the host itself does not reproduce its outputs (a non-deterministic model).
    """
    def matches(subset: Sequence[Swap]) -> bool:
        return run_twin(host, subset, args, kwargs, expected).matches

    if not matches([]):
        raise ValueError(
            "the model does not reproduce its own outputs on the same example input (is it random in eval "
            "mode?), so no conversion can be checked against it; pass verify=False to convert unchecked"
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
