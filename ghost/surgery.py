"""Model surgery: convert any CNN built from ``nn.Conv2d`` into its Ghost version.

:func:`ghostify` runs the model once on an example input with hooks, to learn for every convolution what
reads the image, what follows it (its BatchNorm and activation, if they are its only consumers) and its
output size, then replaces the chosen convolutions by :class:`~ghost.layers.GhostConv2d` modules.

Two BatchNorm/activation policies (paper Section 3.1; see the README for why this matters):

- ``"paper"`` (default): where a conv is followed by its own BatchNorm (and activation), the Ghost module
  gets conv-BN(-act) in *both* branches, as in the paper's module, and the host's BN/act modules are made
  ``nn.Identity`` so nothing runs twice. An activation is only absorbed if the host applies it right after
  that BN (never before a residual addition). A host activation that is shared with other call sites
  (e.g. torchvision ResNet's single ``relu``) stays in place; an idempotent one (ReLU, ReLU6) is then
  also copied into the module, which leaves the function unchanged; a non-idempotent one is not absorbed.
- ``"dropin"``: a pure drop-in for the conv alone (no BN/act inside); the host's BN/act stay.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch

import torch
from torch import nn

from ghost.complexity import conv2d_macs, count_params, example_input, module_macs
from ghost.io import write_text_atomic
from ghost.layers import GhostConv2d, check_dw_size, check_ratio

__all__ = ["GhostReport", "LayerRecord", "ghostify"]

POLICIES = ("paper", "dropin")
_OVERRIDE_KEYS = ("ratio", "dw_size")
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Hardswish, nn.GELU, nn.Mish, nn.ELU, nn.Hardtanh)
_IDEMPOTENT = (nn.ReLU, nn.ReLU6, nn.Hardtanh)


@dataclass
class LayerRecord:
    """What :func:`ghostify` did with one ``nn.Conv2d``.

    ``params_before`` counts the conv plus the host modules it absorbed; ``params_after`` the Ghost module.
    MACs are per image at the example input, summed over calls (0 for a conv the example input never ran).
    """

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    groups: int
    replaced: bool
    reason: str
    ratio: int | None = None
    dw_size: int | None = None
    absorbed: tuple[str, ...] = ()
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0


@dataclass
class GhostReport:
    """Per-layer records and model-level totals of one :func:`ghostify` call."""

    input_size: tuple[int, int, int]
    policy: str
    layers: list[LayerRecord] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0

    @property
    def speedup(self) -> float:
        """Theoretical speed-up: conv+linear MACs before / after."""
        return self.macs_before / self.macs_after

    @property
    def compression(self) -> float:
        """Parameter compression ratio: params before / after."""
        return self.params_before / self.params_after

    def summary(self) -> dict[str, float | int | str]:
        """Model-level totals as a flat dict."""
        return {
            "policy": self.policy,
            "input_size": "x".join(map(str, self.input_size)),
            "convs": len(self.layers),
            "replaced": sum(r.replaced for r in self.layers),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "compression": self.compression,
            "speedup": self.speedup,
        }

    def to_dataframe(self):
        """The per-layer records as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.layers])

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the per-layer records to ``path`` atomically."""
        write_text_atomic(path, self.to_dataframe().to_csv(index=False))

    def __str__(self) -> str:
        df = self.to_dataframe()
        df["action"] = ["replaced" if r else "skipped" for r in df["replaced"]]
        df["kernel"] = [f"{k[0]}x{k[1]}" for k in df["kernel_size"]]
        df["stride"] = [f"{s[0]}" if s[0] == s[1] else f"{s[0]}x{s[1]}" for s in df["stride"]]
        df["absorbed"] = [",".join(a) for a in df["absorbed"]]
        for col in ("ratio", "dw_size"):
            df[col] = ["" if v is None or v != v else str(int(v)) for v in df[col]]
        columns = ["name", "in_channels", "out_channels", "kernel", "stride", "action", "ratio", "dw_size",
                   "absorbed", "params_before", "params_after", "macs_before", "macs_after", "reason"]
        s = self.summary()
        footer = (
            f"{s['replaced']}/{s['convs']} convs replaced (policy={self.policy}, input {s['input_size']}): "
            f"params {self.params_before:,} -> {self.params_after:,} ({self.compression:.2f}x), "
            f"MACs {self.macs_before:,} -> {self.macs_after:,} (theoretical speed-up {self.speedup:.2f}x)"
        )
        return df[columns].to_string(index=False) + "\n" + footer


@dataclass
class _Call:
    module: str
    input_id: int | None
    input_version: int
    output_id: int
    output_version: int
    output_shape: tuple[int, ...]


def _trace(model: nn.Module, x: torch.Tensor) -> list[_Call]:
    """Run ``model(x)`` once, recording every leaf module call's first input and output tensor."""
    calls: list[_Call] = []
    alive: list[torch.Tensor] = []  # keep tensors referenced so that their ids stay unique
    pending: dict[str, tuple[int | None, int]] = {}

    def pre_hook(name: str):
        def hook(_module, inputs):
            first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            if first is not None:
                alive.append(first)
            pending[name] = (id(first) if first is not None else None, first._version if first is not None else 0)

        return hook

    def post_hook(name: str):
        def hook(_module, _inputs, output):
            if not isinstance(output, torch.Tensor):
                return
            alive.append(output)
            input_id, input_version = pending.pop(name)
            calls.append(_Call(name, input_id, input_version, id(output), output._version, tuple(output.shape)))

        return hook

    handles = []
    for name, module in model.named_modules():
        if name and (not list(module.children()) or isinstance(module, GhostConv2d)):
            handles.append(module.register_forward_pre_hook(pre_hook(name)))
            handles.append(module.register_forward_hook(post_hook(name)))
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except Exception as error:  # noqa: BLE001 - re-raised with the fix
        raise ValueError(
            f"ghostify runs the model once to find each conv's BatchNorm/activation and output size, and "
            f"model(input of shape {tuple(x.shape)}) failed ({type(error).__name__}: {error}); pass the "
            f"input size the model expects as input_size=(C, H, W)"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return calls


def _sole_consumer(calls: list[_Call], index: int) -> int | None:
    """Index of the only call that consumes the output of ``calls[index]`` unmodified, else ``None``.

    Consumers are counted until the tensor is rewritten in place by a module (an in-place activation).
    A consumer that finds the tensor modified in place by non-module code (e.g. ``out += identity``) does
    not count as consuming the producer's output.
    """
    producer = calls[index]
    consumers = []
    for j in range(index + 1, len(calls)):
        call = calls[j]
        if call.input_id == producer.output_id:
            consumers.append(j)
            if call.output_id == producer.output_id:  # in-place module: later readers read its output
                break
    if len(consumers) != 1:
        return None
    consumer = calls[consumers[0]]
    return consumers[0] if consumer.input_version == producer.output_version else None


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch(name, p) for p in patterns)


def _check_patterns(kind: str, patterns: Iterable[str], conv_names: Sequence[str]) -> None:
    for pattern in patterns:
        if not any(fnmatch(n, pattern) for n in conv_names):
            example = ", ".join(conv_names[:4])
            raise ValueError(
                f"{kind} pattern {pattern!r} matches no nn.Conv2d of the model; patterns are shell-style "
                f"(fnmatch) over module names such as: {example}"
            )


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _bn_factory(bn: nn.BatchNorm2d) -> Callable[[int], nn.Module]:
    def build(channels: int) -> nn.Module:
        return nn.BatchNorm2d(
            channels, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
            track_running_stats=bn.track_running_stats, device=bn.weight.device if bn.affine else None,
        )

    return build


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
    inplace: bool = False,
) -> nn.Module:
    """Replace a model's ``nn.Conv2d`` layers with Ghost modules.

    Args:
        model: any module whose convolutions are ``nn.Conv2d``.
        ratio: ``s`` for every replaced conv (unless overridden).
        dw_size: ``d`` for every replaced conv (unless overridden).
        policy: ``"paper"`` (absorb the conv's own BN/activation into the module) or ``"dropin"``.
        replace_stem: also replace the conv(s) reading the input image (kept by default, as in the paper).
        convert_grouped: also try grouped (non-depthwise) convs; depthwise convs are always kept.
        include: fnmatch patterns over conv module names; only matching convs are considered.
        exclude: patterns of convs to keep.
        overrides: ``{pattern: {"ratio": s, "dw_size": d}}`` applied, in order, to matching convs.
        input_size: ``(C, H, W)`` of the example input used to trace the model; default
            ``(in_channels of the first conv, 224, 224)``.
        inplace: convert ``model`` itself instead of a deep copy.

    Returns:
        The converted model; its :class:`GhostReport` is attached as ``model.ghost_report``.
        ``ghostify(fresh_model, same options)`` rebuilds the same structure, so a converted model's
        ``state_dict`` loads into it.

    Raises:
        ValueError: no ``nn.Conv2d`` in the model, an unknown policy or override key, a pattern that
            matches no conv, an invalid ratio/dw_size, or a model that cannot run on the example input.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    check_ratio(ratio)
    check_dw_size(dw_size)
    overrides = dict(overrides or {})
    for pattern, values in overrides.items():
        unknown = set(values) - set(_OVERRIDE_KEYS)
        if unknown:
            raise ValueError(f"overrides[{pattern!r}] has unknown keys {sorted(unknown)}; allowed: {_OVERRIDE_KEYS}")
        check_ratio(values.get("ratio", ratio))
        check_dw_size(values.get("dw_size", dw_size))
    if not inplace:
        model = copy.deepcopy(model)
    inside_ghost = {f"{n}.{c}" for n, m in model.named_modules() if isinstance(m, GhostConv2d)
                    for c, _ in m.named_modules() if c}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in inside_ghost}
    if not convs:
        raise ValueError("the model has no nn.Conv2d to convert (convs inside Ghost modules do not count)")
    names = list(convs)
    _check_patterns("include", include or (), names)
    _check_patterns("exclude", exclude, names)
    _check_patterns("overrides", overrides, names)

    first = next(iter(convs.values()))
    size = tuple(input_size) if input_size is not None else (first.in_channels, 224, 224)
    x = example_input(model, size)
    calls = _trace(model, x)
    by_name: dict[str, list[int]] = {}
    for i, call in enumerate(calls):
        by_name.setdefault(call.module, []).append(i)
    stems = {calls[i].module for i in range(len(calls)) if calls[i].input_id == id(x) and calls[i].module in convs}
    if not stems:  # the model transforms the input first: the first conv that runs reads the image
        stems = {next((c.module for c in calls if c.module in convs), names[0])}
    modules = dict(model.named_modules())

    report = GhostReport(size, policy)
    for name, conv in convs.items():
        record = LayerRecord(name, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                             conv.groups, replaced=False, reason="")
        indices = by_name.get(name, [])
        record.macs_before = sum(conv2d_macs(conv, calls[i].output_shape) for i in indices)
        record.params_before = count_params(conv)
        s, d = ratio, dw_size
        for pattern, values in overrides.items():
            if fnmatch(name, pattern):
                s, d = values.get("ratio", s), values.get("dw_size", d)
        if type(conv) is not nn.Conv2d:
            record.reason = f"{type(conv).__name__} subclasses nn.Conv2d with its own forward"
        elif include is not None and not _matches(name, include):
            record.reason = "not matched by include"
        elif _matches(name, exclude):
            record.reason = "matched by exclude"
        elif name in stems and not replace_stem:
            record.reason = "stem conv reading the image (pass replace_stem=True to replace it)"
        elif conv.groups > 1 and conv.groups == conv.in_channels:
            record.reason = "depthwise conv: already cheap"
        elif conv.groups > 1 and not convert_grouped:
            record.reason = f"grouped conv (groups={conv.groups}): already cheap; pass convert_grouped=True"
        else:
            _replace(model, modules, name, conv, s, d, policy, calls, by_name, record)
        if not record.replaced:
            record.params_after, record.macs_after = record.params_before, record.macs_before
        report.layers.append(record)

    if not any(r.replaced for r in report.layers):
        raise ValueError(
            "ghostify replaced no conv: every nn.Conv2d was skipped (see the reasons with include/exclude, "
            "replace_stem, convert_grouped); " + "; ".join(f"{r.name}: {r.reason}" for r in report.layers[:3])
        )
    report.params_after = count_params(model)
    report.params_before = report.params_after + sum(r.params_before - r.params_after for r in report.layers)
    # the trace already ran the original model: count its MACs from the recorded calls (the rule of
    # ghost.complexity.count_macs) instead of running the converted model once more
    report.macs_before = sum(module_macs(modules[c.module], c.output_shape) for c in calls)
    report.macs_after = report.macs_before - sum(r.macs_before - r.macs_after for r in report.layers)
    model.ghost_report = report
    return model


def _replace(model: nn.Module, modules: dict[str, nn.Module], name: str, conv: nn.Conv2d, ratio: int,
             dw_size: int, policy: str, calls: list[_Call], by_name: dict[str, list[int]],
             record: LayerRecord) -> None:
    """Replace one conv (and, under the paper policy, absorb its BN/act), filling ``record``."""
    notes: list[str] = []
    norm_layer = act_layer = None
    absorbed: list[str] = []
    indices = by_name.get(name, [])
    if policy == "paper" and len(indices) == 1:
        follower = _sole_consumer(calls, indices[0])
        bn_name = calls[follower].module if follower is not None else None
        bn = modules.get(bn_name) if bn_name else None
        if (isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels
                and len(by_name[bn_name]) == 1):
            norm_layer = _bn_factory(bn)
            absorbed.append(bn_name)
            follower = _sole_consumer(calls, follower)
        act_name = calls[follower].module if follower is not None else None
        act = modules.get(act_name) if act_name else None
        if isinstance(act, _ACTIVATIONS):
            if len(by_name[act_name]) == 1:
                absorbed.append(act_name)
                act_layer = _copier(act)
            elif isinstance(act, _IDEMPOTENT):
                act_layer = _copier(act)
                notes.append(f"{act_name} is shared, so it stays; its copy inside the module changes nothing")
            else:
                notes.append(f"{act_name} is shared and not idempotent: not absorbed")
    elif policy == "paper" and not indices:
        notes.append("never ran on the example input: BN/act not absorbed")
    elif policy == "paper":
        notes.append("called several times: BN/act not absorbed")
    init_channels = math.ceil(conv.out_channels / ratio)
    if init_channels % conv.groups:
        record.reason = (f"groups={conv.groups} does not divide the {init_channels} intrinsic maps "
                         f"(ceil({conv.out_channels}/{ratio})); kept")
        return
    ghost = GhostConv2d.from_conv(conv, ratio=ratio, dw_size=dw_size, norm_layer=norm_layer, act_layer=act_layer)
    _set_module(model, name, ghost)
    for host in absorbed:
        record.params_before += count_params(modules[host])
        _set_module(model, host, nn.Identity())
    record.replaced, record.ratio, record.dw_size = True, ratio, dw_size
    record.absorbed = tuple(absorbed)
    record.reason = "; ".join(notes)
    record.params_after = count_params(ghost)
    record.macs_after = sum(_ghost_macs(ghost, calls[i].output_shape) for i in indices)


def _copier(act: nn.Module) -> Callable[[], nn.Module]:
    return lambda: copy.deepcopy(act)


def _ghost_macs(ghost: GhostConv2d, output_shape: Sequence[int]) -> int:
    macs = conv2d_macs(ghost.primary, output_shape)
    if ghost.cheap_operation is not None:
        macs += conv2d_macs(ghost.cheap_operation[0], output_shape)
    return macs
