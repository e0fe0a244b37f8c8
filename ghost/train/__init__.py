"""Training: the engine (one process or torchrun DDP) with atomic checkpoints and exact resume, and fine-tuning
with knowledge distillation. This package is the public entry point of training: the names of the recipes
(:mod:`ghost.recipes`) and of runs (:mod:`ghost.runs`) it re-exports keep their documented spelling here
(``ghost.train.TrainConfig`` is :class:`ghost.runs.RunSpec`)."""

from ghost.recipes import Dataset, DeviceSettings, Recipe, Scale, Schedule, list_recipes, load_recipe
from ghost.runs import (
    DEFAULT_RUNS_DIR,
    RunSpec,
    build_model,
    export_record,
    find_runs,
    learning_curves,
    load_final,
    load_trained,
    run_dir,
    run_identity,
    runs_frame,
)
from ghost.train.distillation import DistillationLoss, distill
from ghost.train.distributed import Distributed, distributed_session
from ghost.train.engine import (
    Engine,
    EpochStats,
    EvalStats,
    Parallelism,
    derive_seed,
    enable_fast_cuda_math,
    evaluate,
    resolve_device,
    train,
    train_one_epoch,
)
from ghost.train.sources import BatchPlan, TrainingData, data_copy_fingerprint, load_data

TrainConfig = RunSpec

__all__ = [
    "DEFAULT_RUNS_DIR",
    "BatchPlan",
    "Dataset",
    "DeviceSettings",
    "DistillationLoss",
    "Distributed",
    "Engine",
    "EpochStats",
    "EvalStats",
    "Parallelism",
    "Recipe",
    "RunSpec",
    "Scale",
    "Schedule",
    "TrainConfig",
    "TrainingData",
    "build_model",
    "data_copy_fingerprint",
    "derive_seed",
    "distill",
    "distributed_session",
    "enable_fast_cuda_math",
    "evaluate",
    "export_record",
    "find_runs",
    "learning_curves",
    "list_recipes",
    "load_data",
    "load_final",
    "load_recipe",
    "load_trained",
    "resolve_device",
    "run_dir",
    "run_identity",
    "runs_frame",
    "train",
    "train_one_epoch",
]
