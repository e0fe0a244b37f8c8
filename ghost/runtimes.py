"""A PyTorch model run the ways it is deployed: eager, BN-folded channels_last, ``torch.compile``, ONNX Runtime
and OpenVINO, each behind the same small interface, plus per-operator profiles from the last two.

- :func:`build_runner` prepares a model for one runtime at one input shape and returns a :class:`Runner`:
  ``runner(x)`` gives a ``torch.Tensor`` (to check it against eager PyTorch), ``runner.bind(x)`` a
  zero-argument call that runs inference on ``x`` already converted to the runtime's own format (to time it).
- :func:`export_onnx` writes the ONNX file that ONNX Runtime and OpenVINO read (batch dimension dynamic).
- :func:`profile_operators` runs an ONNX file in ONNX Runtime (``SessionOptions.enable_profiling``) or OpenVINO
  (``PERF_COUNT``) and sums the per-node times by operator type (:class:`OperatorProfile`); :func:`op_category`
  groups operator types into dense convs, depthwise convs, concat/slice, reorders/memory and the rest.

ONNX Runtime uses its CPU execution provider with graph optimisation level ALL; OpenVINO its CPU plugin with the
latency hint and fp32 inference precision (so that its outputs are comparable with PyTorch's fp32). Both use
``threads`` intra-op threads, by default PyTorch's thread count, so that every runtime gets the same cores.
The optional packages (onnx, onnxscript, onnxruntime, openvino) are imported only when used.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ghost.deploy import prepare_for_inference

__all__ = [
    "OP_CATEGORIES",
    "PROFILED_RUNTIMES",
    "RUNTIMES",
    "OperatorProfile",
    "Runner",
    "build_runner",
    "check_runtimes",
    "export_onnx",
    "max_abs_diff",
    "onnxruntime_op_times",
    "op_category",
    "openvino_op_times",
    "profile_operators",
    "runtime_versions",
]

RUNTIMES = ("eager", "folded", "compile", "onnxruntime", "openvino")
"""``eager``: the model as is; ``folded``: :func:`ghost.deploy.prepare_for_inference` (BatchNorms folded into the
convs, redundant activations removed), channels_last; ``compile``: ``torch.compile`` (inductor, static shapes);
``onnxruntime`` and ``openvino``: the exported ONNX file, on CPU."""

ONNX_RUNTIMES = ("onnxruntime", "openvino")
PROFILED_RUNTIMES = ONNX_RUNTIMES
"""Runtimes :func:`profile_operators` can profile node by node."""

_PACKAGES = {"onnxruntime": ("onnx", "onnxscript", "onnxruntime"), "openvino": ("onnx", "onnxscript", "openvino")}

OP_CATEGORIES = ("conv", "depthwise conv", "concat/slice", "reorder/memory", "other")
"""What :func:`op_category` returns: dense convolutions and matrix products; depthwise convolutions (the Ghost
module's cheap operation, and the depthwise convs of MobileNet-style blocks); concatenations, slices and splits;
layout reorders and other pure data movement; everything else (activations, additions, pooling...)."""

_CONV_OPS = frozenset({
    "Conv", "FusedConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "QLinearConv",
    "Convolution", "GroupConvolution", "FullyConnected", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
})
_CONCAT_SLICE_OPS = frozenset({"Concat", "Slice", "StridedSlice", "Split", "VariadicSplit", "Gather"})
_MEMORY_OPS = frozenset({
    "ReorderInput", "ReorderOutput", "Reorder", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
    "Identity", "MemoryCopy", "Pad", "Cast", "Convert", "Expand", "Tile",
})
DEPTHWISE_SUFFIX = " (depthwise)"
"""Appended to a convolution's operator type when it is depthwise."""


def check_runtimes(names: Iterable[str], device: torch.device | str = "cpu") -> list[str]:
    """Validate runtime names for ``device`` and that their optional packages are installed.

    Raises:
        ValueError: an unknown name, an ONNX runtime with a non-CPU device, or a missing package.
    """
    device = torch.device(device)
    names = list(names)
    for name in names:
        if name not in RUNTIMES:
            raise ValueError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
        if name in ONNX_RUNTIMES and device.type != "cpu":
            raise ValueError(f"runtime {name!r} runs on CPU only here; leave it out for device {device}")
        missing = [p for p in _PACKAGES.get(name, ()) if importlib.util.find_spec(p) is None]
        if missing:
            raise ValueError(f"runtime {name!r} needs {', '.join(missing)}: pip install {' '.join(missing)}")
    if not names:
        raise ValueError("no runtime given")
    return names


def runtime_versions() -> dict[str, str]:
    """Versions of torch and of the optional runtime packages (``"not installed"`` when missing)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "onnx", "onnxscript", "onnxruntime", "openvino", "timm"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute element-wise difference of two tensors of the same shape (on CPU, in fp32)."""
    if a.shape != b.shape:
        raise ValueError(f"outputs have different shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().max())


@dataclass
class Runner:
    """A model prepared for one runtime and one input shape.

    Attributes:
        runtime: one of :data:`RUNTIMES`.
        prepare: converts a ``torch.Tensor`` input to what ``run`` takes (a NumPy array, channels_last...).
        run: runs inference on a prepared input and returns the runtime's own output.
        to_torch: converts that output to a ``torch.Tensor``.
        build_s: seconds the build took, its first inference (e.g. compilation) included.
    """

    runtime: str
    prepare: Callable[[torch.Tensor], Any]
    run: Callable[[Any], Any]
    to_torch: Callable[[Any], torch.Tensor]
    build_s: float = 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output for ``x``, as a ``torch.Tensor``."""
        return self.to_torch(self.run(self.prepare(x)))

    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        """A zero-argument call running inference on ``x``, converted once here (not inside the call)."""
        prepared = self.prepare(x)
        return lambda: self.run(prepared)


def _torch_runner(runtime: str, model: nn.Module, memory_format: torch.memory_format) -> Runner:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return Runner(runtime, lambda x: x.contiguous(memory_format=memory_format), run, lambda y: y.contiguous())


def _folded_model(model: nn.Module) -> nn.Module:
    return prepare_for_inference(model).to(memory_format=torch.channels_last)


def _numpy(x: torch.Tensor):
    return x.detach().cpu().float().contiguous().numpy()


def _onnxruntime_session(onnx_path: Path, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def _onnxruntime_runner(onnx_path: Path, threads: int) -> Runner:
    session = _onnxruntime_session(onnx_path, threads)
    (input_,), output = session.get_inputs(), session.get_outputs()[0].name

    def run(x):
        return session.run([output], {input_.name: x})[0]

    return Runner("onnxruntime", _numpy, run, torch.from_numpy)


def _openvino_request(onnx_path: Path, shape: tuple[int, ...], threads: int, perf_count: bool = False):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(onnx_path))
    if len(model.inputs) != 1:
        raise ValueError(f"{onnx_path} has {len(model.inputs)} inputs; only single-input models are supported")
    model.reshape({model.inputs[0].get_any_name(): list(shape)})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
              "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": perf_count}
    return core.compile_model(model, "CPU", config).create_infer_request()


def _openvino_runner(onnx_path: Path, shape: tuple[int, ...], threads: int) -> Runner:
    request = _openvino_request(onnx_path, shape, threads)

    def run(x):
        request.infer({0: x}, share_inputs=True, share_outputs=True)
        return request.get_output_tensor(0).data

    return Runner("openvino", _numpy, run, lambda y: torch.from_numpy(y.copy()))


def _threads(threads: int | None) -> int:
    threads = torch.get_num_threads() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    return threads


def build_runner(
    runtime: str,
    model: nn.Module,
    example: torch.Tensor,
    *,
    onnx_path: str | Path | None = None,
    threads: int | None = None,
) -> Runner:
    """Prepare ``model`` (switched to eval mode) for ``runtime`` at ``example``'s shape and run it once on it.

    Args:
        runtime: one of :data:`RUNTIMES`.
        model: the PyTorch model (``folded`` works on a copy; the others use it as is).
        example: an input batch; the torch runtimes run on its device, ``compile`` specialises to its shape.
        onnx_path: the model exported by :func:`export_onnx`; required by ``onnxruntime`` and ``openvino``.
        threads: intra-op threads of ONNX Runtime and OpenVINO (default: ``torch.get_num_threads()``).

    Raises:
        ValueError: unknown runtime, missing ``onnx_path``, or an ONNX runtime with a non-CPU ``example``.
        Anything the runtime itself raises while building or running (e.g. a ``torch.compile`` failure).
    """
    check_runtimes([runtime], example.device)
    threads = _threads(threads)
    if runtime in ONNX_RUNTIMES and onnx_path is None:
        raise ValueError(f"runtime {runtime!r} needs onnx_path: export the model with export_onnx first")
    model.eval()
    start = time.perf_counter()
    if runtime == "eager":
        runner = _torch_runner("eager", model, torch.contiguous_format)
    elif runtime == "folded":
        runner = _torch_runner("folded", _folded_model(model), torch.channels_last)
    elif runtime == "compile":
        runner = _torch_runner("compile", torch.compile(model, dynamic=False), torch.contiguous_format)
    elif runtime == "onnxruntime":
        runner = _onnxruntime_runner(Path(onnx_path), threads)
    else:
        runner = _openvino_runner(Path(onnx_path), tuple(example.shape), threads)
    runner(example)
    runner.build_s = time.perf_counter() - start
    return runner


def export_onnx(model: nn.Module, input_size: tuple[int, ...], path: str | Path) -> Path:
    """Export ``model``, prepared for inference (:func:`ghost.deploy.prepare_for_inference`: BatchNorms folded,
    redundant activations removed), to an ONNX file at ``path`` with the ``torch.export``-based exporter.

    The graph has one input ``input`` of shape ``(batch, *input_size)`` with a dynamic batch dimension and one
    output ``output``.
    """
    path = Path(path)
    model = prepare_for_inference(model)
    example = torch.randn(2, *input_size)  # batch 2: a batch of 1 would be specialised away by torch.export
    with warnings.catch_warnings():  # torch.export's own deprecation notices, not the caller's concern
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
        program = torch.onnx.export(
            model, (example,), None, dynamo=True, verbose=False, optimize=True, input_names=["input"],
            output_names=["output"], dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
        )
    program.save(str(path))
    return path


@dataclass
class OperatorProfile:
    """Per-operator-type times of one model in one runtime, averaged over the profiled runs.

    Attributes:
        runtime: ``onnxruntime`` or ``openvino``.
        runs: how many inferences were profiled.
        op_ms: milliseconds per inference spent in nodes of each operator type (a convolution that is
            depthwise counts as ``"<type> (depthwise)"``).
    """

    runtime: str
    runs: int
    op_ms: dict[str, float] = field(default_factory=dict)

    @property
    def total_ms(self) -> float:
        """Sum of all node times per inference (framework overhead between nodes is not included)."""
        return sum(self.op_ms.values())

    def by_category(self) -> dict[str, float]:
        """Milliseconds per inference in each of :data:`OP_CATEGORIES` (every category present)."""
        out = dict.fromkeys(OP_CATEGORIES, 0.0)
        for op, ms in self.op_ms.items():
            out[op_category(op)] += ms
        return out


def op_category(op_type: str) -> str:
    """The :data:`OP_CATEGORIES` entry of an ONNX Runtime or OpenVINO operator type."""
    if op_type.endswith(DEPTHWISE_SUFFIX):
        return "depthwise conv"
    if op_type in _CONV_OPS:
        return "conv"
    if op_type in _CONCAT_SLICE_OPS:
        return "concat/slice"
    if op_type in _MEMORY_OPS:
        return "reorder/memory"
    return "other"


def _ort_is_depthwise(args: Mapping[str, Any]) -> bool:
    """Whether an ONNX Runtime Conv node event is depthwise: weight ``(C_out, 1, k, k)`` on a multi-channel input."""
    shapes = [next(iter(s.values()), []) for s in args.get("input_type_shape", []) if isinstance(s, dict)]
    if len(shapes) < 2 or len(shapes[0]) != 4 or len(shapes[1]) != 4:
        return False
    return shapes[1][1] == 1 and shapes[0][1] > 1


def onnxruntime_op_times(events: list[dict[str, Any]], *, skip_runs: int = 0) -> tuple[dict[str, float], int]:
    """Sum the node times of an ONNX Runtime profile (the JSON list ``end_profiling`` writes) by operator type.

    Nodes are assigned to runs (``model_run`` events) by their time stamps; the first ``skip_runs`` runs
    (warmup) are left out.

    Returns:
        ``({op_type: milliseconds per run}, runs counted)``.

    Raises:
        ValueError: the profile holds no more than ``skip_runs`` runs.
    """
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")[skip_runs:]
    if not runs:
        raise ValueError(f"the profile holds no model_run after skipping {skip_runs} runs")
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if not any(start <= event["ts"] <= end for start, end in runs):
            continue
        args = event.get("args", {})
        op = args.get("op_name", "unknown")
        if op in ("Conv", "FusedConv") and _ort_is_depthwise(args):
            op += DEPTHWISE_SUFFIX
        totals[op] += event["dur"] / 1000
    return {op: ms / len(runs) for op, ms in totals.items()}, len(runs)


def openvino_op_times(infos: Iterable[Any]) -> dict[str, float]:
    """Sum one OpenVINO inference's ``get_profiling_info()`` by operator type (executed nodes only), in ms.

    A convolution whose kernel implementation is depthwise (``_dw_`` in ``exec_type``) counts as
    ``"<node_type> (depthwise)"``.
    """
    totals: dict[str, float] = defaultdict(float)
    for info in infos:
        if str(info.status).rsplit(".", 1)[-1] != "EXECUTED":
            continue
        op = info.node_type
        if "Convolution" in op and "_dw" in info.exec_type:
            op += DEPTHWISE_SUFFIX
        totals[op] += info.real_time.total_seconds() * 1000
    return dict(totals)


def profile_operators(
    runtime: str,
    onnx_path: str | Path,
    example: torch.Tensor,
    *,
    threads: int | None = None,
    warmup: int = 2,
    repeats: int = 5,
) -> OperatorProfile:
    """Profile ``repeats`` inferences of an ONNX file on ``example`` (after ``warmup``), node by node.

    Args:
        runtime: ``onnxruntime`` (``SessionOptions.enable_profiling``) or ``openvino`` (``PERF_COUNT``).
        onnx_path: a file written by :func:`export_onnx`.
        example: the input batch.
        threads: intra-op threads (default: ``torch.get_num_threads()``).

    Raises:
        ValueError: a runtime that cannot be profiled, or bad counts.
    """
    if runtime not in PROFILED_RUNTIMES:
        raise ValueError(f"cannot profile runtime {runtime!r} by operator; choose from {', '.join(PROFILED_RUNTIMES)}")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    check_runtimes([runtime], example.device)
    threads = _threads(threads)
    x = _numpy(example)
    if runtime == "onnxruntime":
        with tempfile.TemporaryDirectory() as tmp:
            session = _onnxruntime_session(Path(onnx_path), threads, profile_prefix=str(Path(tmp) / "ort"))
            feed = {session.get_inputs()[0].name: x}
            for _ in range(warmup + repeats):
                session.run(None, feed)
            events = json.loads(Path(session.end_profiling()).read_text())
        op_ms, runs = onnxruntime_op_times(events, skip_runs=warmup)
        return OperatorProfile(runtime, runs, op_ms)
    request = _openvino_request(Path(onnx_path), tuple(example.shape), threads, perf_count=True)
    totals: dict[str, float] = defaultdict(float)
    for i in range(warmup + repeats):
        request.infer({0: x}, share_inputs=True, share_outputs=True)
        if i >= warmup:
            for op, ms in openvino_op_times(request.get_profiling_info()).items():
                totals[op] += ms
    return OperatorProfile(runtime, repeats, {op: ms / repeats for op, ms in totals.items()})
