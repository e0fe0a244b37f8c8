"""Deploy mode: fold every BatchNorm that provably follows a convolution, and drop activations that change nothing.

In eval mode a BatchNorm is an affine map per channel, so ``bn(conv(x))`` equals one convolution with
rescaled weights and a bias. :func:`fold_batchnorm` applies that rewrite (with PyTorch's own
:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`) where the conv's output provably reaches the BatchNorm only:

- inside every :class:`~ghost.layers.GhostConv2d` (and so :class:`~ghost.layers.GhostModule`), each branch
  ``Sequential(conv, BatchNorm2d[, act])`` becomes ``Sequential(folded conv[, act])``;
- in the host model, a conv directly followed by a BatchNorm inside a plain ``nn.Sequential``;
- in the host model, when ``torch.fx`` can trace it symbolically, a conv whose only user in the traced graph
  is a BatchNorm (e.g. GhostNet's stem and ``ConvBnAct``, or a ResNet's ``bn1(conv1(x))``), where neither
  module is called anywhere else. The BatchNorm is then replaced by ``nn.Identity``, so module names and
  the rest of the model stay as they are. A model that fx cannot trace keeps these pairs unfolded.

Every such pair is also checked against a data-flow trace of an example call (:mod:`ghost.surgery.dataflow`):
it is folded only if the BatchNorm alone reads the conv's output (no second call of the conv, e.g. a Sequential's
first layer called on its own, no other reader) and neither module has hooks; the outputs before and after are
then compared on that input, and ``fold_report`` lists every pair, folded or kept with the reason.

Only plain ``nn.Conv2d`` and ``nn.BatchNorm2d`` with running statistics are folded: subclasses with their own
forward (e.g. weight-standardised convs, timm's ``BatchNormAct2d``) are left alone, as is any module that is
registered at more than one place in the model.

:func:`strip_redundant_activations` then removes host activation calls that provably change nothing: an
idempotent activation (``ReLU``, ``ReLU6``, ``Hardtanh``) applied to the output of a Ghost module whose
branches all end with that same activation (``ghostify``'s paper policy leaves such a call behind when the
host's activation module is shared, e.g. torchvision ResNet's ``self.relu``), or to the output of that same
activation. :func:`prepare_for_inference` does both.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ghost.layers import CheapConv2d, GhostConv2d
from ghost.surgery.convert import example_call, traced
from ghost.surgery.dataflow import Flow, tensors_in
from ghost.surgery.unsupported import hooks_text, refuse_unsupported
from ghost.surgery.verify import compare_outputs

__all__ = ["FoldRecord", "FoldReport", "fold_batchnorm", "prepare_for_inference", "strip_redundant_activations"]

_FOLD_SLACK = 4096.0
"""Folding reorders the arithmetic: outputs agree to this many units in the last place of each tensor's largest
value."""
_REPORTS = ("ghost_report", "fold_report")


@dataclass
class FoldRecord:
    """One conv→BatchNorm pair that :func:`fold_batchnorm` considered: folded, or why not."""

    conv: str
    norm: str
    folded: bool
    reason: str = ""


@dataclass
class FoldReport:
    """What :func:`fold_batchnorm` / :func:`prepare_for_inference` folded and how the result was checked.

    Attributes:
        inputs: shapes of the example inputs the model was traced and checked with.
        pairs: every conv→BatchNorm pair considered, folded or kept with the reason.
        verified: whether the outputs before and after matched on the example inputs.
        verification: what the check compared and found, in words.
    """

    inputs: str
    pairs: list[FoldRecord] = field(default_factory=list)
    verified: bool = False
    verification: str = "not checked"

    def __str__(self) -> str:
        lines = [f"{r.conv} -> {r.norm}: " + ("folded" if r.folded else f"kept ({r.reason})") for r in self.pairs]
        return "\n".join([*lines, f"check: {self.verification}"])


def fold_batchnorm(
    model: nn.Module,
    *,
    inplace: bool = False,
    input_size: Sequence[int] | None = None,
    example_inputs: torch.Tensor | Sequence[Any] | None = None,
    example_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Return an eval-mode copy of ``model`` with its conv→BatchNorm pairs folded into single convolutions.

    See the module docstring for which pairs are folded. A pair is only folded when a data-flow trace of the
    example call (:mod:`ghost.surgery.dataflow`) shows that the conv's output is read by that BatchNorm alone
    (not by a second call of the conv, a slice of its ``Sequential``, other code) and neither module has hooks;
    the others are kept, with the reason in ``folded.fold_report`` (a :class:`FoldReport`). The folded model's
    outputs are then compared with the original's on the example input (each output tensor to a few thousand
    units in the last place of its own largest value, inf/NaN positions by equality). The folded model is
    meant for inference and export (TorchScript, ``torch.export``, ONNX), not for training, and its
    ``state_dict`` keys differ from the original's.

    Args:
        model: any ``nn.Module``, e.g. a GhostNet or a model converted by :func:`ghost.surgery.ghostify`.
        inplace: fold ``model`` itself (it is switched to eval mode) instead of a deep copy.
        input_size, example_inputs, example_kwargs: the example call, as for :func:`ghost.surgery.ghostify`
            (default: one seeded random image of ``(in_channels of the first conv, 224, 224)``).

    Returns:
        The folded model, in eval mode, with its :class:`FoldReport` as ``fold_report``.

    Raises:
        ValueError: ``model`` is not an ``nn.Module``, holds a part that cannot be copied or folded (a
            TorchScript submodule, eager-quantization observers, an old-style ``weight_norm`` /
            ``spectral_norm``), does not run on the example input, or gives other outputs once folded.
    """
    _require_module(model, "fold_batchnorm")
    folded, expected, call = _fold(model, inplace, input_size, example_inputs, example_kwargs, "fold_batchnorm")
    _prove(folded, expected, call, folded.fold_report)
    return folded


def _fold(
    model: nn.Module, inplace: bool, input_size: Sequence[int] | None,
    example_inputs: torch.Tensor | Sequence[Any] | None, example_kwargs: Mapping[str, Any] | None, caller: str,
) -> tuple[nn.Module, Any, tuple[tuple[Any, ...], dict[str, Any]]]:
    """Fold ``model`` (or a deep copy) and return it, the original's outputs and the example call."""
    refuse_unsupported(model, caller)
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None and example_inputs is None and example_kwargs is None:
        model.fold_report = FoldReport("none", verification="nothing to fold: the model has no nn.Conv2d")
        return model, None, ((), {})
    args, kwargs, inputs = example_call(model, first_conv, input_size, example_inputs, example_kwargs)
    flow = traced(model, args, kwargs, inputs, caller)
    gate = _Gate(_registered_once(model), flow, {id(m): n for n, m in model.named_modules()}, FoldReport(inputs))
    for module in list(model.modules()):
        if isinstance(module, GhostConv2d):
            _fold_ghost_branches(module, gate)
    for module in list(model.modules()):
        if type(module) is nn.Sequential:
            _fold_sequential(module, gate)
    _fold_traced_pairs(model, gate)
    model.fold_report = gate.report
    return model, flow.outputs, (args, kwargs)


def _prove(model: nn.Module, expected: Any, call: tuple[tuple[Any, ...], dict[str, Any]], report: FoldReport) -> None:
    """Compare ``model``'s eval-mode outputs on the example call with the original's; raise if they differ."""
    if expected is None:
        return
    if any(t.is_meta for t in tensors_in(expected)):
        report.verification = "structure only: meta tensors carry no values to compare"
        return
    args, kwargs = call
    with torch.no_grad():
        outputs = model(*args, **kwargs)
    matches, diff, what = compare_outputs(expected, outputs, slack=_FOLD_SLACK)
    if not matches:
        raise ValueError(
            f"folding changed the model's outputs on the example input ({what}; {len(report.pairs)} pairs "
            f"considered): something the trace could not see reads a folded conv's output or weights; fold by "
            f"hand, or run the model unfolded"
        )
    folded = sum(r.folded for r in report.pairs)
    report.verified = True
    report.verification = (f"passed: with {folded} of {len(report.pairs)} conv→BatchNorm pairs folded, every output "
                           f"matched the original's in eval mode on the example input (max abs diff {diff:.3g})")


def _require_module(model: object, function: str) -> None:
    """Raise a ``ValueError`` naming ``function`` if ``model`` is not an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"{function} expects an nn.Module, got {type(model).__name__}")


def _registered_once(model: nn.Module) -> set[int]:
    """Ids of the submodules that appear exactly once in ``model``'s module tree (i.e. are not shared)."""
    counts = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    return {key for key, count in counts.items() if count == 1}


def _fold_reason(conv: nn.Module, bn: nn.Module, unique: set[int]) -> str:
    """Why ``bn(conv(x))`` may not be replaced by one folded conv by its modules alone (``""``: it may)."""
    if type(conv) not in (nn.Conv2d, CheapConv2d):
        return f"{type(conv).__name__} is not a plain conv"
    if type(bn) is not nn.BatchNorm2d:
        return f"{type(bn).__name__} is not a plain BatchNorm2d"
    if not bn.track_running_stats or bn.running_mean is None:
        return "the BatchNorm has no running statistics"
    if bn.num_features != conv.out_channels:
        return "the BatchNorm's channel count differs from the conv's"
    if id(conv) not in unique or id(bn) not in unique:
        return "registered at more than one place in the model"
    return ""


@dataclass
class _Gate:
    """Decides, from the modules and the data-flow trace of the example call, which pairs may be folded,
    recording every pair it is asked about."""

    unique: set[int]
    flow: Flow
    names: dict[int, str]
    report: FoldReport

    def allows(self, conv: nn.Module, bn: nn.Module) -> bool:
        """Whether ``bn(conv(x))`` may be folded; a pair of a conv and a plain BatchNorm2d is recorded."""
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            return False
        reason = _fold_reason(conv, bn, self.unique) or self._flow_reason(conv, bn)
        self.report.pairs.append(FoldRecord(self.names.get(id(conv), "?"), self.names.get(id(bn), "?"), not reason,
                                            reason))
        return not reason

    def _flow_reason(self, conv: nn.Module, bn: nn.Module) -> str:
        for module, label in ((conv, "the conv"), (bn, "the BatchNorm")):
            if hooks_text(module):
                return f"{label} has {hooks_text(module)}, which folding would bypass or feed other values"
        flow = self.flow
        conv_calls, bn_calls = flow.calls_of(conv), flow.calls_of(bn)
        if not conv_calls:
            return "the conv never ran on the example input, so folding it could not be checked"
        if len(conv_calls) != len(bn_calls):
            return (f"the conv runs {len(conv_calls)} times and the BatchNorm {len(bn_calls)} times on the example "
                    f"input (the conv is also called on its own, e.g. through a slice of its Sequential)")
        for call in conv_calls:
            readers = flow.readers_outside(call.output, call)
            others = [r for r in readers if not any(flow.within(r, b.index) for b in bn_calls)]
            if others or call.output is None:
                return "the conv's output is also read elsewhere: folding would change what that reader sees"
        for param in conv.parameters(recurse=False):
            if any(not any(flow.within(r, c.index) for c in conv_calls) for r in flow.param_readers.get(id(param), ())):
                return "the conv's weight is also read outside its own forward"
        return ""


def _fold_ghost_branches(ghost: GhostConv2d, gate: _Gate) -> None:
    """Rebuild each ``Sequential(conv, BatchNorm2d[, act])`` branch of ``ghost`` as ``Sequential(conv[, act])``."""
    for name in ("primary_conv", "cheap_operation"):
        branch = getattr(ghost, name)
        if branch is not None and len(branch) > 1 and gate.allows(branch[0], branch[1]):
            setattr(ghost, name, nn.Sequential(fuse_conv_bn_eval(branch[0], branch[1]), *branch[2:]))


def _fold_sequential(sequential: nn.Sequential, gate: _Gate) -> None:
    """Fold every conv that a plain ``nn.Sequential`` feeds straight into a BatchNorm; the BN becomes Identity."""
    for i in range(len(sequential) - 1):
        conv, bn = sequential[i], sequential[i + 1]
        if gate.allows(conv, bn):
            sequential[i] = fuse_conv_bn_eval(conv, bn)
            sequential[i + 1] = nn.Identity()


class _Tracer(torch.fx.Tracer):
    """fx's default tracer, which also keeps conv and BatchNorm subclasses as leaves: their forward often has
    control flow that fx cannot trace, and a call to them is all that the folding needs to see."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) or super().is_leaf_module(m, module_qualified_name)


def _fold_traced_pairs(model: nn.Module, gate: _Gate) -> None:
    """Fold the conv→BatchNorm pairs that a ``torch.fx`` trace of ``model`` shows to be adjacent, if it traces."""
    try:
        graph = _Tracer().trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure only means these pairs cannot be proven adjacent
        return
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    attributes = [node.target for node in graph.nodes if node.op == "get_attr"]
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        conv_name, bn_name = source.target, node.target
        if calls[conv_name] != 1 or calls[bn_name] != 1:
            continue
        if any(a.startswith((f"{conv_name}.", f"{bn_name}.")) for a in attributes):
            continue  # a parameter or buffer of the pair is also read directly
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if gate.allows(conv, bn):
            model.set_submodule(conv_name, fuse_conv_bn_eval(conv, bn))
            model.set_submodule(bn_name, nn.Identity())


def prepare_for_inference(
    model: nn.Module,
    *,
    input_size: Sequence[int] | None = None,
    example_inputs: torch.Tensor | Sequence[Any] | None = None,
    example_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Return an eval-mode copy of ``model`` ready for inference and export: BatchNorms folded, redundant
    activation calls removed, and the result checked against ``model`` on an example input.

    This is :func:`fold_batchnorm` (on a deep copy; ``model`` itself is left as it is) followed by
    :func:`strip_redundant_activations`; the outputs of the result are then compared with ``model``'s in eval
    mode on the example input (as :func:`fold_batchnorm` does), which proves the rewrite for the path that input
    takes. The report of the folding is attached as ``fold_report``; a ``ghost_report`` of ``model`` is kept.

    Args:
        model: any ``nn.Module``, e.g. a GhostNet or a model converted by :func:`ghost.surgery.ghostify`.
        input_size, example_inputs, example_kwargs: the example call, as for :func:`fold_batchnorm`.

    Returns:
        A ``torch.fx.GraphModule`` in eval mode when ``torch.fx`` can trace the model symbolically (with the
        folded model's submodule names and ``state_dict`` keys); otherwise the folded module, unchanged apart
        from the folding.

    Raises:
        ValueError: ``model`` is not an ``nn.Module``, or as for :func:`fold_batchnorm`.
    """
    _require_module(model, "prepare_for_inference")
    folded, expected, call = _fold(model, False, input_size, example_inputs, example_kwargs, "prepare_for_inference")
    prepared = strip_redundant_activations(folded)
    _prove(prepared, expected, call, folded.fold_report)
    return prepared


def strip_redundant_activations(model: nn.Module) -> nn.Module:
    """Remove the host activation calls that provably leave their input unchanged.

    A call of an ``nn.ReLU``, ``nn.ReLU6`` or ``nn.Hardtanh`` module is removed (its users read its input
    instead) when its input, possibly through ``nn.Identity`` calls, is

    - the output of a :class:`~ghost.layers.GhostConv2d` whose branches all end with the same function
      (``ReLU`` whatever its ``inplace``; ``ReLU6`` or ``Hardtanh`` with the same bounds): every output value
      is already the activation's, which the activation maps to itself; or
    - the output of a call of the same function (an activation applied twice).

    A call is kept when its input, the ``nn.Identity`` calls in between or its own output have another reader
    that modifies its argument in place (an ``inplace=True`` module or argument, or an operation named
    ``..._`` such as ``add_``): removing the call would let that reader change values others read.
    Only the plain module types are recognised (subclasses may have their own forward).

    Args:
        model: any ``nn.Module``; it is switched to eval mode, and the result shares its submodules.

    Returns:
        A ``torch.fx.GraphModule`` in eval mode built from ``model``, with the same outputs as ``model`` in
        eval mode (Python control flow is fixed as traced, as with any fx trace). The submodules and attributes
        that the forward uses keep their names, and so their ``state_dict`` keys; like any ``GraphModule``, it
        does not carry over submodules the forward never calls. ``model`` itself, in eval mode, if ``torch.fx``
        cannot trace it.

    Raises:
        ValueError: ``model`` is not an ``nn.Module``.
    """
    _require_module(model, "strip_redundant_activations")
    model.eval()
    try:
        graph = _GhostLeafTracer().trace(model)
    except Exception:  # noqa: BLE001 - a model that fx cannot trace keeps its activations
        return model
    for node in list(graph.nodes):
        if _is_redundant_activation(node, model):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    graph.lint()
    stripped = torch.fx.GraphModule(model, graph)
    for report in _REPORTS:
        if hasattr(model, report):
            setattr(stripped, report, getattr(model, report))
    return stripped


class _GhostLeafTracer(_Tracer):
    """:class:`_Tracer` that also keeps Ghost modules as leaves, so their outputs are nodes of the graph."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, GhostConv2d) or super().is_leaf_module(m, module_qualified_name)


def _activation_key(module: nn.Module) -> tuple[object, ...] | None:
    """What identifies the function of an idempotent activation module, or ``None`` if it is not one."""
    if type(module) is nn.ReLU:
        return ("relu",)
    if type(module) in (nn.ReLU6, nn.Hardtanh):
        return ("hardtanh", float(module.min_val), float(module.max_val))
    return None


def _ghost_output_key(ghost: GhostConv2d) -> tuple[object, ...] | None:
    """The activation key that every branch of ``ghost`` ends with, or ``None`` if they do not share one."""
    if type(ghost).forward is not GhostConv2d.forward:
        return None
    branches = [b for b in (ghost.primary_conv, ghost.cheap_operation) if b is not None]
    keys = {_activation_key(b[-1]) if type(b) is nn.Sequential and len(b) else None for b in branches}
    return keys.pop() if len(keys) == 1 else None


def _output_key(node: torch.fx.Node, model: nn.Module) -> tuple[object, ...] | None:
    """The activation key that ``node``'s output values are all fixed points of, if it is a module call
    that guarantees one."""
    if node.op != "call_module":
        return None
    module = model.get_submodule(node.target)
    return _ghost_output_key(module) if isinstance(module, GhostConv2d) else _activation_key(module)


def _through_identities(node: torch.fx.Node, model: nn.Module) -> list[torch.fx.Node]:
    """``node`` and, while the current node is an ``nn.Identity`` call, the node it passes on."""
    chain = [node]
    while (
        node.op == "call_module"
        and type(model.get_submodule(node.target)) is nn.Identity
        and len(node.args) == 1
        and not node.kwargs
        and isinstance(node.args[0], torch.fx.Node)
    ):
        node = node.args[0]
        chain.append(node)
    return chain


def _modifies_argument(node: torch.fx.Node, model: nn.Module) -> bool:
    """Whether the operation of ``node`` may write to one of its arguments."""
    if node.op == "call_module":
        return getattr(model.get_submodule(node.target), "inplace", False) is True
    if node.op not in ("call_function", "call_method"):
        return False
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return node.kwargs.get("inplace") is True or (name.endswith("_") and not name.endswith("__"))


def _is_redundant_activation(node: torch.fx.Node, model: nn.Module) -> bool:
    """Whether ``node`` calls an idempotent activation on values it provably leaves unchanged (see
    :func:`strip_redundant_activations`)."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], torch.fx.Node):
        return False
    key = _activation_key(model.get_submodule(node.target))
    chain = _through_identities(node.args[0], model)
    if key is None or _output_key(chain[-1], model) != key:
        return False
    readers = (user for aliased in (node, *chain) for user in aliased.users if user is not node)
    return not any(_modifies_argument(user, model) for user in readers)
