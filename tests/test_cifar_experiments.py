"""The CIFAR-10 table experiments, the paper numbers, the figures and the training benchmark, at tiny scale."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from test_data import write_fake_cifar10

from experiments import _tables, bench_train, profile_train
from experiments.plotting import plot_compression, plot_d_sweep, plot_s_sweep
from experiments.reproduce import TABLES
from ghost.paper import CIFAR10_ACCURACY, CIFAR10_COMPLEXITY, paper_key
from ghost.recipes import RECIPES_DIR, load_recipe

REQUIRED_COLUMNS = [
    "model",
    "ratio",
    "dw_size",
    "params",
    "macs",
    "acc_mean",
    "acc_std",
    "n_seeds",
    "paper_acc",
    "paper_params_m",
    "paper_flops_m",
    "recipe",
    "scale",
    "data",
    "hardware",
    "commit",
]


@pytest.fixture(autouse=True)
def _cache_outside_the_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHOST_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar"), per_batch=16, test=20)


@pytest.fixture
def micro_recipe(tmp_path: Path) -> Path:
    recipe = json.loads((RECIPES_DIR / "quick.json").read_text())
    recipe.update(name="micro", train_subset=16, test_subset=20, batch_size=8, epochs=1, eval_batch_size=20)
    path = tmp_path / "micro.json"
    path.write_text(json.dumps(recipe))
    return path


def test_tables_cover_the_papers_ten_configurations_with_paper_numbers() -> None:
    keys = {key for table in TABLES for key in table.configs}
    assert len(keys) == 10
    for model, ratio, dw_size in keys:
        key = paper_key(model, ratio, dw_size)
        assert key in CIFAR10_ACCURACY and key in CIFAR10_COMPLEXITY
    assert CIFAR10_ACCURACY[paper_key("ghost_vgg16_cifar", 2, 3)] == 93.7
    assert CIFAR10_COMPLEXITY[paper_key("resnet56_cifar")].flops_m == 125.0
    assert paper_key("vgg16_cifar", 2, 3) == ("vgg16_cifar", None, None)


def test_compression_table_end_to_end_then_skips_finished_runs(
    fake_root: Path, micro_recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    argv = ["--recipe", str(micro_recipe), "--runs-dir", str(runs), "--results-dir", str(results)]
    argv += ["--data", str(fake_root), "--device", "cpu", "--no-progress"]
    assert _tables.main([_tables.CIFAR_COMPRESSION], "test", argv) == 0
    assert "4 runs (0 finished already)" in capsys.readouterr().out

    df = pd.read_csv(results / "cifar10_compression.csv")
    assert set(REQUIRED_COLUMNS) <= set(df.columns)
    assert df["model"].tolist() == ["vgg16_cifar", "ghost_vgg16_cifar", "resnet56_cifar", "ghost_resnet56_cifar"]
    assert df["paper_acc"].tolist() == [93.6, 93.7, 93.0, 92.7]
    assert df.loc[0, "params"] == 14987722 and (df["n_seeds"] == 1).all()
    assert df["acc_mean"].between(0, 100).all() and (df["recipe"] == "micro").all()
    finals = [json.loads(p.read_text()) for p in sorted(runs.rglob("final.json"))]
    assert sorted(f["test_acc"] for f in finals) == sorted(df["acc_mean"])  # every number from a real run
    markdown = (results / "cifar10_compression.md").read_text()
    assert "SMOKE SCALE" in markdown and "Ghost-ResNet-56 (s=2, d=3)" in markdown and "micro" in markdown
    assert (results / "figures" / "cifar10_compression.png").stat().st_size > 10_000

    model_files = {p: p.stat().st_mtime_ns for p in runs.rglob("model.pt")}
    assert _tables.main([_tables.CIFAR_COMPRESSION], "test", argv) == 0
    assert "4 runs (4 finished already)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("model.pt")} == model_files


def test_table_cli_bad_input(micro_recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, expected in (
        (["--recipe", "nope"], "unknown recipe 'nope'"),
        (["--seeds", "0"], "--seeds and --jobs must be >= 1"),
        (["--recipe", "imagenet-smoke"], "recipe 'imagenet-smoke' trains on imagenet, not cifar10"),
        (["--only", "resnet50"], "resnet50 is not in the table cifar10_d_sweep; choose from"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--results-dir", str(micro_recipe)], "is a file, not a folder"),
        (["--recipe", str(micro_recipe), "--data", str(tmp_path / "nowhere")], "CIFAR-10 not found"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            _tables.main(_tables.sweep_tables(_tables.d_sweep), "test",
                         [*argv, "--runs-dir", str(tmp_path / "runs")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def _synthetic_table(configs: list[tuple[str, int | None, int | None]]) -> pd.DataFrame:
    rows = []
    for i, (model, ratio, dw_size) in enumerate(configs):
        key = paper_key(model, ratio, dw_size)
        rows.append(
            {
                "model": model,
                "ratio": ratio,
                "dw_size": dw_size,
                "macs": CIFAR10_COMPLEXITY[key].flops_m * 1e6,
                "acc_mean": 50.0 + i,
                "acc_std": 0.5,
                "paper_acc": CIFAR10_ACCURACY[key],
                "paper_flops_m": CIFAR10_COMPLEXITY[key].flops_m,
                "recipe": "quick",
                "scale": "smoke",
                "dataset": "CIFAR-10",
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("table", "plot"),
    [(0, plot_d_sweep), (1, plot_s_sweep), (2, plot_compression)],
)
def test_figures_are_pure_and_show_measured_and_paper(table: int, plot) -> None:
    df = _synthetic_table(list(TABLES[table].configs))
    before = df.copy()
    fig = plot(df)
    assert isinstance(fig, Figure)
    pd.testing.assert_frame_equal(df, before)  # the input is not modified
    ax = fig.axes[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "measured" in labels and "paper" in labels
    assert "SMOKE SCALE" in ax.get_title()
    assert "CIFAR-10" in ax.get_ylabel() and ("VGG-16" in ax.get_title() or table == 2)
    if table == 1:
        assert len(fig.axes) == 2 and "FLOPs" in fig.axes[1].get_ylabel()


def test_bench_train_writes_the_throughput_table(tmp_path: Path) -> None:
    argv = ["--groups", "resnet56", "--compile", "none", "--rounds", "1", "--warmup", "0", "--results-dir",
            str(tmp_path)]
    assert bench_train.main(argv) == 0
    df = pd.read_csv(tmp_path / "train_throughput_cpu.csv")
    assert {"model", "ratio", "dw_size", "setting", "images_per_s", "speedup_vs_baseline", "chosen"} <= set(df)
    assert sorted(df["setting"].unique()) == ["bf16", "bf16+channels_last", "fp32", "fp32+channels_last"]
    chosen = df[df["chosen"]].set_index("model")
    assert list(chosen["setting"]) == ["bf16+channels_last"] * 2  # the budget recipe's setting
    assert chosen.loc["resnet56_cifar", "speedup_vs_baseline"] == 1.0
    assert chosen.loc["ghost_resnet56_cifar", "speedup_vs_baseline"] == round(
        chosen.loc["ghost_resnet56_cifar", "images_per_s"] / chosen.loc["resnet56_cifar", "images_per_s"], 3)
    assert df.loc[~df["chosen"], "speedup_vs_baseline"].isna().all()
    assert "| ResNet-56 | 32x32, 128 |" in (tmp_path / "train_throughput_cpu.md").read_text()


def test_bench_train_speedups_divide_by_the_hosts_chosen_setting() -> None:
    df = pd.DataFrame({"model": ["mobilenet_v3_large", "mobilenet_v3_large", "ghostnet_100"],
                       "host": ["mobilenet_v3_large", "mobilenet_v3_large", "mobilenet_v3_large"],
                       "images_per_s": [80.0, 100.0, 120.0], "chosen": [False, True, True]})
    assert bench_train.with_speedups(df)["speedup_vs_baseline"].tolist()[1:] == [1.0, 1.2]
    assert bench_train.host(bench_train.Config("ghostnet_100")) == "mobilenet_v3_large"


def test_profile_train_breaks_down_the_chosen_setting_of_each_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    throughput = tmp_path / "throughput.csv"
    pd.DataFrame({"model": ["resnet56_cifar", "resnet56_cifar", "ghost_resnet56_cifar"], "ratio": [None, None, 2],
                  "dw_size": [None, None, 3], "chosen": [False, True, True],
                  "setting": ["fp32", "bf16+channels_last+compile", "fp32+channels_last"]}).to_csv(throughput)
    monkeypatch.setattr(profile_train, "random_batch", lambda recipe: (torch.randn(4, 3, 32, 32),
                                                                        torch.randint(0, 10, (4,))))
    argv = ["--groups", "resnet56", "--steps", "1", "--throughput", str(throughput), "--results-dir",
            str(tmp_path / "out")]
    assert profile_train.main(argv) == 0
    df = pd.read_csv(tmp_path / "out" / "train_profile_cpu.csv")
    settings = df.groupby("model")["profiled_setting"].first()
    assert settings.to_dict() == {"resnet56_cifar": "bf16+channels_last", "ghost_resnet56_cifar": "fp32+channels_last"}
    ms = df.pivot(index="model", columns="kind", values="ms_per_step")
    assert (ms["conv"] > 0).all() and (ms["batchnorm"] > 0).all()
    assert ms.loc["ghost_resnet56_cifar", "depthwise conv"] > 0 == ms.loc["resnet56_cifar", "depthwise conv"]
    assert ms.loc["ghost_resnet56_cifar", "concat/slice"] > 0
    text = (tmp_path / "out" / "train_profile_cpu.md").read_text()
    extra = text.split("## Extra time")[1]
    assert "| Ghost-ResNet-56 (s=2, d=3) |" in extra and "| ResNet-56 |" not in extra

    capsys.readouterr()
    with pytest.raises(SystemExit):
        profile_train.main(["--throughput", str(tmp_path / "missing.csv"), "--results-dir", str(tmp_path)])
    assert "run python -m experiments.bench_train first" in capsys.readouterr().err


def test_submitit_launcher_trains_each_run_as_a_job(
    fake_root: Path, micro_recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    argv = ["--recipe", str(micro_recipe), "--runs-dir", str(runs), "--results-dir", str(results)]
    argv += ["--data", str(fake_root), "--device", "cpu", "--no-progress", "--launcher", "submitit"]
    argv += ["--submitit-dir", str(tmp_path / "submitit"), "--only", "resnet56_cifar,ghost_resnet56_cifar"]
    assert _tables.main([_tables.CIFAR_COMPRESSION], "test", argv) == 0
    out = capsys.readouterr().out
    assert out.count("(submitit job ") == 2, out
    assert len(list(runs.rglob("final.json"))) == 2
    df = pd.read_csv(results / "cifar10_compression.csv")
    assert df["model"].tolist() == ["resnet56_cifar", "ghost_resnet56_cifar"]


def test_budget_and_full_tables_sit_beside_the_smoke_ones() -> None:
    assert _tables.table_stem(_tables.CIFAR_COMPRESSION, load_recipe("quick")) == "cifar10_compression"
    assert _tables.table_stem(_tables.CIFAR_COMPRESSION, load_recipe("budget")) == "cifar10_compression_budget"
    assert _tables.table_stem(_tables.CIFAR_COMPRESSION, load_recipe("paper")) == "cifar10_compression_paper"
