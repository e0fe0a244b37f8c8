"""Training: recipes, the engine (one process or torchrun DDP) with atomic checkpoints and exact resume, runs,
and fine-tuning with knowledge distillation."""

from ghost.recipes import Dataset, DeviceSettings, Recipe, Scale, Schedule, list_recipes, load_recipe
from ghost.train.distillation import DistillationLoss, distill
from ghost.train.distributed import Distributed, distributed_session
from ghost.train.engine import (
    Engine,
    EpochStats,
    EvalStats,
    Parallelism,
    TrainConfig,
    build_model,
    derive_seed,
    enable_fast_cuda_math,
    evaluate,
    resolve_device,
    run_identity,
    train,
    train_one_epoch,
)
from ghost.train.runs import DEFAULT_RUNS_DIR, export_record, find_runs, load_final, load_trained, run_dir, runs_frame
from ghost.train.sources import BatchPlan, TrainingData, load_data

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
    "Scale",
    "Schedule",
    "TrainConfig",
    "TrainingData",
    "build_model",
    "derive_seed",
    "distill",
    "distributed_session",
    "enable_fast_cuda_math",
    "evaluate",
    "export_record",
    "find_runs",
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
