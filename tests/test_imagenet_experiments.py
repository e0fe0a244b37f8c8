"""The ImageNet-format table experiments and the cost estimate, on a tiny ImageFolder made in the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_train_imagenet import folder, recipe  # noqa: F401 - module-scoped fixtures

from experiments import _tables, imagenet_cost
from experiments.imagenet_small_nets import IMAGENETTE_SMALL_NETS
from ghost.paper import IMAGENET_ACCURACY


def _argv(data: Path, recipe_path: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--recipe", str(recipe_path), "--data", str(data), "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results"), "--device", "cpu", "--workers", "0", "--no-progress",
            *extra]


def test_small_nets_table_on_imagefolder_data(folder: Path, recipe: Path, tmp_path: Path) -> None:  # noqa: F811
    argv = _argv(folder, recipe, tmp_path, "--only", "ghostnet_050,mobilenet_v3_large_075")
    assert _tables.main([IMAGENETTE_SMALL_NETS], "test", argv) == 0
    df = pd.read_csv(tmp_path / "results" / "imagenette_small_nets.csv")
    assert df["model"].tolist() == ["ghostnet_050", "mobilenet_v3_large_075"]
    assert df["paper_acc"].tolist() == [IMAGENET_ACCURACY[("ghostnet_050", None, None)], 73.3]
    assert df.loc[0, "params"] == 2_587_292 and df.loc[0, "macs"] == 42_328_152  # 1000 classes at 224x224
    assert df.loc[1, "params"] == 3_377_576  # torchvision's width_mult=0.75 (the paper quotes 4.0 M)
    assert df.loc[0, "trained_params"] < df.loc[0, "params"] and (df["input_size"] == "16x16").all()
    finals = {json.loads(p.read_text())["config"]["model"]: json.loads(p.read_text())
              for p in (tmp_path / "runs").rglob("final.json")}
    assert df["top5_mean"].tolist() == [finals[m]["test_top5"] for m in df["model"]]
    markdown = (tmp_path / "results" / "imagenette_small_nets.md").read_text()
    assert "SMOKE SCALE" in markdown and "Top-5 (%)" in markdown and "MobileNetV3-Large 0.75x" in markdown
    assert "FLOPs at 16x16 (M)" in markdown and "ImageNet-1k, paper: params (M)" in markdown
    assert (tmp_path / "results" / "figures" / "imagenette_small_nets.png").is_file()


def test_d_sweep_on_imagenet_data_with_another_model(folder: Path, recipe: Path, tmp_path: Path) -> None:  # noqa: F811
    make = _tables.sweep_tables(_tables.d_sweep)
    argv = _argv(folder, recipe, tmp_path, "--dataset", "imagenet", "--model", "resnet18",
                 "--only", "resnet18,ghost_resnet18-s2-d1")
    assert _tables.main(make, "test", argv) == 0
    df = pd.read_csv(tmp_path / "results" / "imagenette_d_sweep_resnet18.csv")
    assert df["name"].tolist() == ["resnet18", "Ghost-resnet18 (s=2, d=1)"]
    assert (tmp_path / "results" / "figures" / "imagenette_d_sweep_resnet18.png").is_file()


def test_cost_estimate_turns_throughput_into_hours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imagenet_cost, "CONFIGS", (("imagenet-ghostnet", "ghostnet_050", None, None),))
    argv = ["--batch-size", "2", "--steps", "1", "--results-dir", str(tmp_path)]
    assert imagenet_cost.main(argv) == 0
    row = pd.read_csv(tmp_path / "imagenet_cost_cpu.csv").iloc[0]
    assert (row["resolution"], row["epochs"]) == (224, 400)
    expected = 400 * imagenet_cost.IMAGENET_TRAIN_IMAGES / row["images_per_s"] / 3600
    assert row["device_hours"] == pytest.approx(expected, rel=1e-2)
    assert "imagenet-ghostnet" in (tmp_path / "imagenet_cost_cpu.md").read_text()
