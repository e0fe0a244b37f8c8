"""The training campaign (experiments.campaign) and the tables rebuilt from committed run records
(experiments.rebuild_tables, experiments._tables)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from test_data import write_fake_cifar10
from test_train import TINY_RECIPE

import experiments.campaign as campaign
from experiments._tables import (
    CIFAR_COMPRESSION,
    IMAGENETTE_RESNET50,
    IMAGENETTE_SMALL_NETS,
    d_sweep,
    paired_difference,
    table_frame,
)
from experiments.plotting import plot_learning_curves
from experiments.rebuild_tables import SEARCH_CANDIDATES, rebuild, search_frame, search_winner
from experiments.rebuild_tables import main as rebuild_main
from ghost.recipes import Recipe
from ghost.train import Dataset, TrainConfig, learning_curves, load_recipe, run_dir, run_identity, runs_frame

REPO = Path(__file__).resolve().parents[1]


def write_record(records: Path, recipe: Recipe, model: str, ratio: int | None, dw_size: int | None, seed: int,
                 acc: float, hardware: str = "Intel Xeon (2 cores)", data: str = "fingerprint-a",
                 validation: bool = False, running_bn: float | None = None) -> Path:
    """A committed run record as the engine writes it (the fields the tables read)."""
    config = TrainConfig(model, recipe, seed=seed, ratio=ratio, dw_size=dw_size, validation=validation)
    folder = run_dir(config, records)
    folder.mkdir(parents=True)
    identity = run_identity(config, data, recipe.batch_size)
    final = {
        "test_acc": acc, "test_top5": 99.0, "params": 1000, "macs": 2000, "scale": str(recipe.scale),
        "config": {**identity, "dataset": "cifar10", "epochs": recipe.epochs, "train_images": 50000,
                   "test_images": 10000, "input_size": [3, 32, 32], "bf16": True, "channels_last": True,
                   "compile": False},
        "data": {"label": "cifar10-jpeg (class folders, JPG)", "root": "/data/cifar10-jpeg"},
        "hardware": hardware, "commit": "abc123", "torch": "2.13.0", "wall_time_s": 60.0, "identity": identity,
        **({"test_acc_running_bn": running_bn} if running_bn is not None else {}),
    }
    (folder / "final.json").write_text(json.dumps(final), encoding="utf-8")
    epochs = recipe.epochs or 1
    rows = [f"{e},{e * 10},0.1,1.0,50.0,1.0,{acc - (epochs - e)},99.0,6.0,100.0" for e in range(1, epochs + 1)]
    header = "epoch,step,lr,train_loss,train_acc,test_loss,test_acc,test_top5,epoch_time_s,images_per_s"
    (folder / "metrics.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return folder


# ---------------------------------------------------------------- statistics and tables


def test_paired_difference_is_the_student_t_interval_over_seeds() -> None:
    ghost = pd.DataFrame({"seed": [0, 1, 2], "test_acc": [91.0, 92.0, 93.0], "hardware": ["a"] * 3})
    host = pd.DataFrame({"seed": [0, 1, 2, 3], "test_acc": [90.0, 90.0, 90.0, 50.0], "hardware": ["a"] * 4})
    diff = paired_difference(ghost, host)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 dof) x sd 1 / sqrt(3); seed 3 has no pair
    assert diff["n_pairs"] == 3 and diff["diff_mean"] == 2.0 and diff["pairs_same_hardware"]
    assert diff["diff_ci_low"] == round(2 - half, 3) and diff["diff_ci_high"] == round(2 + half, 3)
    one = paired_difference(ghost.iloc[:1], host.assign(hardware="b"))
    assert one["n_pairs"] == 1 and math.isnan(one["diff_ci_low"]) and not one["pairs_same_hardware"]


def test_tables_from_records_pair_by_seed_and_refuse_a_foreign_record(tmp_path: Path) -> None:
    budget = load_recipe("budget")
    for seed, (host, ghost) in enumerate(((90.0, 89.0), (91.0, 89.5), (92.0, 91.0))):
        write_record(tmp_path, budget, "vgg16_cifar", None, None, seed, host)
        write_record(tmp_path, budget, "ghost_vgg16_cifar", 2, 3, seed, ghost)
    write_record(tmp_path, budget, "ghost_vgg16_cifar", 2, 1, 0, 88.0, hardware="AMD EPYC (2 cores)")
    unfinished = tmp_path / "budget" / "ghost_vgg16_cifar-s2-d5" / "seed0"
    unfinished.mkdir(parents=True)
    (unfinished / "metrics.csv").write_text("epoch\n1\n", encoding="utf-8")  # no final.json: never in a table
    runs = runs_frame(sorted(p.parent for p in tmp_path.rglob("final.json")))
    df = table_frame(d_sweep(Dataset.CIFAR10, "vgg16_cifar"), runs).set_index("name")
    row = df.loc["Ghost-VGG-16 (s=2, d=3)"]
    assert (row["acc_mean"], row["n_seeds"], row["diff_mean"], row["n_pairs"]) == (89.83, 3, -1.167, 3)
    assert df.loc["Ghost-VGG-16 (s=2, d=5)", "n_seeds"] == 0
    d1 = df.loc["Ghost-VGG-16 (s=2, d=1)"]
    assert (d1["diff_mean"], d1["ref_diff_mean"], d1["pairs_same_hardware"]) == (-2.0, -1.0, False)
    other = write_record(tmp_path, load_recipe("budget"), "ghost_vgg16_cifar", 2, 7, 0, 88.0, data="fingerprint-b")
    runs = runs_frame(sorted(p.parent for p in tmp_path.rglob("final.json")))
    with pytest.raises(ValueError, match=f"{other}.*data: 'fingerprint-b' there, 'fingerprint-a' now"):
        table_frame(d_sweep(Dataset.CIFAR10, "vgg16_cifar"), runs)


def test_rebuild_writes_the_tables_and_the_schedule_study_from_records_alone(tmp_path: Path) -> None:
    records = tmp_path / "records"
    for name in ("budget", "budget30"):
        recipe = load_recipe(name)
        for seed in (0, 1):
            for model, ratio, dw_size in CIFAR_COMPRESSION.configs:
                acc = 90.0 + seed + (2 if name == "budget30" else 0) - (1.5 if ratio else 0) / (3 if ratio and
                                                                                                 name == "budget30"
                                                                                                 else 1)
                write_record(records, recipe, model, ratio, dw_size, seed, acc)
    rebuild(records, tmp_path / "out")
    schedule = pd.read_csv(tmp_path / "out" / "cifar10_schedule_budget.csv")
    vgg = schedule[schedule["model"] == "ghost_vgg16_cifar"].set_index("schedule_epochs")
    assert vgg.loc[10, "diff_mean"] == -1.5 and vgg.loc[30, "diff_mean"] == -0.5
    assert (tmp_path / "out" / "figures" / "cifar10_schedule_budget.png").stat().st_size > 0
    compression = (tmp_path / "out" / "cifar10_compression_budget.md").read_text(encoding="utf-8")
    assert "| Ghost-VGG-16 (s=2, d=3) |" in compression and "-1.50 [-1.50, -1.50] (n=2)" in compression


def test_learning_curves_read_every_epoch_of_the_records(tmp_path: Path) -> None:
    budget = load_recipe("budget")
    runs = [write_record(tmp_path, budget, "vgg16_cifar", None, None, seed, 90.0 + seed) for seed in (0, 1)]
    curves = learning_curves(runs)
    assert len(curves) == 2 * budget.epochs and set(curves["seed"]) == {0, 1}
    last = curves[curves["epoch"] == budget.epochs].set_index("seed")["test_acc"]
    assert last.tolist() == [90.0, 91.0] and (curves["model"] == "vgg16_cifar").all()
    assert len(plot_learning_curves(curves).axes) == 2
    with pytest.raises(ValueError, match="no finished runs"):
        learning_curves([])


def test_tables_without_records_of_their_own_are_rebuilt_as_not_trained(tmp_path: Path) -> None:
    """The campaign's first records are sweep rows only: the compression table then has none of its own."""
    records = tmp_path / "records"
    write_record(records, load_recipe("budget"), "ghost_vgg16_cifar", 2, 7, 0, 85.0)
    rebuild(records, tmp_path / "out")
    d_sweep = pd.read_csv(tmp_path / "out" / "cifar10_d_sweep_budget.csv").set_index("dw_size")
    assert d_sweep.loc[7, "acc_mean"] == 85.0
    assert (tmp_path / "out" / "cifar10_compression_budget.csv").exists()


def test_a_record_of_another_recipe_spec_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    changed = Recipe(**{**load_recipe("budget").__dict__, "lr": 0.2})
    write_record(tmp_path, changed, "vgg16_cifar", None, None, 0, 90.0)
    with pytest.raises(SystemExit) as exit_info:
        rebuild_main(["--records", str(tmp_path), "--results-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "vgg16_cifar/seed0 was trained with another spec" in err and "lr: 0.2 there, 0.1 now" in err
    assert not (tmp_path / "out").exists()


def test_committed_tables_equal_their_rebuild_from_the_committed_records(tmp_path: Path) -> None:
    written = rebuild(REPO / "results" / "runs", tmp_path)
    committed_records = sorted((REPO / "results" / "runs").rglob("final.json"))
    assert bool(written) == bool(committed_records)
    for csv in written:
        for suffix in (".csv", ".md"):
            fresh = csv.with_suffix(suffix)
            committed = REPO / "results" / fresh.name
            assert committed.read_text(encoding="utf-8") == fresh.read_text(encoding="utf-8"), (
                f"{committed} differs from its rebuild: run python -m experiments.rebuild_tables")


def _search_records(records: Path, scores: dict[str, float]) -> None:
    for name, acc in scores.items():
        write_record(records, load_recipe(name), "resnet50", None, None, 0, acc, validation=True, running_bn=acc - 9)


def test_the_recipe_search_chooses_on_validation_records_only_once_every_candidate_is_scored(tmp_path: Path) -> None:
    records = tmp_path / "records"
    first, second, third = SEARCH_CANDIDATES
    _search_records(records, {first: 70.0, second: 74.0})
    write_record(records, load_recipe(third), "resnet50", None, None, 0, 99.0)  # a test-split run never chooses
    assert search_winner(records) is None
    rebuild(records, tmp_path / "out")
    assert "No choice yet" in (tmp_path / "out" / "imagenette_recipe_search.md").read_text(encoding="utf-8")
    assert not (tmp_path / "out" / "imagenette_resnet50.csv").exists()
    _search_records(records, {third: 73.9})
    assert search_winner(records) == second
    frame = search_frame(records).set_index("recipe")
    assert frame.loc[second, "chosen"] and frame["chosen"].sum() == 1 and frame.loc[first, "val_acc_running_bn"] == 61


def test_the_imagenette_campaign_plans_the_tables_with_the_search_winner(tmp_path: Path) -> None:
    records = tmp_path / "records"
    search = campaign.CAMPAIGNS["imagenette"](records)
    assert [stage.recipe for stage in search] == list(SEARCH_CANDIDATES)
    assert all(stage.validation and stage.configs == (("resnet50", None, None),) for stage in search)
    _search_records(records, dict(zip(SEARCH_CANDIDATES, (75.0, 71.0, 72.0), strict=True)))
    stages = campaign.CAMPAIGNS["imagenette"](records)[len(SEARCH_CANDIDATES):]
    assert {stage.recipe for stage in stages} == {SEARCH_CANDIDATES[0]} and not any(s.validation for s in stages)
    runs = [(key, seed) for stage in stages for seed in stage.seeds for key in stage.configs]
    rows = {*IMAGENETTE_RESNET50.configs, *IMAGENETTE_SMALL_NETS.configs}
    assert {key for key, _ in runs} == rows and len(runs) == len(rows) + 2 * 4
    assert {key for key, seed in runs if seed == 2} == set(campaign.IMAGENETTE_HEADLINE)
    assert [key for key, _ in runs[:4]] == list(campaign.IMAGENETTE_HEADLINE)


def test_the_imagenette_tables_are_rebuilt_from_the_chosen_recipe(tmp_path: Path) -> None:
    records = tmp_path / "records"
    _search_records(records, dict(zip(SEARCH_CANDIDATES, (70.0, 71.0, 72.0), strict=True)))
    chosen = load_recipe(SEARCH_CANDIDATES[2])
    for seed, (host, ghost) in enumerate(((80.0, 78.0), (81.0, 78.5), (82.0, 79.0))):
        write_record(records, chosen, "resnet50", None, None, seed, host, running_bn=host - 1)
        write_record(records, chosen, "ghost_resnet50", 2, 3, seed, ghost)
    write_record(records, chosen, "mobilenet_v3_large", None, None, 0, 60.0, running_bn=30.0)
    write_record(records, chosen, "ghostnet_100", None, None, 0, 62.5)
    write_record(records, load_recipe(SEARCH_CANDIDATES[0]), "resnet50", None, None, 0, 99.0)  # not the chosen one
    rebuild(records, tmp_path / "out")
    resnet = pd.read_csv(tmp_path / "out" / "imagenette_resnet50.csv").set_index("name")
    assert resnet.loc["ResNet-50", "acc_mean"] == 81.0 and resnet.loc["ResNet-50", "acc_running_bn_mean"] == 80.0
    assert resnet.loc["Ghost-ResNet-50 (s=2, d=3)", "diff_mean"] == -2.5
    assert resnet.loc["ResNet-50", "paper_acc"] == 75.3 and resnet.loc["ResNet-50", "macs"] > 4e9  # 224 px
    small = (tmp_path / "out" / "imagenette_small_nets.md").read_text(encoding="utf-8")
    assert "Δ vs GhostNet 1.0x (95 % CI)" in small and "Δ vs host" not in small and chosen.name in small
    mobilenet = next(line for line in small.splitlines() if line.startswith("| MobileNetV3-Large |"))
    assert "| 60.00 (n=1) | -2.50 (n=1) |" in mobilenet and "| 30.00 |" in mobilenet
    assert "Not trained yet: GhostNet 0.5x" in small
    assert (tmp_path / "out" / "figures" / "imagenette_small_nets.png").stat().st_size > 0


def test_free_slots_go_to_the_campaign_with_the_fewest_runs_in_progress() -> None:
    def run(name: str, label: str) -> campaign.Planned:
        return campaign.Planned(name, None, Path(label), Path(label), {})

    todo = [run("cifar10", "c1"), run("cifar10", "c2"), run("imagenette", "i1")]
    running: dict = {}
    first = campaign._next(todo, running, ["cifar10", "imagenette"])
    running["a"] = first
    second = campaign._next(todo, running, ["cifar10", "imagenette"])
    assert (first.run.name, second.run.name) == ("c1", "i1") and [r.run.name for r in todo] == ["c2"]


# ---------------------------------------------------------------- the campaign


def test_the_cifar10_campaign_follows_the_issue_order(tmp_path: Path) -> None:
    stages = campaign.CAMPAIGNS["cifar10"](tmp_path)
    seed0 = stages[0].configs
    assert stages[0].seeds == (0,) and len(seed0) == 10 and len(set(seed0)) == 10
    assert {key[2] for key in seed0[:2]} == {5, 7} and {key[1] for key in seed0[2:4]} == {4, 5}
    assert stages[1].configs == CIFAR_COMPRESSION.configs and stages[1].seeds == (1, 2)
    assert len(stages[2].configs) == 6 and not set(stages[2].configs) & set(CIFAR_COMPRESSION.configs)
    assert stages[3].recipe == "budget30" and [k[0] for k in stages[3].configs[:2]] == ["vgg16_cifar",
                                                                                         "ghost_vgg16_cifar"]
    assert sum(len(s.configs) * len(s.seeds) for s in stages) == 34


@pytest.fixture
def micro_campaign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A two-configuration campaign of a tiny recipe on fake CIFAR-10, recording into a scratch git repo."""
    data = write_fake_cifar10(tmp_path / "cifar", per_batch=16, test=20)
    recipe = tmp_path / "micro.json"
    recipe.write_text(json.dumps({**TINY_RECIPE, "name": "micro", "epochs": 1, "batch_size": 8}), encoding="utf-8")
    stage = campaign.Stage(str(recipe), (("resnet56_cifar", None, None), ("ghost_resnet56_cifar", 2, 3)), (0, 1))
    monkeypatch.setitem(campaign.CAMPAIGNS, "micro", lambda records: (stage,))
    repo = tmp_path / "repo"
    repo.mkdir()
    for command in (["git", "init", "-q"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                                            "--allow-empty", "-m", "init"]):
        subprocess.run(command, cwd=repo, check=True)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "t")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "t@t")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "t")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "t@t")
    monkeypatch.setenv("GHOST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the scratch repo rebuilds its tables with this checkout's code
    return {"data": data, "runs": tmp_path / "runs", "records": repo / "results" / "runs", "repo": repo}


def _args(paths: dict[str, Path], *extra: str) -> list[str]:
    return ["micro", "--data", str(paths["data"]), "--runs-dir", str(paths["runs"]), "--records",
            str(paths["records"]), "--results-dir", str(paths["repo"] / "results"), "--no-progress", *extra]


def test_the_campaign_records_commits_skips_and_refuses(micro_campaign: dict[str, Path], capsys) -> None:
    paths = micro_campaign
    assert campaign.main(_args(paths, "--seeds", "0", "--commit")) == 0
    log = subprocess.run(["git", "log", "--format=%s"], cwd=paths["repo"], capture_output=True, text=True).stdout
    assert log.count("runs: micro") == 2
    assert "(committed with the rebuilt tables)" in capsys.readouterr().out
    records = sorted(p.relative_to(paths["records"]) for p in paths["records"].rglob("*") if p.is_file())
    assert [str(p) for p in records] == [
        "micro/ghost_resnet56_cifar-s2-d3/seed0/final.json", "micro/ghost_resnet56_cifar-s2-d3/seed0/metrics.csv",
        "micro/resnet56_cifar/seed0/final.json", "micro/resnet56_cifar/seed0/metrics.csv"]  # never weights
    capsys.readouterr()
    assert campaign.main(_args(paths, "--seeds", "0,1", "--dry-run")) == 0  # overlapping seeds: only seed 1 left
    out = capsys.readouterr().out
    assert "4 runs planned, 2 finished, 2 to train" in out and "micro resnet56_cifar seed1: to train" in out
    record = paths["records"] / "micro" / "resnet56_cifar" / "seed0" / "final.json"
    final = json.loads(record.read_text(encoding="utf-8"))
    final["identity"]["data"] = "another copy"
    record.write_text(json.dumps(final), encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        campaign.main(_args(paths, "--dry-run"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert str(record.parent) in err and "data: 'another copy' there" in err


def test_a_run_finished_but_not_recorded_is_recorded_without_training(micro_campaign: dict[str, Path]) -> None:
    paths = micro_campaign
    assert campaign.main(_args(paths, "--seeds", "0")) == 0
    record = paths["records"] / "micro" / "resnet56_cifar" / "seed0"
    for name in ("final.json", "metrics.csv"):
        (record / name).unlink()
    mtime = (paths["runs"] / "micro" / "resnet56_cifar" / "seed0" / "final.json").stat().st_mtime_ns
    assert campaign.main(_args(paths, "--seeds", "0")) == 0
    assert (record / "final.json").is_file()
    assert (paths["runs"] / "micro" / "resnet56_cifar" / "seed0" / "final.json").stat().st_mtime_ns == mtime


def test_an_interrupted_campaign_stops_its_workers(micro_campaign: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    paths = micro_campaign
    started = []

    def interrupt(sentinels, timeout):  # the parent is told to stop right after starting its workers
        started.extend(sentinels)
        raise KeyboardInterrupt

    monkeypatch.setattr(campaign, "wait", interrupt)
    stopped = []
    real_terminate = campaign.multiprocessing.get_context("spawn").Process.terminate

    def terminate(self):
        stopped.append(self.name)
        real_terminate(self)

    monkeypatch.setattr(campaign.multiprocessing.get_context("spawn").Process, "terminate", terminate)
    with pytest.raises(SystemExit) as exit_info:
        campaign.main(_args(paths, "--seeds", "0", "--jobs", "2"))
    assert exit_info.value.code == 130 and len(started) == 2
    assert sorted(stopped) == ["micro ghost_resnet56_cifar-s2-d3 seed0", "micro resnet56_cifar seed0"]
