"""Latency helpers, runtime wrappers and the bench_latency CLI (behaviour only: no timing is asserted)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

from experiments import bench_latency
from ghost.benchmark import (
    ModelPair,
    inference_latency,
    latency_stats,
    step_kind_times,
    step_op_kind,
    time_calls,
    time_interleaved,
)
from ghost.layers import GhostConv2d
from ghost.models import _registry
from ghost.runtimes import (
    OP_CATEGORIES,
    OperatorProfile,
    build_runner,
    export_onnx,
    onnxruntime_op_times,
    openvino_op_times,
    profile_operators,
)

REPO = Path(__file__).resolve().parent.parent
TINY_SIZE = (3, 16, 16)


def tiny_cnn() -> nn.Module:
    """Conv-BN-ReLU, a conv that ghostify turns into a Ghost module, pooling and a classifier."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )


def tiny_ghost() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        GhostConv2d(8, 16, 3, padding=1, bias=False, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    ).eval()


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def registered_tiny(monkeypatch: pytest.MonkeyPatch) -> str:
    """``tiny_cnn`` in the model registry for one test (so the CLI can build it and its Ghost version)."""
    monkeypatch.setitem(_registry._BUILDERS, "tiny_cnn", tiny_cnn)
    monkeypatch.setitem(_registry._INPUT_SIZES, "tiny_cnn", TINY_SIZE)
    return "tiny_cnn"


def test_time_interleaved_alternates_calls_after_warmup() -> None:
    calls: list[str] = []
    times = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, "cpu", 1, 3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert len(time_calls(lambda: None, torch.device("cpu"), warmup=2, repeats=4)) == 4
    with pytest.raises(ValueError, match="repeats >= 1"):
        time_calls(lambda: None, torch.device("cpu"), repeats=0)


def test_latency_stats_and_inference_latency() -> None:
    assert latency_stats([0.003, 0.001, 0.002]) == pytest.approx({"median_ms": 2.0, "p10_ms": 1.2, "p90_ms": 2.8})
    assert latency_stats([0.005]) == {"median_ms": 5.0, "p10_ms": 5.0, "p90_ms": 5.0}
    with pytest.raises(ValueError, match="at least one"):
        latency_stats([])
    stats = inference_latency(nn.Conv2d(3, 4, 3), (3, 8, 8), batch_size=2, repeats=3)
    assert stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]


@pytest.mark.parametrize(("name", "shapes", "kind"), [
    ("aten::mkldnn_convolution", [[8, 16, 32, 32], [8, 16, 3, 3]], "conv"),
    ("aten::mkldnn_convolution", [[8, 16, 32, 32], [16, 1, 3, 3]], "depthwise conv"),
    ("aten::convolution_backward", [[8, 16, 32, 32], [8, 16, 32, 32], [16, 1, 3, 3]], "depthwise conv"),
    ("aten::convolution_backward", [[8, 16, 32, 32], [8, 3, 32, 32], [16, 3, 3, 3]], "conv"),
    ("aten::mkldnn_convolution", [[8, 1, 32, 32], [4, 1, 3, 3]], "conv"),  # a one-channel input is not depthwise
    ("autograd::engine::evaluate_function: ConvolutionBackward0", [], "conv"),
    ("aten::native_batch_norm_backward", [], "batchnorm"),
    ("aten::threshold_backward", [], "activation"),
    ("aten::clamp_min_", [], "activation"),
    ("aten::addmm", [], "linear"),
    ("AddmmBackward0", [], "linear"),
    ("aten::add", [], "add/sum"),
    ("aten::sum", [], "add/sum"),
    ("aten::cat", [], "concat/slice"),
    ("aten::slice_backward", [], "concat/slice"),
    ("aten::scatter", [], "other"),
    ("aten::_to_copy", [], "casts/copies"),
    ("aten::adaptive_avg_pool2d", [], "pooling"),
    ("Optimizer.step#SGD.step", [], "optimizer"),
    ("aten::_foreach_add_", [], "optimizer"),
    ("aten::empty", [], "other"),
])
def test_step_op_kind(name: str, shapes: list[list[int]], kind: str) -> None:
    assert step_op_kind(name, shapes) == kind


def test_step_kind_times_puts_each_operator_in_its_kind() -> None:
    x, weight = torch.randn(2, 8, 16, 16), torch.randn(8, 1, 3, 3)
    depthwise = step_kind_times(lambda: torch.nn.functional.conv2d(x, weight, groups=8), warmup=0, repeats=2)
    assert depthwise["depthwise conv"] > 0 and depthwise["conv"] == 0
    concat = step_kind_times(lambda: torch.cat([x, x], 1), warmup=1, repeats=1)
    assert concat["concat/slice"] > 0 and concat["conv"] == concat["depthwise conv"] == 0
    assert list(concat) == ["conv", "depthwise conv", "batchnorm", "activation", "add/sum", "concat/slice",
                            "casts/copies", "linear", "pooling", "optimizer", "other"]
    with pytest.raises(ValueError, match="repeats >= 1"):
        step_kind_times(lambda: None, repeats=0)


def test_model_pair_parse() -> None:
    pair = ModelPair.parse("resnet56_cifar", ratio=3, dw_size=5)
    assert (pair.label, pair.ghost, pair.ratio, pair.dw_size, pair.input_size) == (
        "resnet56_cifar", "ghost_resnet56_cifar", 3, 5, (3, 32, 32))
    pair = ModelPair.parse("mobilenet_v3_large:ghostnet")
    assert (pair.label, pair.baseline, pair.ratio, pair.input_size) == (
        "ghostnet vs mobilenet_v3_large", "mobilenet_v3_large", None, (3, 224, 224))
    with pytest.raises(ValueError, match="BASELINE:GHOST"):
        ModelPair.parse("a:b:c")
    with pytest.raises(ValueError, match="different input sizes"):
        ModelPair.parse("resnet56_cifar:ghostnet")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        ModelPair.parse("nope")
    if importlib.util.find_spec("timm") is not None:
        assert ModelPair.parse("mobilenet_v3_large:timm/ghostnet_100").ghost == "timm/ghostnet_100"
        pair = ModelPair.parse("timm/inception_v3")  # a timm model against its ghostified version
        assert (pair.ghost, pair.input_size) == ("ghost_timm/inception_v3", (3, 299, 299))
        with pytest.raises(ValueError, match="unknown timm model"):
            ModelPair.parse("mobilenet_v3_large:timm/nope")


def test_runners_match_eager_and_profiles_sum_to_total(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    model = tiny_ghost()
    x = torch.randn(2, *TINY_SIZE)
    with torch.inference_mode():
        reference = model(x)
    path = export_onnx(model, TINY_SIZE, tmp_path / "tiny.onnx")
    for runtime in ("eager", "folded", "onnxruntime", "openvino"):
        runner = build_runner(runtime, model, x, onnx_path=path, threads=1)
        assert torch.allclose(runner(x), reference, atol=1e-4), runtime
        runner.bind(x)()
    for runtime in ("onnxruntime", "openvino"):
        profile = profile_operators(runtime, path, x, threads=1, warmup=1, repeats=2)
        assert profile.runs == 2 and profile.total_ms > 0
        assert sum(profile.op_ms.values()) == pytest.approx(profile.total_ms)
        by_category = profile.by_category()
        assert list(by_category) == list(OP_CATEGORIES)
        assert sum(by_category.values()) == pytest.approx(profile.total_ms)
        assert by_category["depthwise conv"] > 0 and by_category["conv"] > 0, (runtime, profile.op_ms)
    with pytest.raises(ValueError, match="unknown runtime 'tvm'"):
        build_runner("tvm", model, x)
    with pytest.raises(ValueError, match="needs onnx_path"):
        build_runner("onnxruntime", model, x)
    with pytest.raises(ValueError, match="cannot profile runtime 'eager'"):
        profile_operators("eager", path, x)


def test_profile_aggregation_by_op_type() -> None:
    def node(op: str, ts: int, dur: int, shapes: list[list[int]]) -> dict:
        args = {"op_name": op, "input_type_shape": [{"float": s} for s in shapes]}
        return {"cat": "Node", "name": f"n{ts}_kernel_time", "ts": ts, "dur": dur, "args": args}

    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},  # warmup, skipped
        node("Conv", 10, 50, [[1, 8, 4, 4], [8, 8, 3, 3]]),
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
        node("Conv", 210, 40, [[1, 8, 4, 4], [8, 8, 3, 3]]),
        node("Conv", 250, 10, [[1, 8, 4, 4], [8, 1, 3, 3]]),
        node("Concat", 260, 6, [[1, 8, 4, 4], [1, 8, 4, 4]]),
        {"cat": "Node", "name": "n261_fence_before", "ts": 261, "dur": 0, "args": {"op_name": "Concat"}},
        {"cat": "Session", "name": "model_run", "ts": 400, "dur": 100},
        node("Conv", 410, 60, [[1, 8, 4, 4], [8, 8, 3, 3]]),
        node("ReorderOutput", 470, 4, [[1, 8, 4, 4]]),
    ]
    op_ms, runs = onnxruntime_op_times(events, skip_runs=1)
    assert runs == 2
    assert op_ms == pytest.approx({"Conv": 0.05, "Conv (depthwise)": 0.005, "Concat": 0.003, "ReorderOutput": 0.002})
    profile = OperatorProfile("onnxruntime", runs, op_ms)
    assert profile.total_ms == pytest.approx(0.06)
    assert profile.by_category() == pytest.approx({"conv": 0.05, "depthwise conv": 0.005, "concat/slice": 0.003,
                                                   "reorder/memory": 0.002, "other": 0.0})
    with pytest.raises(ValueError, match="no model_run"):
        onnxruntime_op_times(events, skip_runs=3)

    def info(node_type: str, exec_type: str, us: int, status: str = "Status.EXECUTED") -> SimpleNamespace:
        return SimpleNamespace(node_type=node_type, exec_type=exec_type, status=status,
                               real_time=timedelta(microseconds=us))

    infos = [info("Convolution", "brgconv_avx2_f32", 300), info("GroupConvolution", "brgconv_avx2_dw_f32", 40),
             info("Concat", "ref_f32", 20), info("Relu", "undef", 0, "Status.NOT_RUN"), info("Subgraph", "jit", 5)]
    assert openvino_op_times(infos) == pytest.approx(
        {"Convolution": 0.3, "GroupConvolution (depthwise)": 0.04, "Concat": 0.02, "Subgraph": 0.005})


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch's own
def test_compile_runner_on_a_tiny_conv_net() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    runner = build_runner("compile", model, x)
    with torch.inference_mode():
        assert torch.allclose(runner(x), model(x), atol=1e-5)
    assert runner.build_s > 0


def test_bench_latency_cli(tmp_path: Path, registered_tiny: str) -> None:
    runtimes = ["eager", "folded", "onnxruntime", "openvino"]
    args = ["--models", registered_tiny, "--runtimes", ",".join(runtimes), "--batch-sizes", "1,2",
            "--repeats", "1", "--warmup", "0", "--threads", "2", "--results-dir", str(tmp_path)]
    assert bench_latency.main(args) == 0
    assert torch.get_num_threads() == 1  # main() restores the thread count it changed
    df = pd.read_csv(tmp_path / "latency_cpu.csv")
    assert list(zip(df.batch_size, df.runtime, strict=True)) == [(b, r) for b in (1, 2) for r in runtimes]
    assert (df.status == "ok").all(), df.status.tolist()
    assert (df.baseline_max_abs_diff <= 1e-3).all() and (df.ghost_max_abs_diff <= 1e-3).all()
    assert (df.loc[df.runtime == "eager", ["baseline_max_abs_diff", "ghost_max_abs_diff"]] == 0).all().all()
    assert (df.measured_speedup > 0).all() and (df.ghost_median_ms > 0).all()
    ops = pd.read_csv(tmp_path / "latency_cpu_ops.csv")
    assert set(ops.runtime) <= {"onnxruntime", "openvino"} and set(ops.network) == {"baseline", "ghost"}
    assert set(ops.category) <= set(OP_CATEGORIES)
    for _, group in ops.groupby(["batch_size", "network"]):
        assert group["share"].sum() == pytest.approx(1.0)
    md = (tmp_path / "latency_cpu.md").read_text()
    assert "## Latency" in md and "## Where the time goes" in md and "- onnxruntime: `" in md
    assert not list(tmp_path.glob(".*")) and not list(tmp_path.glob("*.onnx"))


def test_bench_latency_theoretical_speedup_and_failed_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(runtime, *args, **kwargs):
        if runtime == "compile":
            raise RuntimeError("C++ compile error:\n  something broke")
        return real(runtime, *args, **kwargs)

    real = bench_latency.build_runner
    monkeypatch.setattr(bench_latency, "build_runner", failing)
    args = ["--models", "resnet56_cifar", "--runtimes", "eager,compile", "--batch-sizes", "1", "--repeats", "1",
            "--threads", "1", "--results-dir", str(tmp_path)]
    assert bench_latency.main(args) == 0
    df = pd.read_csv(tmp_path / "latency_cpu.csv").set_index("runtime")
    assert df.loc["eager", "baseline_params"] == 853_018 and df.loc["eager", "ghost_macs"] == 65_286_784
    assert df.loc["eager", "theoretical_speedup"] == pytest.approx(125_485_696 / 65_286_784, rel=1e-12)
    assert df.loc["compile", "status"] == (
        "failed (baseline): RuntimeError: C++ compile error: something broke; "
        "failed (ghost): RuntimeError: C++ compile error: something broke")
    assert pd.isna(df.loc["compile", "ghost_median_ms"])
    assert "**failed (baseline)" in (tmp_path / "latency_cpu.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-sizes", "0"], "values must be >= 1"),
        (["--models", "nope"], "unknown model 'nope'"),
        (["--runtimes", "eager,tvm"], "unknown runtime 'tvm'"),
    ],
)
def test_bench_latency_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "experiments.bench_latency", *args, "--results-dir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1] and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
