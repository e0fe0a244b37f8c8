"""The convert_zoo CLI: one row per model, kept convs grouped by reason, refusals recorded, bad input one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from torch import nn

from experiments import convert_zoo
from ghost.models import _registry

REPO = Path(__file__).resolve().parent.parent


def _patch_only(_size: tuple[int, int, int] = (3, 224, 224)) -> nn.Module:
    """A ViT-like model: its only conv reads the image, so ghostify has nothing to replace."""
    return nn.Sequential(nn.Conv2d(3, 8, 16, 16), nn.Flatten(), nn.LazyLinear(10))


def test_convert_zoo_writes_one_row_per_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_registry._BUILDERS, "patch_only", _patch_only)
    monkeypatch.setitem(_registry._INPUT_SIZES, "patch_only", (3, 32, 32))
    assert convert_zoo.main(["--models", "mobilenet_v3_small,patch_only,timm/lcnet_050",
                             "--results-dir", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "conversion_zoo.csv").set_index("model")
    mobilenet = df.loc["mobilenet_v3_small"]
    assert mobilenet.status == "converted" and mobilenet.verified and mobilenet.input_size == "3x64x64"
    assert mobilenet.replaced == 39 and mobilenet.convs == 52
    assert mobilenet.kept == ("11 depthwise conv; 1 stem conv reading the image; "
                              "1 a Ghost module would not reduce its MACs")
    assert df.loc["timm/lcnet_050"].status == "converted"
    assert df.loc["patch_only"].status.startswith("ghostify replaced no conv")
    text = (tmp_path / "conversion_zoo.md").read_text()
    assert "2 of 3 models converted; the ratio-1 check passed on 2 of them." in text
    assert "| patch_only | 3x32x32 | - | - | - | - | - | **not converted**: ghostify replaced no conv" in text


@pytest.mark.parametrize(("args", "message"), [(["--models", "nope"], "unknown model(s) nope"),
                                               (["--ratio", "0"], "ratio (s) must be an integer >= 1")])
def test_convert_zoo_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "experiments.convert_zoo", *args, "--results-dir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
