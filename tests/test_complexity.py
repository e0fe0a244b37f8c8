"""FLOP (MAC) counting in the paper's convention: analytic formula, fvcore cross-check, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from experiments import complexity as complexity_cli
from ghost import GhostConv2d
from ghost.complexity import conv2d_macs, count_macs, count_params
from ghost.models import GhostNetFeatures, create_model, ghostnet
from ghost.paper import COCO_DETECTION

REPO = Path(__file__).resolve().parent.parent


def test_conv_macs_closed_form() -> None:
    conv = nn.Conv2d(16, 32, (3, 5), stride=2, padding=(1, 2), groups=4)
    model = nn.Sequential(conv)
    # output 8x8; each output value sums (16/4) * 3 * 5 products
    assert count_macs(model, (16, 16, 16)) == 8 * 8 * 32 * 4 * 15 == conv2d_macs(conv, (1, 32, 8, 8))


def test_ghost_conv_macs_count_both_branches_and_the_sliced_off_maps() -> None:
    layer = GhostConv2d(8, 10, 3, padding=1, ratio=3, dw_size=5)  # m = 4 intrinsic, 8 ghost maps, 2 dropped
    expected = 6 * 6 * (4 * 8 * 9 + 8 * 25)
    assert count_macs(layer, (8, 6, 6)) == expected
    assert count_macs(layer, (8, 6, 6), backend="fvcore") == expected


def test_linear_and_batchnorm() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 7))
    expected = 5 * 5 * 4 * 3 + 100 * 7  # BN and ReLU not counted
    assert count_macs(model, (3, 5, 5)) == expected == count_macs(model, (3, 5, 5), backend="fvcore")
    assert count_params(model) == (12 + 4) + 8 + (700 + 7)


@pytest.mark.parametrize(
    ("name", "kwargs", "size"),
    [("vgg16_cifar", {}, 32), ("ghost_vgg16_cifar", {"ratio": 3, "dw_size": 5}, 32),
     ("ghost_resnet56_cifar", {"ratio": 2, "dw_size": 3}, 32), ("ghostnet", {}, 224), ("ghost_resnet50", {}, 224)],
)
def test_fvcore_agrees_with_the_analytic_count(name: str, kwargs: dict, size: int) -> None:
    model = create_model(name, **kwargs)
    assert count_macs(model, (3, size, size), backend="fvcore") == count_macs(model, (3, size, size))


def test_fvcore_alone_counts_batchnorm_which_the_paper_does_not() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        model = create_model("resnet56_cifar").eval()
        analysis = FlopCountAnalysis(model, torch.zeros(1, 3, 32, 32))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = analysis.total()
    assert total > count_macs(model, (3, 32, 32)) == 125_485_696
    assert analysis.by_operator()["batch_norm"] > 0


def test_count_macs_restores_training_mode_and_rejects_bad_arguments() -> None:
    model = create_model("resnet56_cifar").train()
    count_macs(model, (3, 32, 32))
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="backend must be"):
        count_macs(model, (3, 32, 32), backend="thop")
    with pytest.raises(ValueError, match="input_size must be"):
        count_macs(model, (32, 32))


def test_fvcore_backend_prints_no_warnings() -> None:
    code = ("from ghost.complexity import count_macs; from ghost.models import create_model; "
            "print(count_macs(create_model('resnet56_cifar'), (3, 32, 32), backend='fvcore'))")
    result = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=REPO, capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "125485696"
    assert result.stderr == ""


def test_complexity_cli_writes_the_tables(tmp_path: Path) -> None:
    assert complexity_cli.main(["--results-dir", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "complexity.csv")
    markdown = (tmp_path / "complexity.md").read_text()
    assert "## Provenance" in markdown and "command" in markdown
    row = df[(df["model"] == "Ghost-VGG-16 s=2 d=3") & (df["stem"] == "replaced")].iloc[0]
    assert (row["params"], row["macs"]) == (7_651_498, 158_109_696)
    assert row["params_match"] and row["flops_match"]
    baselines = df[df["stem"] == "-"].set_index("model")
    assert baselines.loc["ResNet-50", "macs"] == 4_089_184_256
    assert baselines.loc[["VGG-16", "ResNet-56", "ResNet-50", "GhostNet 0.5x", "GhostNet 1.0x"], "flops_match"].all()
    ghost56 = df[(df["model"] == "Ghost-ResNet-56 s=2 d=3") & (df["stem"] == "kept")].iloc[0]
    assert not ghost56["flops_match"]  # 65.3 M against the paper's 63 M: reported, not forced
    coco = df[df["table"] == complexity_cli.COCO_TABLE].set_index("model").loc["GhostNet 1.1x backbone"]
    backbone = GhostNetFeatures(ghostnet(1.1))
    assert (coco["params"], coco["macs"]) == (count_params(backbone), count_macs(backbone)) == (3_221_690, 164_355_184)
    assert coco["flops_match"] and pd.isna(coco["paper_params_m"]) and pd.isna(coco["params_match"])
    assert "| `retinanet_ghostnet_fpn` | GhostNet 1.1x | 164.4 | 164 | 26.6 |" in markdown
    assert "| `fasterrcnn_ghostnet_fpn` | GhostNet 1.1x | 164.4 | 164 | 26.9 |" in markdown
    assert "COCO mAP (%), paper, not reproduced" in markdown
    assert not (tmp_path / "complexity.csv.tmp").exists()


def test_the_papers_detection_backbone_flops_are_ghostnet_without_its_head() -> None:
    model = ghostnet(1.1)
    backbone = count_macs(GhostNetFeatures(model))
    assert backbone == 164_355_184  # prints as Table 9's 164 M, for both detectors
    assert {round(backbone / 1e6)} == {d.backbone_flops_m for d in COCO_DETECTION.values()}
    assert count_macs(model) - backbone == 1056 * 1280 + 1280 * 1000  # conv_head and classifier: 167.0 M in all
