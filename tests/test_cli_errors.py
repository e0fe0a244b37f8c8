"""Careless input to the experiment CLIs: one ``error: ...`` line on stderr, a non-zero exit, no traceback, and
nothing partial left behind (experiments/_cli.py and its use in complexity, convert_zoo, bench_latency,
bench_train and redundancy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import ghost.io
from experiments import bench_latency, bench_train, complexity, convert_zoo, redundancy
from experiments._cli import check_device, check_results_dir, cli_errors, fail, results_dir
from ghost.io import write_text_atomic

REPO = Path(__file__).resolve().parents[1]

# each CLI with its cheapest arguments, the results folder last; and a function it calls once the input is checked
CLIS: dict[str, tuple[Callable[[list[str]], int], list[str], str]] = {
    "complexity": (complexity.main, [], "measure"),
    "convert_zoo": (convert_zoo.main, ["--models", "resnet18"], "convert"),
    "bench_latency": (bench_latency.main, ["--models", "resnet56_cifar", "--runtimes", "eager"], "_run_pair"),
    "redundancy": (redundancy.main, ["--model", "resnet56_cifar", "--ghost", "none", "--untrained"], "load_inputs"),
}
MODULES = {"complexity": complexity, "convert_zoo": convert_zoo, "bench_latency": bench_latency,
           "redundancy": redundancy, "bench_train": bench_train}


def one_error_line(exit_info: pytest.ExceptionInfo[SystemExit], capsys: pytest.CaptureFixture[str],
                   code: int = 2) -> str:
    """The single stderr line of a CLI that exited with ``code``, without the ``error: `` prefix."""
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.removeprefix("error: ").rstrip("\n")


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# --- the helpers ------------------------------------------------------------------------------------


def test_fail_prints_one_line_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        fail("first problem\n  second line\n", code=3)
    assert one_error_line(exit_info, capsys, code=3) == "first problem; second line"


def test_results_dir_creates_a_missing_folder_and_the_check_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert check_results_dir(target) == target and not (tmp_path / "a").exists()
    assert results_dir(str(target)) == target and target.is_dir()
    assert results_dir(target) == target  # an existing folder is fine


def test_results_dir_refuses_a_file_and_a_path_under_a_file(tmp_path: Path) -> None:
    file = tmp_path / "table.csv"
    file.write_text("kept")
    with pytest.raises(ValueError, match=f"^{file} is a file, not a folder; pass a folder path"):
        results_dir(file)
    with pytest.raises(ValueError, match=f"^cannot create {file / 'out'}: {file} is a file, not a folder"):
        results_dir(file / "out")
    assert file.read_text() == "kept"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_results_dir_refuses_a_read_only_folder(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ValueError, match=f"^{tmp_path} is not writable; pass a folder you can write to"):
            results_dir(tmp_path)
        with pytest.raises(ValueError, match=f"^cannot create {tmp_path / 'new'}: {tmp_path} is not writable"):
            results_dir(tmp_path / "new")
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_check_device_accepts(device: str) -> None:
    assert check_device(device) == device


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:", "cuda:x", "CPU", ""])
def test_check_device_refuses(device: str) -> None:
    with pytest.raises(ValueError, match=f"^unknown device {device!r}; use auto, cpu or cuda\\[:N\\]$"):
        check_device(device)


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (ValueError("bad value\n  fix it"), 2, "bad value; fix it"),
        (PermissionError(13, "Permission denied", "/r/table.csv"), 2, "Permission denied: /r/table.csv"),
        (OSError(28, "No space left on device", "/r/table.csv"), 2, "No space left on device: /r/table.csv"),
        (OSError("socket closed"), 2, "socket closed"),
        (KeyboardInterrupt(), 130, "interrupted; rerun the same command to resume"),
    ],
)
def test_cli_errors_turns_errors_into_one_line(
    error: BaseException, code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info, cli_errors("rerun the same command to resume"):
        raise error
    assert one_error_line(exit_info, capsys, code) == message


def test_cli_errors_lets_bugs_through() -> None:
    with pytest.raises(TypeError), cli_errors():
        raise TypeError("a bug keeps its traceback")


def test_an_interrupted_atomic_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ghost.io.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(tmp_path / "out" / "table.csv", "half")
    assert files_under(tmp_path) == []


# --- each CLI ---------------------------------------------------------------------------------------


def _bad_results(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """A results path of this ``kind`` and the start of the error it gets."""
    file = tmp_path / "results"
    file.write_text("a file, not a folder")
    if kind == "file":
        return file, f"{file} is a file, not a folder"
    if kind == "under a file":
        return file / "sub", f"cannot create {file / 'sub'}: {file} is a file, not a folder"
    file.unlink()
    file.mkdir(mode=0o500)
    return file, f"{file} is not writable"


@pytest.mark.parametrize("kind", ["file", "under a file", "read-only"])
@pytest.mark.parametrize("cli", CLIS)
def test_unusable_results_folder(
    cli: str, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if kind == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes to read-only folders")
    main, argv, work = CLIS[cli]
    monkeypatch.setattr(MODULES[cli], work, pytest.fail)  # the check comes before any work
    results, message = _bad_results(kind, tmp_path)
    before = files_under(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--results-dir", str(results)])
    assert one_error_line(exit_info, capsys).startswith(message)
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("cli", CLIS)
def test_ctrl_c_is_one_line_with_exit_130(
    cli: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    main, argv, work = CLIS[cli]
    monkeypatch.setattr(MODULES[cli], work, interrupt)
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--results-dir", str(tmp_path / "results")])
    assert one_error_line(exit_info, capsys, code=130) == "interrupted"
    assert not (tmp_path / "results").exists()


def test_ctrl_c_in_a_process_prints_no_traceback(tmp_path: Path) -> None:
    code = ("import sys; from experiments import complexity\n"
            "def interrupt(backend): raise KeyboardInterrupt\n"
            "complexity.measure = interrupt\n"
            "sys.exit(complexity.main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "--results-dir", str(tmp_path / "results")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 130
    assert result.stderr == "error: interrupted\n"
    assert not (tmp_path / "results").exists()


def test_bench_train_ctrl_c(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupt(name: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_train, "load_recipe", interrupt)
    with pytest.raises(SystemExit) as exit_info:
        bench_train.main(["--device", "cpu"])
    assert one_error_line(exit_info, capsys, code=130) == "interrupted"


@pytest.mark.parametrize("cli", ["bench_latency", "bench_train"])
def test_unknown_device(cli: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--device", "tpu"] + (["--results-dir", str(tmp_path / "results")] if cli == "bench_latency" else [])
    with pytest.raises(SystemExit) as exit_info:
        MODULES[cli].main(argv)
    assert one_error_line(exit_info, capsys) == "unknown device 'tpu'; use auto, cpu or cuda[:N]"
    assert files_under(tmp_path) == []


# --- redundancy's weights ---------------------------------------------------------------------------


def corrupt_run(runs: Path) -> Path:
    """A finished run of resnet56_cifar whose model.pt is not a checkpoint."""
    run = runs / "quick" / "resnet56_cifar" / "seed0"
    run.mkdir(parents=True)
    config = {"model": "resnet56_cifar", "ratio": None, "dw_size": None, "seed": 0, "recipe": "quick"}
    (run / "final.json").write_text(json.dumps({"config": config, "test_acc": 50.0, "scale": "full"}))
    (run / "model.pt").write_bytes(b"\x00" * 64)
    return run


@pytest.mark.parametrize("source", ["garbage checkpoint", "corrupt run", "corrupt run found under --runs"])
def test_redundancy_unreadable_weights(source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    run = corrupt_run(tmp_path / "runs")
    argv = {"garbage checkpoint": ["--checkpoint", str(garbage)], "corrupt run": ["--checkpoint", str(run)],
            "corrupt run found under --runs": ["--runs", str(tmp_path / "runs")]}[source]
    out = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_info:
        redundancy.main([*argv, "--model", "resnet56_cifar", "--ghost", "none", "--results-dir", str(out),
                         "--data", str(tmp_path / "no-data")])
    message = one_error_line(exit_info, capsys)
    if source == "garbage checkpoint":
        assert message.startswith(f"{garbage} cannot be read as PyTorch weights")
    else:
        assert str(run / "model.pt") in message and "corrupt" in message
    assert not out.exists()


def test_redundancy_corrupt_final_json_under_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = corrupt_run(tmp_path / "runs")
    (run / "final.json").write_text("{truncated")
    with pytest.raises(SystemExit) as exit_info:
        redundancy.main(["--model", "resnet56_cifar", "--ghost", "none", "--runs", str(tmp_path / "runs"),
                         "--results-dir", str(tmp_path / "results")])
    message = one_error_line(exit_info, capsys)
    assert str(run / "final.json") in message and "corrupt" in message
    assert not (tmp_path / "results").exists()
