"""Finished runs on disk: where a configuration's run lives, finding runs, loading a trained model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ghost.io import write_text_atomic
from ghost.recipes import DeviceSettings
from ghost.train.engine import TrainConfig, build_model
from ghost.train.store import FINAL, METRICS, MODEL

DEFAULT_RUNS_DIR = Path("runs")


def run_dir(config: TrainConfig, runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """The folder of a configuration's run: ``<runs_dir>/<recipe>/<model>[-s<ratio>-d<dw_size>]/seed<seed>``, with
    a ``-val`` suffix for a validation run (:attr:`TrainConfig.validation`).

    Sweeps that share a configuration share its run folder, so each configuration is trained once.
    """
    name = config.model if config.ratio is None else f"{config.model}-s{config.ratio}-d{config.dw_size}"
    return Path(runs_dir) / config.recipe.name / name / f"seed{config.seed}{'-val' if config.validation else ''}"


def find_runs(root: str | Path = DEFAULT_RUNS_DIR) -> list[Path]:
    """Finished run folders (those holding ``final.json``) under ``root``, sorted."""
    return sorted(path.parent for path in Path(root).rglob(FINAL))


def load_final(run: str | Path) -> dict[str, Any]:
    """The ``final.json`` dict of a finished run."""
    path = Path(run) / FINAL
    if not path.is_file():
        raise ValueError(f"{run} is not a finished run (no {FINAL}); train it first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is corrupt ({error}); delete the run folder {run} and train it again") from error


def export_record(run: str | Path, dest: str | Path) -> Path:
    """Copy the record of the finished run ``run`` (``metrics.csv`` and ``final.json``, never weights or
    checkpoints) into the folder ``dest``, atomically and ``final.json`` last (a record without it is unfinished);
    return ``dest``."""
    load_final(run)  # raises for an unfinished or corrupt run
    dest = Path(dest)
    for name in (METRICS, FINAL):
        write_text_atomic(dest / name, (Path(run) / name).read_text(encoding="utf-8"))
    return dest


def load_trained(run: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The final model of a finished run (eval mode, on the CPU) and its ``final.json`` dict."""
    final = load_final(run)
    config = final["config"]
    model = build_model(config["model"], config["ratio"], config["dw_size"], config.get("num_classes", 10))
    path = Path(run) / MODEL
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as error:  # a damaged file fails in many ways in torch.load / load_state_dict
        raise ValueError(
            f"{path} is corrupt or does not fit {config['model']} ({type(error).__name__}); delete the run "
            f"folder {run} and train it again"
        ) from error
    return model.eval(), final


_CONFIGURATION_KEYS = ("model", "ratio", "dw_size", "seed")


def training_setting(config: dict[str, Any]) -> str:
    """How a run's ``final.json`` config says it trained (:attr:`DeviceSettings.label`, e.g. ``bf16+channels_last``)."""
    return DeviceSettings(bool(config.get("bf16")), bool(config.get("channels_last")),
                          bool(config.get("compile"))).label


def runs_frame(runs: list[str | Path]) -> pd.DataFrame:
    """One row per finished run (a run folder or a committed record): configuration, final accuracy (on the
    held-out validation split where ``validation`` is true, else on the test split), size,
    provenance, the speed setting it trained with, and ``shared_identity``: its identity without the
    configuration (model, ratio, dw_size, seed), which every run of one table must share (recipe, data copy)."""
    rows = []
    for run in runs:
        final = load_final(run)
        config = final["config"]
        rows.append(
            {
                "model": config["model"],
                "ratio": config["ratio"],
                "dw_size": config["dw_size"],
                "seed": config["seed"],
                "dataset": config.get("dataset", "cifar10"),
                "validation": bool(config.get("validation", False)),
                "test_acc": final["test_acc"],
                "test_top5": final.get("test_top5", float("nan")),
                "test_acc_running_bn": final.get("test_acc_running_bn", float("nan")),
                "params": final["params"],
                "macs": final["macs"],
                "recipe": config["recipe"],
                "scale": final["scale"],
                "epochs": config["epochs"],
                "train_images": config["train_images"],
                "input_size": "x".join(map(str, config.get("input_size", (3, 32, 32))[1:])),
                "test_images": config["test_images"],
                "data": final["data"]["label"],
                "data_name": final["data"].get("name") or Path(final["data"]["root"]).name,  # older: the path
                "hardware": final["hardware"],
                "commit": final["commit"],
                "torch": final["torch"],
                "wall_time_s": final["wall_time_s"],
                "setting": training_setting(config),
                "shared_identity": json.dumps(
                    {k: v for k, v in final["identity"].items() if k not in _CONFIGURATION_KEYS}, sort_keys=True),
                "run_dir": str(run),
            }
        )
    return pd.DataFrame(rows)
