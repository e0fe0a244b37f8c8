"""The run as a typed layer: what a run is asked to be (:class:`RunSpec`, :class:`ModelSpec`), what it recorded
(:class:`RunRecord`), its folder on disk (:class:`RunFolder`), where runs live (:func:`run_dir`, :func:`find_runs`,
:func:`runs_frame`) and how its weights load (:func:`load_trained`, the one loader).

It depends on :mod:`ghost.models`, :mod:`ghost.recipes` and :mod:`ghost.io` only; training, prediction and the
redundancy analysis build on it.
"""

from ghost.runs.folder import CHECKPOINT, METRIC_COLUMNS, METRICS, MODEL, RunFolder, check_writable, differences
from ghost.runs.index import (
    DEFAULT_RUNS_DIR,
    export_record,
    find_runs,
    learning_curves,
    load_final,
    run_dir,
    runs_frame,
)
from ghost.runs.record import FINAL, RunRecord, read_final
from ghost.runs.spec import DEFAULT_DW_SIZE, DEFAULT_RATIO, ModelSpec, RunSpec, build_model, run_identity
from ghost.runs.weights import Trained, load_state, load_trained, load_weights, read_state_dict, resolve_weights

__all__ = [
    "CHECKPOINT",
    "DEFAULT_DW_SIZE",
    "DEFAULT_RATIO",
    "DEFAULT_RUNS_DIR",
    "FINAL",
    "METRICS",
    "METRIC_COLUMNS",
    "MODEL",
    "ModelSpec",
    "RunFolder",
    "RunRecord",
    "RunSpec",
    "Trained",
    "build_model",
    "check_writable",
    "differences",
    "export_record",
    "find_runs",
    "learning_curves",
    "load_final",
    "load_state",
    "load_trained",
    "load_weights",
    "read_final",
    "read_state_dict",
    "resolve_weights",
    "run_dir",
    "run_identity",
    "runs_frame",
]
