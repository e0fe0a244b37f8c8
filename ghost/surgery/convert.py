"""``ghostify``: convert any CNN built from ``nn.Conv2d`` into its Ghost version, and prove the conversion.

How it works:

1. The model runs once on example inputs under a data-flow trace (:mod:`ghost.surgery.dataflow`) that sees
   every module call *and* every torch operation, so it knows each conv's output size and every reader of
   each conv's and BatchNorm's output, module or plain code.
2. Each conv is replaced, or kept with a reason (a subclass with its own forward, part of an existing Ghost
   module, never run, the stem, depthwise/grouped, registered under several names, weight shared or read
   elsewhere, no MAC saving...).
3. Under ``policy="paper"`` a conv whose output is read only by its BatchNorm, and whose BatchNorm's output
   is read only by an activation module, has them absorbed into both branches of its Ghost module; the
   host's modules become ``nn.Identity``. Any other reader keeps them in the host, and the record says so.
4. The ratio-1 check (:mod:`ghost.surgery.verify`): the same swaps with ``ratio=1``, loaded with the host's
   conv/BN weights, must reproduce every output leaf of the host in eval and train mode, and each Ghost module
   must run as often as its host conv. Swaps that do not are found by bisection and kept.

Hooks on a conv keep it; hooks or extra state on a norm keep the norm in the host; parts that cannot be
converted exactly (:mod:`ghost.surgery.unsupported`) are refused with the cause.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

import torch
from torch import nn

from ghost.complexity import conv2d_macs, count_params, example_input, module_macs
from ghost.layers import GhostConv2d, check_dw_size, check_ratio
from ghost.surgery.dataflow import Call, Flow, tensors_in, trace_dataflow
from ghost.surgery.plan import Swap, apply_swaps
from ghost.surgery.report import GhostReport, LayerRecord
from ghost.surgery.unsupported import hooks_text, norm_state_reason, refuse_unsupported
from ghost.surgery.verify import Reference, TwinResult, comparable_leaves, find_offenders, reference, run_twin

__all__ = ["POLICIES", "example_call", "ghostify", "traced"]

POLICIES = ("paper", "dropin")
_OVERRIDE_KEYS = ("ratio", "dw_size")
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Hardswish, nn.GELU, nn.Mish, nn.ELU, nn.Hardtanh)
"""Activation modules the paper policy absorbs into a Ghost module."""
_IDEMPOTENT = (nn.ReLU, nn.ReLU6, nn.Hardtanh)


@dataclass
class _Model:
    """What the decisions need to know about the host model."""

    flow: Flow
    names: dict[int, list[str]]  # id(module) -> every name it is registered under
    param_owners: dict[int, list[str]]  # id(parameter) -> every module name holding it
    ghost_parents: dict[str, str]  # conv name -> the existing Ghost module it belongs to, described
    stems: set[int]  # ids of the convs reading the model's input


def ghostify(
    model: nn.Module,
    ratio: int = 2,
    dw_size: int = 3,
    *,
    policy: str = "paper",
    replace_stem: bool = False,
    convert_grouped: bool = False,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    overrides: Mapping[str, Mapping[str, int]] | None = None,
    input_size: Sequence[int] | None = None,
    example_inputs: torch.Tensor | Sequence[Any] | None = None,
    example_kwargs: Mapping[str, Any] | None = None,
    init: Callable[[nn.Module], None] | None = None,
    verify: bool = True,
    inplace: bool = False,
) -> nn.Module:
    """Replace a model's ``nn.Conv2d`` layers with Ghost modules, and check that nothing else changed.

    Args:
        model: any module whose convolutions are ``nn.Conv2d``.
        ratio: ``s`` for every replaced conv (unless overridden).
        dw_size: ``d`` for every replaced conv (unless overridden).
        policy: ``"paper"`` (absorb the conv's own BN/activation into the module) or ``"dropin"``.
        replace_stem: also replace the conv(s) reading the input (kept by default, as in the paper).
        convert_grouped: also try grouped (non-depthwise) convs; depthwise convs are always kept.
        include: fnmatch patterns over conv module names; only matching convs are considered.
        exclude: patterns of convs to keep.
        overrides: ``{pattern: {"ratio": s, "dw_size": d}}`` applied, in order, to matching convs.
        input_size: ``(C, H, W)`` of a zero example image; default ``(in_channels of the first conv, 224,
            224)``. For models that do not take one image tensor, pass ``example_inputs`` instead.
        example_inputs: the positional arguments of one forward call (a tensor or a tuple).
        example_kwargs: keyword arguments of that call.
        init: called on every new Ghost module right after it is built, e.g.
            :func:`ghost.models.init.kaiming_normal_fan_out`, to initialise the new layers like the host's
            (``create_model("ghost_<name>")`` passes ``<name>``'s scheme). ``None``: PyTorch's default init.
        verify: run the ratio-1 check (on by default): the converted structure with ``ratio=1``, loaded
            with the host's conv/BN weights, must reproduce every output leaf of the host on the example inputs,
            in eval and in train mode (each on copies: ``model`` and its statistics are left untouched), and
            every new Ghost module must run as often as its host conv. Layers that break it are kept, with the
            reason in the report. It costs four deep copies and four forward passes of the model, plus about
            ``log2(#convs)`` more per offending layer. It covers the code paths the example inputs take, no
            others. ``False`` skips it (the report then says "not checked").
        inplace: convert ``model`` itself instead of a deep copy.

    Returns:
        The converted model; its :class:`GhostReport` is attached as ``model.ghost_report``.
        ``ghostify(fresh_model, same options)`` rebuilds the same structure, so a converted model's
        ``state_dict`` loads into it.

    Raises:
        ValueError: no ``nn.Conv2d`` in the model, an unknown policy or override key, a pattern that
            matches no conv, an invalid ratio/dw_size, example inputs the model cannot run on, no conv
            left to replace, an output with nothing to compare, or a part that cannot be converted exactly
            (eager-quantization observers, old-style ``weight_norm``/``spectral_norm``, a TorchScript
            submodule, ``torch.inference_mode`` in ``forward``).
    """
    _check_options(policy, ratio, dw_size, overrides)
    if torch.is_inference_mode_enabled():
        raise ValueError("ghostify was called under torch.inference_mode(), whose tensors carry no version counter, "
                         "which its data-flow trace needs; call it outside inference_mode (torch.no_grad() is fine)")
    refuse_unsupported(model, "ghostify")
    overrides = dict(overrides or {})
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if not convs:
        raise ValueError("the model has no nn.Conv2d to convert")
    for kind, patterns in (("include", include or ()), ("exclude", exclude), ("overrides", overrides)):
        _check_patterns(kind, patterns, list(convs))
    if not inplace:
        model = copy.deepcopy(model)
        convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    args, kwargs, inputs = example_call(model, next(iter(convs.values())), input_size, example_inputs, example_kwargs)
    host = _describe(model, args, kwargs, inputs)

    report = GhostReport(inputs, policy, init=getattr(init, "__name__", repr(init)) if init else "PyTorch default")
    records: dict[str, LayerRecord] = {}
    swaps: list[Swap] = []
    for name, conv in convs.items():
        s, d = ratio, dw_size
        for pattern, values in overrides.items():
            if fnmatch(name, pattern):
                s, d = values.get("ratio", s), values.get("dw_size", d)
        records[name] = _record(name, conv, host.flow)
        reason = _keep_reason(name, conv, host, s, d, replace_stem, convert_grouped, include, exclude)
        if reason:
            records[name].reason = reason
        else:
            swaps.append(_swap(name, conv, host, s, d, policy, records[name]))
    if verify:
        swaps = _verified(model, swaps, records, args, kwargs, host.flow.outputs, report)
    else:
        report.verification = "not checked (verify=False)"
    if not swaps:
        raise ValueError(
            "ghostify replaced no conv: every nn.Conv2d was kept (see the reasons, and include/exclude, "
            "replace_stem, convert_grouped); " + "; ".join(f"{r.name}: {r.reason}" for r in list(records.values())[:3])
        )
    modules = dict(model.named_modules())
    ghosts = apply_swaps(model, swaps, init=init)
    for swap in swaps:
        _fill_replaced(records[swap.name], swap, ghosts[swap.name], modules, host.flow)
    _totals(report, list(records.values()), model, modules, host.flow)
    model.ghost_report = report
    return model


def _check_options(policy: str, ratio: int, dw_size: int, overrides: Mapping[str, Mapping[str, int]] | None) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    check_ratio(ratio)
    check_dw_size(dw_size)
    for pattern, values in (overrides or {}).items():
        unknown = set(values) - set(_OVERRIDE_KEYS)
        if unknown:
            raise ValueError(f"overrides[{pattern!r}] has unknown keys {sorted(unknown)}; allowed: {_OVERRIDE_KEYS}")
        check_ratio(values.get("ratio", ratio))
        check_dw_size(values.get("dw_size", dw_size))


def _check_patterns(kind: str, patterns: Iterable[str], conv_names: Sequence[str]) -> None:
    for pattern in patterns:
        if not any(fnmatch(n, pattern) for n in conv_names):
            example = ", ".join(conv_names[:4])
            raise ValueError(
                f"{kind} pattern {pattern!r} matches no nn.Conv2d of the model; patterns are shell-style "
                f"(fnmatch) over module names such as: {example}"
            )


def example_call(
    model: nn.Module, first_conv: nn.Conv2d, input_size: Sequence[int] | None,
    example_inputs: torch.Tensor | Sequence[Any] | None, example_kwargs: Mapping[str, Any] | None,
) -> tuple[tuple[Any, ...], dict[str, Any], str]:
    """The example call's positional and keyword arguments, and a description of their shapes."""
    if input_size is not None and (example_inputs is not None or example_kwargs is not None):
        raise ValueError("pass either input_size or example_inputs/example_kwargs, not both")
    if example_inputs is None and example_kwargs is None:
        size = tuple(input_size) if input_size is not None else (first_conv.in_channels, 224, 224)
        return (_random_image(model, size),), {}, "x".join(map(str, size))
    if isinstance(example_inputs, torch.Tensor):
        args = (example_inputs,)
    elif example_inputs is None or isinstance(example_inputs, (tuple, list)):
        args = tuple(example_inputs or ())
    else:
        raise ValueError(f"example_inputs must be a tensor or a tuple of positional arguments, got "
                         f"{type(example_inputs).__name__}")
    kwargs = dict(example_kwargs or {})
    if any(t.is_inference() for t in tensors_in((args, kwargs))):
        raise ValueError("example inputs made under torch.inference_mode() carry no version counter, which the "
                         "trace needs: create them outside inference_mode, or pass t.clone() made outside it")
    shapes = [f"{'x'.join(map(str, t.shape))}" for t in tensors_in((args, kwargs))]
    return args, kwargs, ", ".join(shapes) or "no tensors"


def _random_image(model: nn.Module, size: tuple[int, ...]) -> torch.Tensor:
    """A batch of one standard-normal image (fixed seed, private generator) on the model's device and dtype;
    random rather than zero, so that the ratio-1 check compares non-constant feature maps."""
    zeros = example_input(model, size)
    if zeros.is_meta:
        return zeros
    noise = torch.randn(zeros.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return noise.to(zeros.device, zeros.dtype)


def traced(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], inputs: str, caller: str) -> Flow:
    """:func:`trace_dataflow` of one example call, its failures re-raised as ``ValueError`` with the cause."""
    try:
        return trace_dataflow(model, args, kwargs)
    except Exception as error:  # noqa: BLE001 - re-raised with the fix
        if "Inference tensors" in str(error):
            raise ValueError(
                f"the model's forward runs (part of) itself under torch.inference_mode(), whose tensors carry no "
                f"version counter, which {caller}'s data-flow trace needs; use torch.no_grad() there instead"
            ) from error
        raise ValueError(
            f"{caller} runs the model once to learn each conv's readers and output size, and running it on "
            f"the example input ({inputs}) failed ({type(error).__name__}: {error}); if that input is not what "
            f"the model expects, pass input_size=(C, H, W), or its arguments as example_inputs/example_kwargs"
        ) from error


def _describe(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], inputs: str) -> _Model:
    """Trace the model once and index what the per-conv decisions look up."""
    flow = traced(model, args, kwargs, inputs, "ghostify")
    names: dict[int, list[str]] = {}
    param_owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
        for param in module.parameters(recurse=False):
            param_owners.setdefault(id(param), []).append(name)
    ghost_parents = {
        f"{name}.{child}" if name else child: f"{name} ({type(module).__name__})"
        for name, module in model.named_modules()
        if hasattr(module, "primary_conv") and hasattr(module, "cheap_operation")
        for child, sub in module.named_modules() if child and isinstance(sub, nn.Conv2d)
    }
    convs = [c for c in flow.calls if isinstance(c.module, nn.Conv2d)]
    stems = {id(c.module) for c in convs if c.index in flow.input_readers}
    if not stems and convs:  # the model transforms its input first: the first conv that runs reads the image
        stems = {id(convs[0].module)}
    return _Model(flow, names, param_owners, ghost_parents, stems)


def _record(name: str, conv: nn.Conv2d, flow: Flow) -> LayerRecord:
    record = LayerRecord(name, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.groups,
                         replaced=False, reason="")
    record.params_before = record.params_after = count_params(conv)
    record.macs_before = record.macs_after = sum(conv2d_macs(conv, c.output_shape) for c in flow.calls_of(conv))
    return record


def ghost_macs(conv: nn.Conv2d, ratio: int, dw_size: int, output_shape: Sequence[int]) -> int:
    """MACs of the Ghost module that would replace ``conv``, for one call producing ``output_shape``: the
    conv's own count (:func:`ghost.complexity.conv2d_macs`, linear in its output channels) scaled to the
    ``init_channels`` intrinsic maps, plus a ``d x d`` depthwise conv making ``(s - 1) * init_channels`` maps."""
    init_channels = math.ceil(conv.out_channels / ratio)
    primary = conv2d_macs(conv, output_shape) // conv.out_channels * init_channels
    cheap = output_shape[-2] * output_shape[-1] * init_channels * (ratio - 1) * dw_size * dw_size
    return primary + cheap


def _keep_reason(name: str, conv: nn.Conv2d, host: _Model, ratio: int, dw_size: int, replace_stem: bool,
                 convert_grouped: bool, include: Sequence[str] | None, exclude: Sequence[str]) -> str:
    """Why ``conv`` must stay as it is ("" if it can be replaced)."""
    calls = host.flow.calls_of(conv)
    if name in host.ghost_parents:
        return f"part of an existing Ghost module, {host.ghost_parents[name]}: never converted again"
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} subclasses nn.Conv2d with its own forward"
    hooks = hooks_text(conv)
    if hooks:
        return f"it has {hooks} registered on it, which a Ghost module in its place would not run the same way"
    if include is not None and not any(fnmatch(name, p) for p in include):
        return "not matched by include"
    if any(fnmatch(name, p) for p in exclude):
        return "matched by exclude"
    sharing = _sharing_reason(name, conv, host)
    if sharing:
        return sharing
    if not calls:
        return "never ran on the example input (in eval mode), so its replacement could not be checked"
    if id(conv) in host.stems and not replace_stem:
        return "stem conv reading the image (pass replace_stem=True to replace it)"
    if conv.groups > 1 and conv.groups == conv.in_channels:
        return "depthwise conv: already cheap"
    if conv.groups > 1 and not convert_grouped:
        return f"grouped conv (groups={conv.groups}): already cheap; pass convert_grouped=True"
    return _shape_reason(conv, calls, ratio, dw_size)


def _sharing_reason(name: str, conv: nn.Conv2d, host: _Model) -> str:
    """Why replacing ``conv`` would break something it shares (a second name, a tied weight, a weight read)."""
    aliases = host.names[id(conv)]
    if len(aliases) > 1:
        return (f"registered under several names ({', '.join(aliases)}): replacing one would leave the others "
                f"pointing at the old conv")
    for param in conv.parameters(recurse=False):
        others = [n for n in host.param_owners[id(param)] if n != name]
        if others:
            return f"its parameters are tied to {', '.join(others)}: replacing it would untie them"
        outside = [r for r in host.flow.param_readers.get(id(param), ())
                   if not any(host.flow.within(r, c.index) for c in host.flow.calls_of(conv))]
        if outside:
            return (f"its weight is read outside its own forward (by {_readers_text(host, outside)}): a Ghost "
                    f"module has no single weight to read")
    return ""


def _shape_reason(conv: nn.Conv2d, calls: list[Call], ratio: int, dw_size: int) -> str:
    init_channels = math.ceil(conv.out_channels / ratio)
    if init_channels % conv.groups:
        return (f"groups={conv.groups} does not divide the {init_channels} intrinsic maps "
                f"(ceil({conv.out_channels}/{ratio}))")
    before = sum(conv2d_macs(conv, c.output_shape) for c in calls)
    after = sum(ghost_macs(conv, ratio, dw_size, c.output_shape) for c in calls)
    if ratio > 1 and after >= before:
        return f"a Ghost module (s={ratio}, d={dw_size}) would not reduce its MACs ({before:,} -> {after:,})"
    return ""


def _readers_text(host: _Model, readers: Iterable[int]) -> str:
    labels = []
    for reader in dict.fromkeys(readers):
        if reader < 0:
            labels.append("the model's output")
        else:
            module = host.flow.calls[reader].module
            name = host.names[id(module)][0] or "the model's forward"
            labels.append(f"{name} ({type(module).__name__})")
    return ", ".join(labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")


def _swap(name: str, conv: nn.Conv2d, host: _Model, ratio: int, dw_size: int, policy: str,
          record: LayerRecord) -> Swap:
    """The swap for a replaceable conv; under the paper policy, with its BN and activation if they are
    its own (nothing else reads the conv's or the BN's output)."""
    calls = host.flow.calls_of(conv)
    order = calls[0].index
    if policy == "dropin":
        return Swap(name, ratio, dw_size, None, None, (), order)
    if len(calls) > 1:
        record.reason = "called several times: BN/act not absorbed"
        return Swap(name, ratio, dw_size, None, None, (), order)
    norm_call, note = _own_follower(host, calls[0], nn.BatchNorm2d, "BatchNorm")
    if norm_call is None or norm_call.module.num_features != conv.out_channels:
        record.reason = note
        return Swap(name, ratio, dw_size, None, None, (), order)
    norm = host.names[id(norm_call.module)][0]
    state = norm_state_reason(norm_call.module)
    if state:
        record.reason = f"BatchNorm {norm} not absorbed: {state}"
        return Swap(name, ratio, dw_size, None, None, (), order)
    act_call, note = _own_follower(host, norm_call, ACTIVATIONS, "activation")
    notes = [note] if note else []
    act = absorbed_act = None
    if act_call is not None and hooks_text(act_call.module):
        notes.append(f"{host.names[id(act_call.module)][0]} has {hooks_text(act_call.module)}: not absorbed")
        act_call = None
    if act_call is not None:
        act = host.names[id(act_call.module)][0]
        if len(host.flow.calls_of(act_call.module)) == 1 and len(host.names[id(act_call.module)]) == 1:
            absorbed_act = act
        elif isinstance(act_call.module, _IDEMPOTENT):
            notes.append(f"{act} is shared, so it stays; its copy inside the module changes nothing")
        else:
            notes.append(f"{act} is shared and not idempotent: not absorbed")
            act = None
    if type(norm_call.module) is not nn.BatchNorm2d:
        notes.append(f"{norm} is a {type(norm_call.module).__name__} (fused norm-activation): its copies keep "
                     f"their activation")
    record.reason = "; ".join(notes)
    absorbed = (norm,) + ((absorbed_act,) if absorbed_act else ())
    return Swap(name, ratio, dw_size, norm, act, absorbed, order)


def _own_follower(host: _Model, producer: Call, kind: type | tuple[type, ...],
                  label: str) -> tuple[Call | None, str]:
    """The call of a ``kind`` module that alone reads ``producer``'s output, called once and registered
    under one name; else ``None`` and, if such a module reads it but cannot be absorbed, why."""
    flow = host.flow
    readers = flow.readers_outside(producer.output, producer)
    candidates = (flow.enclosing(r, kind) for r in readers)
    follower = next((c for c in candidates if c is not None and not flow.within(producer.index, c.index)), None)
    if follower is None:
        return None, ""
    others = [r for r in readers if not flow.within(r, follower.index)]
    if others:
        return None, (f"{host.names[id(producer.module)][0]}'s output is also read by "
                      f"{_readers_text(host, others)}: {label} not absorbed")
    if kind is nn.BatchNorm2d and (len(flow.calls_of(follower.module)) > 1 or len(host.names[id(follower.module)]) > 1):
        return None, f"its BatchNorm {host.names[id(follower.module)][0]} is shared: not absorbed"
    return follower, ""


def _verified(model: nn.Module, swaps: list[Swap], records: dict[str, LayerRecord], args: tuple[Any, ...],
              kwargs: dict[str, Any], expected: Any, report: GhostReport) -> list[Swap]:
    """The swaps that pass the ratio-1 check; the others are kept, with the reason in their records."""
    if any(t.is_meta for t in tensors_in(expected)):
        report.verification = "structure only: meta tensors carry no values to compare"
        return swaps
    if not comparable_leaves(expected):
        raise ValueError(
            f"the model's output ({type(expected).__name__}) holds no tensor or number that the ratio-1 check can "
            f"compare, so the conversion cannot be proven; return the results as tensors (in tuples, lists, dicts "
            f"or dataclasses), or pass verify=False to convert unchecked"
        )
    ref = reference(model, args, kwargs)

    def keep(dropped: list[Swap], reason: str) -> list[Swap]:
        for swap in dropped:
            records[swap.name].reason = reason
        return [s for s in swaps if s not in dropped]

    result = run_twin(model, swaps, args, kwargs, ref)
    miscounted = _miscounted(swaps, result, ref)  # the modes that ran: a twin that crashed may miss some
    for swap, text in miscounted:
        swaps = keep([swap], text)
    if miscounted:
        result = run_twin(model, swaps, args, kwargs, ref)
    if not result.matches:
        swaps = keep(find_offenders(model, swaps, args, kwargs, ref),
                     "replacing it changed the model's outputs in the ratio-1 check (something the trace could "
                     "not see reads its output or weights)")
        result = run_twin(model, swaps, args, kwargs, ref)
    if not result.matches:
        raise ValueError(f"the converted model does not reproduce the host at ratio 1 even with the offending "
                         f"layers kept (max abs diff {result.max_abs_diff:.3g}{'; ' if result.error else ''}"
                         f"{result.error}); pass verify=False to convert unchecked")
    report.verified = True
    modes = " and ".join(f"{m} mode" for m in ref.outputs)
    skipped = "".join(f"; {m} mode not checked: the host itself fails in it ({why})" for m, why in ref.skipped.items())
    report.verification = (f"passed: at ratio 1, with the host's conv/BN weights, the {len(swaps)} Ghost modules "
                           f"each ran as often as their host conv and reproduced every output of the host in "
                           f"{modes} (max abs diff {result.max_abs_diff:.3g}){skipped}")
    return swaps


def _miscounted(swaps: list[Swap], result: TwinResult, ref: Reference) -> list[tuple[Swap, str]]:
    """The swaps whose Ghost module ran a different number of times than their host conv, and why."""
    found = []
    for swap in swaps:
        for mode, ran in result.ran.items():
            host, ghost = ref.calls[mode].get(swap.name, 0), ran.get(swap.name, 0)
            if host and not ghost:
                found.append((swap, "its Ghost module never ran: the model calls this conv through a reference "
                                    "ghostify cannot replace (e.g. a plain Python list)"))
                break
            if host != ghost:
                found.append((swap, (
                    f"its Ghost module ran {ghost} times but the conv ran {host} times (in {mode} mode): the model "
                    f"also calls this conv through a reference ghostify cannot replace (e.g. a plain Python list), "
                    f"which would keep running the old conv")))
                break
    return found


def _fill_replaced(record: LayerRecord, swap: Swap, ghost: GhostConv2d, modules: dict[str, nn.Module],
                   flow: Flow) -> None:
    record.replaced, record.ratio, record.dw_size, record.absorbed = True, swap.ratio, swap.dw_size, swap.absorbed
    record.params_before += sum(count_params(modules[h]) for h in swap.absorbed)
    record.params_after = count_params(ghost)
    conv = modules[swap.name]
    record.macs_after = sum(ghost_macs(conv, swap.ratio, swap.dw_size, c.output_shape) for c in flow.calls_of(conv))


def _totals(report: GhostReport, records: list[LayerRecord], model: nn.Module, modules: dict[str, nn.Module],
            flow: Flow) -> None:
    report.layers = records
    report.params_after = count_params(model)
    report.params_before = report.params_after + sum(r.params_before - r.params_after for r in records)
    # the trace already ran the original model: count its MACs from the recorded calls (the rule of
    # ghost.complexity.count_macs) instead of running the converted model once more
    report.macs_before = sum(module_macs(c.module, c.output_shape) for c in flow.calls
                             if isinstance(c.module, (nn.Conv2d, nn.Linear)))
    report.macs_after = report.macs_before - sum(r.macs_before - r.macs_after for r in records)
