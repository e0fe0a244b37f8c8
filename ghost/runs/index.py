"""Finished runs on disk: where a configuration's run lives, finding runs, and one table of their records."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ghost.io import write_text_atomic
from ghost.runs.folder import METRICS
from ghost.runs.record import FINAL, RunRecord, read_final
from ghost.runs.spec import RunSpec

__all__ = ["DEFAULT_RUNS_DIR", "export_record", "find_runs", "load_final", "run_dir", "runs_frame"]

DEFAULT_RUNS_DIR = Path("runs")


def run_dir(config: RunSpec, runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """The folder of a configuration's run: ``<runs_dir>/<recipe>/<model label>/seed<seed>`` (the label of
    :class:`ghost.runs.ModelSpec`: ``<model>[-s<ratio>-d<dw_size>]``), with a ``-val`` suffix for a validation run
    (:attr:`RunSpec.validation`).

    Sweeps that share a configuration share its run folder, so each configuration is trained once.
    """
    seed = f"seed{config.seed}{'-val' if config.validation else ''}"
    return Path(runs_dir) / config.recipe.name / config.model_spec.label / seed


def find_runs(root: str | Path = DEFAULT_RUNS_DIR) -> list[Path]:
    """Finished run folders (those holding a record) under ``root``, sorted."""
    return sorted(path.parent for path in Path(root).rglob(FINAL))


def load_final(run: str | Path) -> dict:
    """The record of a finished run as the JSON dict it is stored as (:func:`ghost.runs.record.read_final`)."""
    return read_final(run)


def export_record(run: str | Path, dest: str | Path) -> Path:
    """Copy the record of the finished run ``run`` (``metrics.csv`` and the record, never weights or
    checkpoints) into the folder ``dest``, atomically and the record last (a folder without it is unfinished);
    return ``dest``."""
    read_final(run)  # raises for an unfinished or corrupt run
    dest = Path(dest)
    for name in (METRICS, FINAL):
        write_text_atomic(dest / name, (Path(run) / name).read_text(encoding="utf-8"))
    return dest


def runs_frame(runs: list[str | Path]) -> pd.DataFrame:
    """One row per finished run (a run folder or a committed record): configuration, final accuracy (on the
    held-out validation split where ``validation`` is true, else on the test split), size,
    provenance, the speed setting it trained with, and ``shared_identity``: its identity without the
    configuration (model, ratio, dw_size, seed), which every run of one table must share (recipe, data copy)."""
    rows = []
    for run in runs:
        record = RunRecord.read(run)
        config, nan = record.config, float("nan")
        rows.append(
            {
                "model": config["model"],
                "ratio": config["ratio"],
                "dw_size": config["dw_size"],
                "seed": record.seed,
                "dataset": str(record.dataset),
                "validation": record.validation,
                "test_acc": record.test_acc,
                "test_top5": nan if record.test_top5 is None else record.test_top5,
                "test_acc_running_bn": nan if record.test_acc_running_bn is None else record.test_acc_running_bn,
                "params": record.params,
                "macs": record.macs,
                "recipe": config["recipe"],
                "scale": record.scale,
                "epochs": config["epochs"],
                "train_images": config["train_images"],
                "input_size": "x".join(map(str, record.input_size[1:])),
                "test_images": config["test_images"],
                "data": record.data["label"],
                "data_name": record.data_name,
                "hardware": record.hardware,
                "commit": record.commit,
                "torch": record.torch,
                "wall_time_s": record.wall_time_s,
                "setting": record.setting,
                "shared_identity": json.dumps(record.shared_identity, sort_keys=True),
                "run_dir": str(run),
            }
        )
    return pd.DataFrame(rows)


def learning_curves(runs: list[str | Path]) -> pd.DataFrame:
    """The per-epoch metrics of finished runs (run folders or committed records): one row per run and epoch
    with its configuration (``model, ratio, dw_size, seed, recipe``) and ``metrics.csv``'s columns (``epoch,
    train_loss, train_acc, test_acc``... ; ``test_acc`` is NaN after epochs without a test point)."""
    frames = []
    for run in runs:
        config = RunRecord.read(run).config
        metrics = pd.read_csv(Path(run) / METRICS)
        frames.append(metrics.assign(model=config["model"], ratio=config["ratio"], dw_size=config["dw_size"],
                                     seed=config["seed"], recipe=config["recipe"]))
    if not frames:
        raise ValueError("no finished runs to read learning curves from; pass run folders holding the record")
    return pd.concat(frames, ignore_index=True)
