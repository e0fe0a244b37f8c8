"""CIFAR-10 training: recipes, the training engine with atomic checkpoints and exact resume, and runs."""

from ghost.train.engine import Engine, TrainConfig, build_model, derive_seed, resolve_device, train
from ghost.train.recipes import Recipe, list_recipes, load_recipe
from ghost.train.runs import DEFAULT_RUNS_DIR, find_runs, load_final, load_trained, run_dir, runs_frame

__all__ = [
    "DEFAULT_RUNS_DIR",
    "Engine",
    "Recipe",
    "TrainConfig",
    "build_model",
    "derive_seed",
    "find_runs",
    "list_recipes",
    "load_final",
    "load_recipe",
    "load_trained",
    "resolve_device",
    "run_dir",
    "runs_frame",
    "train",
]
