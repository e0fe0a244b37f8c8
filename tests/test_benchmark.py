"""Latency measurement helpers and the bench_latency CLI (behaviour only: no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from experiments import bench_latency
from ghost.benchmark import ghost_time_breakdown, inference_latency, time_calls
from ghost.models import create_model

REPO = Path(__file__).resolve().parent.parent


def test_time_calls_runs_warmup_then_times_each_repeat() -> None:
    calls = []
    times = time_calls(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=4)
    assert len(calls) == 6 and len(times) == 4 and all(t >= 0 for t in times)
    with pytest.raises(ValueError, match="repeats >= 1"):
        time_calls(lambda: None, torch.device("cpu"), repeats=0)


def test_inference_latency_and_breakdown() -> None:
    stats = inference_latency(nn.Conv2d(3, 4, 3), (3, 8, 8), batch_size=2, repeats=3)
    assert set(stats) == {"median_ms", "p10_ms", "p90_ms"}
    assert stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    parts = ghost_time_breakdown(create_model("ghost_resnet56_cifar"), (3, 32, 32), repeats=2)
    assert set(parts) == {"total_ms", "primary_ms", "cheap_ms", "concat_slice_ms", "rest_ms"}
    assert parts["primary_ms"] > 0 and parts["cheap_ms"] > 0
    assert sum(v for k, v in parts.items() if k != "total_ms") == pytest.approx(parts["total_ms"])
    with pytest.raises(ValueError, match="no GhostConv2d"):
        ghost_time_breakdown(create_model("resnet56_cifar"), (3, 32, 32))


def test_bench_latency_cli(tmp_path: Path) -> None:
    args = ["--models", "resnet56_cifar", "--batch-sizes", "1", "--repeats", "1", "--results-dir", str(tmp_path)]
    assert bench_latency.main(args) == 0
    df = pd.read_csv(tmp_path / "latency_cpu.csv")
    assert df.loc[0, "params"] == 853_018 and df.loc[0, "ghost_macs"] == 65_286_784
    assert df.loc[0, "theoretical_speedup"] == pytest.approx(125_485_696 / 65_286_784)
    assert "## Where the Ghost model's time goes" in (tmp_path / "latency_cpu.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--batch-sizes", "0"], "values must be >= 1"), (["--models", "nope"], "unknown model 'nope'")],
)
def test_bench_latency_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "experiments.bench_latency", *args, "--results-dir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
