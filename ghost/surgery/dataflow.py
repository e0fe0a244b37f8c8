"""A data-flow trace of one forward pass: which module call produced each tensor, and what read it.

Module hooks alone only see module calls, so they miss plain Python code such as ``relu(y) + y`` or
``F.conv2d(x, self.conv.weight)``. :func:`trace_dataflow` also runs the model under a
:class:`torch.overrides.TorchFunctionMode`, which sees every torch function and tensor method call
(``torch.cat``, ``y + z``, ``y[:, :8]``, ``out += identity``...) whoever makes it. Every tensor *value*
is identified by the tensor object and its version counter, so an in-place update (``relu_``,
``+=``) makes a new value. A read is any call that receives the value, except metadata queries
(``.shape``, ``.dim()``...); it is attributed to the innermost module call running at that moment. The
model's outputs count as read by the caller.

The trace is exact for the path the example input takes. It cannot see code that bypasses torch's
function dispatch (e.g. a custom C++ extension reading a weight) nor readers on other input paths;
``ghostify``'s ratio-1 check catches what this misses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["OUTPUT", "Call", "Flow", "output_leaves", "tensors_in", "trace_dataflow"]

OUTPUT = -1
"""Reader index standing for the model's caller (the tensor is one of the model's outputs)."""

Value = tuple[int, int]
"""A tensor value: ``(id(tensor), tensor._version)``."""

# Calls that look at a tensor's metadata, not its data.
_METADATA_CALLS = frozenset({
    "dim", "size", "numel", "stride", "is_contiguous", "nelement", "ndimension", "element_size",
    "get_device", "is_floating_point", "is_complex", "storage_offset", "data_ptr", "__len__", "__hash__",
})
# Tensor properties that return (a view of) the data; every other property is metadata.
_DATA_PROPERTIES = frozenset({"T", "mT", "H", "mH", "data", "real", "imag"})


@dataclass
class Call:
    """One call of one module during the traced forward pass."""

    index: int
    module: nn.Module
    parent: int | None
    output: Value | None = None
    output_shape: tuple[int, ...] = ()


@dataclass
class Flow:
    """What :func:`trace_dataflow` recorded.

    Attributes:
        calls: every module call, in the order the calls started (``calls[0]`` is the model itself).
        readers: for every tensor value read, the indices of the innermost module calls that read it
            (:data:`OUTPUT` for the model's outputs), one entry per reading operation.
        param_readers: for every parameter (by ``id``), the innermost calls that used it in any way.
        input_readers: indices of the calls that read one of the example inputs directly.
        outputs: the model's return value.
    """

    calls: list[Call] = field(default_factory=list)
    readers: dict[Value, list[int]] = field(default_factory=dict)
    param_readers: dict[int, set[int]] = field(default_factory=dict)
    input_readers: set[int] = field(default_factory=set)
    outputs: Any = None
    alive: list[Any] = field(default_factory=list, repr=False)  # every seen tensor, so that ids stay unique

    def within(self, index: int, ancestor: int) -> bool:
        """Whether call ``index`` is call ``ancestor`` or runs inside it."""
        while index is not None and index != OUTPUT:
            if index == ancestor:
                return True
            index = self.calls[index].parent
        return False

    def calls_of(self, module: nn.Module) -> list[Call]:
        """The calls of ``module``, in order."""
        return [c for c in self.calls if c.module is module]

    def readers_outside(self, value: Value | None, call: Call) -> list[int]:
        """The reads of ``value`` made outside ``call`` (its own internals do not count)."""
        if value is None:
            return []
        return [r for r in self.readers.get(value, []) if not self.within(r, call.index)]

    def enclosing(self, index: int, kind: type | tuple[type, ...]) -> Call | None:
        """The innermost call, ``index`` itself or one of its ancestors, whose module is a ``kind``."""
        while index is not None and index != OUTPUT:
            if isinstance(self.calls[index].module, kind):
                return self.calls[index]
            index = self.calls[index].parent
        return None


def output_leaves(obj: Any, path: str = "output", _seen: frozenset[int] = frozenset()) -> list[tuple[str, Any]]:
    """The leaves of a nest of values (a model's return value, a call's arguments) as ``(path, value)``:
    tensors, Python numbers, strings and ``None``, found inside tuples, lists, mappings, dataclasses and
    objects with attributes (modules and classes are leaves; a reference cycle is followed once)."""
    if isinstance(obj, (torch.Tensor, bool, int, float, complex, str)) or obj is None or id(obj) in _seen:
        return [(path, obj)]
    seen = _seen | {id(obj)}
    if isinstance(obj, (list, tuple)):
        items = [(f"{path}[{i}]", item) for i, item in enumerate(obj)]
    elif isinstance(obj, Mapping):
        items = [(f"{path}[{key!r}]", item) for key, item in obj.items()]
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = [(f"{path}.{f.name}", getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    elif hasattr(obj, "__dict__") and not isinstance(obj, (type, nn.Module)) and not callable(obj):
        items = [(f"{path}.{key}", item) for key, item in vars(obj).items()]
    else:
        return [(path, obj)]
    return [leaf for sub, item in items for leaf in output_leaves(item, sub, seen)]


def tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    """The tensors in a nest of values (see :func:`output_leaves`), e.g. a call's arguments or a model's outputs."""
    for _, leaf in output_leaves(obj):
        if isinstance(leaf, torch.Tensor):
            yield leaf


def _reads_data(func: Any) -> bool:
    name = getattr(func, "__name__", "")
    if name == "__get__":
        return getattr(getattr(func, "__self__", None), "__name__", "") in _DATA_PROPERTIES
    return name not in _METADATA_CALLS


class _Recorder(TorchFunctionMode):
    """Records every torch call's tensor arguments against the innermost running module call."""

    def __init__(self, flow: Flow, stack: list[int], params: set[int], inputs: set[Value]) -> None:
        super().__init__()
        self.flow, self.stack, self.params, self.inputs = flow, stack, params, inputs

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reader = self.stack[-1] if self.stack else OUTPUT
        reads_data = _reads_data(func)
        for tensor in tensors_in((args, kwargs)):
            if id(tensor) in self.params:
                self.flow.param_readers.setdefault(id(tensor), set()).add(reader)
            if reads_data:
                value = (id(tensor), tensor._version)
                self.flow.readers.setdefault(value, []).append(reader)
                if value in self.inputs:
                    self.flow.input_readers.add(reader)
        result = func(*args, **kwargs)
        self.flow.alive.append((args, kwargs, result))
        return result


def trace_dataflow(model: nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Flow:
    """Run ``model(*args, **kwargs)`` once in eval mode without gradients and record its data flow.

    The model's training flags are restored afterwards. Exceptions raised by the model propagate.
    """
    flow = Flow()
    stack: list[int] = []
    params = {id(p) for p in model.parameters()}
    inputs = {(id(t), t._version) for t in tensors_in((args, kwargs))}

    def pre_hook(module: nn.Module, _inputs: Any) -> None:
        flow.calls.append(Call(len(flow.calls), module, stack[-1] if stack else None))
        stack.append(len(flow.calls) - 1)

    def post_hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        call = flow.calls[stack.pop()]
        if isinstance(output, torch.Tensor):
            call.output, call.output_shape = (id(output), output._version), tuple(output.shape)

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook))
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), _Recorder(flow, stack, params, inputs):
            flow.outputs = model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    for tensor in tensors_in(flow.outputs):
        flow.readers.setdefault((id(tensor), tensor._version), []).append(OUTPUT)
    return flow
