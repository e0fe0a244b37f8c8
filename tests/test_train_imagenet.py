"""ImageNet-format training: a tiny ImageFolder made here, torchrun DDP against one process, kill-and-resume
under DDP, the run-folder lock, and bad input (one line each, nothing left behind)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.train import main as train_main
from ghost.data.imagefolder import scan_image_folder
from ghost.recipes import RECIPES_DIR
from ghost.runs import RunFolder
from ghost.train import BatchPlan, TrainConfig, load_recipe, train

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("n01", "n02", "n03")


def _write_images(folder: Path, count: int, rng: np.random.Generator) -> None:
    for label, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 60, (24, 28, 3), dtype=np.uint8)
            pixels[..., label] += 180  # the class is the dominant colour: learnable in a few steps
            Image.fromarray(pixels).save(folder / name / f"{i}.jpg", quality=90)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    _write_images(root / "train", 8, rng)  # 24 training images: 3 global batches of 8
    _write_images(root / "val", 3, rng)
    return root


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = json.loads((RECIPES_DIR / "imagenet-smoke.json").read_text())
    spec.update(name="tiny-folder", epochs=2, train_crop=16, eval_resize=18, eval_crop=16, eval_batch_size=4,
                lr=0.05, momentum=0.9)
    path = tmp_path_factory.mktemp("recipe") / "tiny-folder.json"
    path.write_text(json.dumps(spec))
    return path


DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    from torch import nn
    from ghost.models import register_model

    @register_model(input_size=(3, 16, 16))
    def tiny_folder_net(num_classes=3):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

    kill_rank, _, kill_batch = os.environ.get("KILL_AT", "").partition(":")
    if kill_rank and os.environ.get("RANK", "0") == kill_rank:
        import ghost.data.sources as sources
        original = sources.ImageFolderSource.train_batches
        seen = [0]
        def train_batches(self, *args, **kwargs):
            for batch in original(self, *args, **kwargs):
                seen[0] += 1
                if seen[0] == int(kill_batch):
                    os.kill(os.getpid(), signal.SIGKILL)
                yield batch
        sources.ImageFolderSource.train_batches = train_batches

    from experiments.train import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _launch(tmp_path: Path, out: Path, folder: Path, recipe: Path, processes: int = 1, *extra: str,
            kill_at: str = "") -> subprocess.CompletedProcess[str]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "KILL_AT": kill_at, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    args = ["--model", "tiny_folder_net", "--recipe", str(recipe), "--data", str(folder), "--out", str(out)]
    args += ["--device", "cpu", "--workers", "0", "--no-progress", *extra]
    command = [*(launcher if processes > 1 else [sys.executable]), str(driver), *args]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def _parameters(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "model.pt", weights_only=True)
    return {k: v for k, v in state.items() if "running" not in k and "num_batches" not in k}


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory: pytest.TempPathFactory, folder: Path, recipe: Path) -> Path:
    tmp = tmp_path_factory.mktemp("ddp")
    result = _launch(tmp, tmp / "run", folder, recipe, 2)
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp / "run"


def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(
    ddp_reference: Path, folder: Path, recipe: Path, tmp_path: Path
) -> None:
    single = _launch(tmp_path, tmp_path / "single", folder, recipe, 1, "--accumulate", "2")
    assert single.returncode == 0, single.stderr[-2000:]
    ddp, one = _parameters(ddp_reference), _parameters(tmp_path / "single")
    assert ddp.keys() == one.keys()
    for key in ddp:
        torch.testing.assert_close(ddp[key], one[key], rtol=1e-5, atol=1e-6, msg=key)
    final_ddp = json.loads((ddp_reference / "final.json").read_text())
    final_one = json.loads((tmp_path / "single" / "final.json").read_text())
    assert final_ddp["train_loss"] == pytest.approx(final_one["train_loss"], rel=1e-5)
    config = final_ddp["config"]
    assert (config["global_batch"], config["processes"], config["accumulate"]) == (8, 2, 1)
    assert "linear" in config["lr_scaling"] and final_one["config"]["accumulate"] == 2
    assert final_ddp["identity"] == final_one["identity"]  # the same run: resumable either way
    assert {p.name for p in ddp_reference.iterdir()} >= {"final.json", "model.pt", "metrics.csv"}


def test_kill_under_ddp_then_resume_gives_the_uninterrupted_result(
    ddp_reference: Path, folder: Path, recipe: Path, tmp_path: Path
) -> None:
    killed = tmp_path / "killed"
    # rank 1 dies in the middle of epoch 2 (its 3 micro-batches of epoch 1, then 2 more)
    died = _launch(tmp_path, killed, folder, recipe, 2, kill_at="1:5")
    assert died.returncode != 0
    assert (killed / "checkpoint.pt").is_file() and not (killed / "final.json").exists()
    resumed = _launch(tmp_path, killed, folder, recipe, 2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr and "from epoch 2" in resumed.stderr
    final, reference = (json.loads((run / "final.json").read_text()) for run in (killed, ddp_reference))
    for key in ("test_acc", "test_top5", "test_loss", "train_acc", "train_loss", "identity"):
        assert final[key] == reference[key], key
    for key, value in _parameters(ddp_reference).items():
        assert torch.equal(value, _parameters(killed)[key]), key


def test_a_second_process_on_the_same_run_folder_is_refused(folder: Path, recipe: Path, tmp_path: Path) -> None:
    config = TrainConfig("resnet18", load_recipe(recipe))
    holder = RunFolder(tmp_path / "run", {})
    holder.lock()
    try:
        with pytest.raises(ValueError, match="being trained by another process right now"):
            train(config, tmp_path / "run", data_root=folder, device="cpu", progress=False)
    finally:
        holder.unlock()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_batch_plan_gives_each_process_its_micro_batches() -> None:
    assert BatchPlan(8, accumulate=2, rank=1, world_size=2).parts() == (slice(2, 4), slice(6, 8))
    assert BatchPlan(8, accumulate=4).parts() == tuple(slice(2 * i, 2 * i + 2) for i in range(4))
    with pytest.raises(ValueError, match="does not split into 3 processes x 1"):
        BatchPlan(8, world_size=3)


def _broken_copies(folder: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    import shutil

    cases = {}
    flat = tmp_path / "flat"
    shutil.copytree(folder / "train", flat / "train")
    cases["no val/"] = (flat, "is not ImageFolder-shaped: it has no 'val/' folder")
    differ = tmp_path / "differ"
    shutil.copytree(folder, differ)
    (differ / "val" / "n03").rename(differ / "val" / "n04")
    cases["class lists"] = (differ, "only in train: n03; only in val: n04")
    garbage = tmp_path / "garbage"
    shutil.copytree(folder, garbage)
    (garbage / "train" / "n01" / "0.jpg").write_bytes(b"not a jpeg")
    cases["unreadable"] = (garbage, "0.jpg cannot be read")
    return cases


def test_bad_folders_get_one_line_and_leave_nothing(
    folder: Path, recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, (root, expected) in _broken_copies(folder, tmp_path).items():
        out = tmp_path / f"out-{name}"
        with pytest.raises(SystemExit) as exit_info:
            train_main(["--model", "resnet18", "--recipe", str(recipe), "--data", str(root), "--out", str(out),
                        "--device", "cpu", "--no-progress"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, name
        assert expected in err, (name, err)
        assert not out.exists(), name
    with pytest.raises(ValueError, match="is not ImageFolder-shaped"):
        scan_image_folder(tmp_path)


def test_more_processes_than_batches_is_refused_on_every_rank(folder: Path, recipe: Path, tmp_path: Path) -> None:
    result = _launch(tmp_path, tmp_path / "run", folder, recipe, 2, "--batch-size", "32")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all("24 training images make no full global batch of 32" in line for line in errors)
    assert "Traceback" not in "\n".join(errors) and not (tmp_path / "run").exists()


def test_ctrl_c_says_how_to_resume(
    folder: Path, recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ghost.train.engine as engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train_one_epoch", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--model", "resnet18", "--recipe", str(recipe), "--data", str(folder),
                    "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 130 and err.count("\n") == 1
    assert err.startswith("error: interrupted; run the same command again to resume")


def test_augmentation_is_a_function_of_the_sample_seed_and_leaves_the_global_rng_alone(folder: Path) -> None:
    from ghost.data.imagefolder import SeededImageDataset, train_transform

    data = SeededImageDataset(scan_image_folder(folder).train, train_transform(16))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    first, label = data[(5, 123)]
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched
    assert first.dtype == torch.uint8 and first.shape == (3, 16, 16) and label == 0
    assert torch.equal(data[(5, 123)][0], first)
    assert any(not torch.equal(data[(5, seed)][0], first) for seed in range(5))
