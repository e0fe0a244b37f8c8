"""The training engine: recipes and schedules, exact resume after SIGKILL, finished runs, bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_data import write_fake_cifar10
from torch import nn

import ghost.train.engine as engine_module
from experiments.train import main as train_main
from ghost.data import CIFAR10_MEAN, CIFAR10_STD, DeviceData
from ghost.recipes import recipe_from_dict
from ghost.runs import ModelSpec
from ghost.train import (
    DeviceSettings,
    Engine,
    TrainConfig,
    find_runs,
    list_recipes,
    load_recipe,
    load_trained,
    run_dir,
    train,
    train_one_epoch,
)

REPO = Path(__file__).resolve().parents[1]

TINY_RECIPE = {
    "name": "tiny",
    "description": "test recipe",
    "dataset": "cifar10",
    "scale": "smoke",
    "batch_size": 32,
    "iterations": None,
    "epochs": 3,
    "lr": 0.05,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "milestones": [],
    "gamma": 0.1,
    "warmup_epochs": 1,
    "label_smoothing": 0.1,
    "train_subset": None,
    "test_subset": None,
    "eval_every": 2,
    "eval_batch_size": 40,
    "precise_bn_batches": 0,
    "bf16": True,
    "channels_last": True,
    "compile": False,
    "cpu_bf16": False,
    "cpu_channels_last": False,
    "cpu_compile": False,
    "train_crop": None,
    "eval_resize": None,
    "eval_crop": None,
}


def tiny_net(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar"), per_batch=64, test=40)


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> str:
    """Route model building to :func:`tiny_net` (no registration in the global model registry)."""

    def build(model: str, ratio=None, dw_size=None, num_classes: int = 10) -> nn.Module:
        return tiny_net(num_classes)

    monkeypatch.setattr(engine_module, "build_model", build)
    monkeypatch.setattr(ModelSpec, "build", lambda self, num_classes=None: tiny_net(num_classes or 10))
    return "resnet56_cifar"  # any valid name; the network built is tiny_net


# ---------------------------------------------------------------- recipes and schedules


def test_shipped_recipes_load_and_paper_matches_he_et_al() -> None:
    assert {"paper", "long", "fast", "quick"} <= set(list_recipes())
    for name in list_recipes():
        assert load_recipe(name).name == name
    paper = load_recipe("paper")
    assert (paper.batch_size, paper.lr, paper.momentum, paper.weight_decay) == (128, 0.1, 0.9, 1e-4)
    spe = 390  # 50,000 images at batch 128, last incomplete batch dropped
    assert paper.total_steps(spe) == 64000 and paper.num_epochs(spe) == 165
    assert [paper.lr_at(s, spe) for s in (0, 31999, 32000, 47999, 48000, 63999)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    long = load_recipe("long")
    assert long.num_epochs(spe) == 400
    assert long.lr_at(200 * spe - 1, spe) == pytest.approx(0.1)
    assert long.lr_at(200 * spe, spe) == pytest.approx(0.01)
    assert long.lr_at(375 * spe, spe) == pytest.approx(1e-4)


def test_cosine_warmup_and_overrides() -> None:
    recipe = recipe_from_dict(TINY_RECIPE)
    spe = 10
    lrs = [recipe.lr_at(s, spe) for s in range(recipe.total_steps(spe))]
    assert lrs[:10] == pytest.approx([0.005 * (i + 1) for i in range(10)])  # linear warmup
    assert lrs[10] == pytest.approx(0.05) and lrs[-1] < 0.002
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    short = load_recipe("paper").with_overrides(epochs=4, train_subset=100, batch_size=32)
    assert short.length == (4, "epochs") and short.milestones == (2, 3) and short.train_subset == 100
    assert (short.batch_size, short.lr) == (32, pytest.approx(0.1 * 32 / 128))  # linear scaling rule


def test_bad_recipes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown recipe 'nope'; known recipes: .*paper"):
        load_recipe("nope")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**TINY_RECIPE, "lr_typo": 1}))
    with pytest.raises(ValueError, match="unknown keys lr_typo"):
        load_recipe(path)
    with pytest.raises(ValueError, match="exactly one of 'iterations' and 'epochs'"):
        recipe_from_dict({**TINY_RECIPE, "iterations": 100})
    with pytest.raises(ValueError, match="number of epochs must be >= 1"):
        load_recipe("quick").with_overrides(epochs=0)
    with pytest.raises(ValueError, match="'scale' must be one of full, budget, smoke"):
        recipe_from_dict({**TINY_RECIPE, "scale": "smoke (test)"})
    with pytest.raises(ValueError, match="an imagenet recipe needs train_crop"):
        recipe_from_dict({**TINY_RECIPE, "dataset": "imagenet"})
    with pytest.raises(ValueError, match="a cifar10 recipe has null train_crop"):
        recipe_from_dict({**TINY_RECIPE, "train_crop": 32})


# ---------------------------------------------------------------- engine


def test_engine_is_deterministic_and_learns(fake_root: Path) -> None:
    from ghost.data import load_cifar10

    images, labels = load_cifar10(fake_root, train=True, cache_dir=fake_root / "cache")
    data = DeviceData(images, labels, CIFAR10_MEAN, CIFAR10_STD)
    recipe = recipe_from_dict({**TINY_RECIPE, "epochs": 8, "label_smoothing": 0.0})

    def run() -> tuple[list[float], nn.Module]:
        torch.manual_seed(0)
        engine = Engine.create(tiny_net(), recipe, torch.device("cpu"))
        spe, losses = data.steps_per_epoch(32), []
        for epoch in range(recipe.epochs):
            batches = data.train_batches(32, torch.Generator().manual_seed(epoch))
            steps = range(epoch * spe, (epoch + 1) * spe)
            losses.append(train_one_epoch(engine, batches, steps, lambda s: recipe.lr_at(s, spe)).loss)
        return losses, engine.model

    losses, model = run()
    again, model_again = run()
    assert losses == again
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), model_again.state_dict().values(), strict=True)
    )
    assert losses[-1] < 0.7 * losses[0], "the engine should fit the colour-coded fake data"


def test_train_writes_results_and_skips_finished_runs(
    fake_root: Path, tiny_model: str, tmp_path: Path
) -> None:
    recipe = recipe_from_dict(TINY_RECIPE)
    config = TrainConfig(tiny_model, recipe, seed=3)
    out = run_dir(config, tmp_path / "runs")
    final = train(config, out, data_root=fake_root, cache_dir=tmp_path / "cache", progress=False)

    saved = json.loads((out / "final.json").read_text())
    assert saved == final
    for key in ("test_acc", "params", "macs", "config", "data", "hardware", "torch", "commit", "wall_time_s"):
        assert key in final
    assert 0 <= final["test_acc"] <= 100 and final["params"] == sum(
        p.numel() for p in tiny_net().parameters()
    )
    assert {"model", "ratio", "dw_size", "recipe", "seed"} <= set(final["config"])
    assert final["config"]["recipe_spec"]["epochs"] == 3 and final["scale"] == "smoke"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["test_acc"] == "nan" and float(rows[-1]["test_acc"]) == final["test_acc"]
    assert not (out / "checkpoint.pt").exists()

    assert find_runs(tmp_path / "runs") == [out]
    loaded = load_trained(out)
    assert not loaded.model.training and loaded.record.to_dict() == final

    mtime = (out / "model.pt").stat().st_mtime_ns
    assert train(config, out, data_root=fake_root, progress=False) == final  # not redone
    assert (out / "model.pt").stat().st_mtime_ns == mtime

    other = TrainConfig(tiny_model, recipe.with_overrides(epochs=4), seed=3)
    with pytest.raises(ValueError, match=r"different configuration \(recipe_spec.epochs: 3 there, 4 now\)"):
        train(other, out, data_root=fake_root, progress=False)


def test_corrupt_checkpoint_gets_a_clear_message(fake_root: Path, tiny_model: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"garbage")
    config = TrainConfig(tiny_model, recipe_from_dict(TINY_RECIPE))
    with pytest.raises(ValueError, match="checkpoint .* is corrupt or unreadable.*delete it"):
        train(config, out, data_root=fake_root, cache_dir=tmp_path / "cache", progress=False)


# ---------------------------------------------------------------- SIGKILL and exact resume

DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    from torch import nn
    from ghost.models import register_model

    @register_model(input_size=(3, 32, 32))
    def tiny_test_net(num_classes=10):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                             nn.ReLU(), nn.Dropout(0.1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(8, num_classes))

    where, _, count = os.environ.get("KILL_AT", "").partition(":")
    calls = [0]
    def maybe_die():
        calls[0] += 1
        if calls[0] == int(count):
            os.kill(os.getpid(), signal.SIGKILL)

    if where == "step":  # in the middle of an epoch
        import ghost.data.batches as batches
        original = batches.DeviceData.train_batches
        def train_batches(self, *args, **kwargs):
            for batch in original(self, *args, **kwargs):
                maybe_die()
                yield batch
        batches.DeviceData.train_batches = train_batches
    elif where == "replace":  # between writing a temporary file and renaming it into place
        original_replace = os.replace
        def replace(src, dst):
            maybe_die()
            original_replace(src, dst)
        os.replace = replace

    from experiments.train import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _run_driver(tmp_path: Path, out: Path, recipe: Path, data: Path, kill_at: str = "") -> int:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {
        **os.environ,
        "KILL_AT": kill_at,
        "GHOST_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(REPO),
    }
    args = ["--model", "tiny_test_net", "--recipe", str(recipe), "--seed", "1", "--out", str(out)]
    args += ["--data", str(data), "--device", "cpu", "--no-progress"]
    return subprocess.run(
        [sys.executable, str(driver), *args], env=env, cwd=REPO, capture_output=True
    ).returncode


def _metrics_without_times(run: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    return [{k: v for k, v in row.items() if k not in ("epoch_time_s", "images_per_s")} for row in rows]


def test_sigkill_at_any_moment_then_resume_gives_identical_results(fake_root: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.json"
    recipe.write_text(json.dumps({**TINY_RECIPE, "eval_every": 1}))
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert _run_driver(tmp_path, reference, recipe, fake_root) == 0

    steps_per_epoch = 320 // 32
    # killed mid-epoch 2; then while replacing epoch 2's checkpoint; then just before final.json lands
    assert _run_driver(tmp_path, killed, recipe, fake_root, f"step:{steps_per_epoch + 4}") == -signal.SIGKILL
    assert (killed / "checkpoint.pt").exists() and not (killed / "final.json").exists()
    assert _run_driver(tmp_path, killed, recipe, fake_root, "replace:1") == -signal.SIGKILL
    assert any(killed.glob(".checkpoint.pt.*.tmp")), "killed between writing and renaming the checkpoint"
    # resumed from epoch 1: replaces of epochs 2 and 3 (checkpoint, metrics), model.pt, then final.json
    assert _run_driver(tmp_path, killed, recipe, fake_root, "replace:6") == -signal.SIGKILL
    assert (killed / "model.pt").exists() and not (killed / "final.json").exists()
    assert _run_driver(tmp_path, killed, recipe, fake_root) == 0

    final_ref = json.loads((reference / "final.json").read_text())
    final_killed = json.loads((killed / "final.json").read_text())
    for key in ("test_acc", "test_loss", "train_acc", "train_loss", "params", "macs", "identity"):
        assert final_killed[key] == final_ref[key], key
    assert _metrics_without_times(killed) == _metrics_without_times(reference)
    weights_ref = torch.load(reference / "model.pt", weights_only=True)
    weights_killed = torch.load(killed / "model.pt", weights_only=True)
    assert weights_ref.keys() == weights_killed.keys()
    assert all(torch.equal(weights_ref[k], weights_killed[k]) for k in weights_ref)
    assert not list(killed.glob(".*.tmp")) and not (killed / "checkpoint.pt").exists()


# ---------------------------------------------------------------- CLI bad input


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "nope", "--recipe", "quick"], "unknown model 'nope'"),
        (["--model", "vgg16_cifar", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["--model", "ghost_vgg16_cifar", "--dw-size", "4", "--recipe", "quick"], "dw_size"),
        (["--model", "ghost_vgg16_cifar", "--ratio", "0", "--recipe", "quick"], "ratio"),
        (["--model", "vgg16_cifar", "--ratio", "2", "--recipe", "quick"], "apply only to Ghost models"),
        (["--model", "vgg16_cifar", "--recipe", "quick", "--epochs", "0"], "number of epochs must be >= 1"),
        (["--model", "vgg16_cifar", "--recipe", "quick", "--train-subset", "999999"], "exceeds the 320 images"),
        (["--model", "vgg16_cifar", "--recipe", "quick", "--device", "tpu"], "unknown device 'tpu'"),
        (["--model", "vgg16_cifar", "--recipe", "quick", "--dataset", "imagenet"], "trains on cifar10, not imagenet"),
        (["--model", "vgg16_cifar", "--recipe", "quick", "--accumulate", "3"], "does not split into 1 processes x 3"),
    ],
)
def test_cli_bad_input_exits_with_one_line(
    args: list[str], expected: str, fake_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_main([*args, "--out", str(tmp_path / "out"), "--data", str(fake_root), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists(), "no partial result is left behind"


def test_cli_missing_data_exits_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GHOST_CIFAR10"}
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--model", "vgg16_cifar", "--recipe", "quick"]
        + ["--out", str(tmp_path / "out")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "GHOST_CIFAR10 is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_unusable_run_folder_gets_one_line(
    fake_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for out in (blocker, blocker / "run"):
        with pytest.raises(SystemExit) as exit_info:
            train_main(["--model", "vgg16_cifar", "--recipe", "quick", "--train-subset", "64", "--out", str(out),
                        "--data", str(fake_root), "--no-progress", "--device", "cpu"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and f"{blocker} is a file" in err


def test_recipe_values_of_the_wrong_type_are_rejected() -> None:
    for key, value in (("batch_size", 64.0), ("epochs", True), ("lr", "0.1"), ("milestones", [1.5])):
        with pytest.raises(ValueError, match=f"'{key}' must be"):
            recipe_from_dict({**TINY_RECIPE, key: value})


def test_recipe_speed_settings_follow_the_device() -> None:
    recipe = recipe_from_dict({**TINY_RECIPE, "cpu_bf16": True, "cpu_channels_last": False, "compile": True})
    assert recipe.device_settings("cuda") == DeviceSettings(bf16=True, channels_last=True, compile=True)
    assert recipe.device_settings("cpu") == DeviceSettings(bf16=True, channels_last=False, compile=False)
    engine = Engine.create(tiny_net(), recipe, torch.device("cpu"))
    assert (engine.bf16, engine.channels_last, engine.compiled) == (True, False, False)
    x = torch.randn(2, 3, 8, 8)
    with engine.autocast():
        assert engine.forward(x).dtype == torch.bfloat16  # the CPU forward really runs in bf16
    plain = Engine.create(tiny_net(), recipe_from_dict(TINY_RECIPE), torch.device("cpu"))
    with plain.autocast():
        assert plain.forward(x).dtype == torch.float32


def test_precise_bn_replaces_stale_running_statistics_by_the_mean_over_training_batches(fake_root: Path) -> None:
    from ghost.data import load_cifar10
    from ghost.train.engine import recompute_bn_stats

    images, labels = load_cifar10(fake_root, train=True, cache_dir=fake_root / "cache")
    data = DeviceData(images, labels, CIFAR10_MEAN, CIFAR10_STD)
    net = nn.Sequential(nn.BatchNorm2d(3, momentum=0.01), nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    engine = Engine.create(net, recipe_from_dict(TINY_RECIPE), torch.device("cpu"))
    recompute_bn_stats(engine, data, 32, 3, torch.Generator().manual_seed(7))
    batches = data.train_batches(32, torch.Generator().manual_seed(7))
    means = [x.mean(dim=(0, 2, 3)) for x, _ in (next(batches) for _ in range(3))]
    bn = net[0]
    assert torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-5)  # not 0.01 x the first batch's
    assert bn.momentum == 0.01 and net.training  # fvcore restores the momentum; the model stays in train mode


def test_the_probe_picks_the_fastest_setting_by_the_clock_and_keeps_the_first_of_equals() -> None:
    from ghost.train.probe import choose_settings

    candidates = [DeviceSettings(True, cl, c) for cl in (False, True) for c in (False, True)]
    seconds = {"bf16": 2.0, "bf16+compile": 1.0, "bf16+channels_last": 0.5, "bf16+channels_last+compile": 0.5}
    now, ran = [0.0], []

    def step_for(settings: DeviceSettings):
        def step() -> None:
            ran.append(settings.label)
            now[0] += seconds[settings.label]
        return step

    result = choose_settings(candidates, step_for, images_per_step=100, warmup=1, steps=2, clock=lambda: now[0])
    assert result.chosen == DeviceSettings(True, True, False)  # 0.5 s a step, the first of the two equal ones
    assert result.images_per_s == {"bf16": 50.0, "bf16+compile": 100.0, "bf16+channels_last": 200.0,
                                   "bf16+channels_last+compile": 200.0}
    assert ran.count("bf16") == 3  # one warm-up step (untimed: compilation happens there) + two timed
    with pytest.raises(ValueError, match="at least one candidate"):
        choose_settings([], step_for, 100)


def test_recipe_candidates_are_the_combinations_it_leaves_open() -> None:
    pinned = recipe_from_dict(TINY_RECIPE)
    assert pinned.device_candidates("cpu") == [DeviceSettings(False, False, False)]
    open_recipe = recipe_from_dict({**TINY_RECIPE, "cpu_bf16": True, "cpu_channels_last": None, "cpu_compile": None})
    assert [s.label for s in open_recipe.device_candidates("cpu")] == [
        "bf16", "bf16+compile", "bf16+channels_last", "bf16+channels_last+compile"]
    assert len(open_recipe.device_candidates("cuda")) == 1  # a GPU recipe pins its settings
    with pytest.raises(ValueError, match="leaves its cpu settings to the engine's probe"):
        open_recipe.device_settings("cpu")


def test_a_probed_run_records_its_choice_and_keeps_it_when_resumed(
    fake_root: Path, tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ghost.runs import RunFolder
    from ghost.train.probe import ProbeResult

    recipe = recipe_from_dict({**TINY_RECIPE, "cpu_channels_last": None})
    probes = []

    def probe(candidates, step_for, images_per_step, **kwargs):
        for settings in candidates:
            step_for(settings)()  # each candidate really trains a step
        probes.append([s.label for s in candidates])
        return ProbeResult(candidates[1], {"fp32": 10.0, "fp32+channels_last": 20.0})

    monkeypatch.setattr(engine_module, "choose_settings", probe)
    save = RunFolder.save_checkpoint

    def save_then_stop(self, state, history):
        save(self, state, history)
        raise KeyboardInterrupt  # the run is killed right after its first checkpoint

    monkeypatch.setattr(RunFolder, "save_checkpoint", save_then_stop)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(tiny_model, recipe), out, data_root=fake_root, progress=False)
    monkeypatch.setattr(RunFolder, "save_checkpoint", save)
    final = train(TrainConfig(tiny_model, recipe), out, data_root=fake_root, progress=False)
    assert probes == [["fp32", "fp32+channels_last"]]  # measured once; the resumed segment kept the choice
    assert final["config"]["setting"] == "fp32+channels_last" and final["config"]["channels_last"] is True
    assert final["config"]["probe_images_per_s"] == {"fp32": 10.0, "fp32+channels_last": 20.0}


def test_validation_split_holds_out_a_fixed_tenth_of_every_class_and_never_overlaps_training() -> None:
    from ghost.data import validation_split

    labels = torch.tensor([0] * 30 + [1] * 20 + [2] * 5)
    kept, held = validation_split(labels)
    assert [int((labels[held] == c).sum()) for c in range(3)] == [3, 2, 1]  # round(0.1 n), at least one
    assert sorted(torch.cat([kept, held]).tolist()) == list(range(len(labels)))  # a partition
    again, held_again = validation_split(labels)
    assert torch.equal(held, held_again) and torch.equal(kept, again)  # fixed seed: the same split every time
    with pytest.raises(ValueError, match="at least two per class"):
        validation_split(torch.tensor([0, 0, 1]))


def test_a_validation_run_trains_without_its_held_out_images_and_is_another_run(
    fake_root: Path, tiny_model: str, tmp_path: Path
) -> None:
    recipe = recipe_from_dict(TINY_RECIPE)
    test_run, val_run = (TrainConfig(tiny_model, recipe, seed=1, validation=v) for v in (False, True))
    assert "validation" not in test_run.identity()  # test-split identities are what they were before the option
    assert val_run.identity() == {**test_run.identity(), "validation": True}
    assert run_dir(val_run, tmp_path).name == "seed1-val" and run_dir(test_run, tmp_path).name == "seed1"
    final = train(val_run, run_dir(val_run, tmp_path), data_root=fake_root, cache_dir=tmp_path / "cache",
                  progress=False)
    from ghost.data import load_cifar10, validation_split

    labels = load_cifar10(fake_root, train=True, cache_dir=tmp_path / "cache")[1]
    held_out = sum(max(1, round(0.1 * int((labels == c).sum()))) for c in torch.unique(labels))
    assert final["config"]["train_images"] == len(labels) - held_out == len(validation_split(labels)[0])
    assert final["config"]["test_images"] == held_out
    assert final["config"]["validation"] is True


def test_precise_bn_runs_also_record_the_score_with_the_running_statistics(
    fake_root: Path, tiny_model: str, tmp_path: Path
) -> None:
    config = TrainConfig(tiny_model, recipe_from_dict({**TINY_RECIPE, "precise_bn_batches": 2}), seed=0)
    out = run_dir(config, tmp_path)
    final = train(config, out, data_root=fake_root, cache_dir=tmp_path / "cache", progress=False)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert rows[0]["test_acc_running_bn"] == "" and float(rows[-1]["test_acc_running_bn"]) >= 0
    assert final["test_acc_running_bn"] == float(rows[-1]["test_acc_running_bn"])
