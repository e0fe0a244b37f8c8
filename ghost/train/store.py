"""Alias of :mod:`ghost.runs.folder`: a run folder on disk, its files, lock, checkpoints and record."""

from ghost.runs.folder import CHECKPOINT, FINAL, METRIC_COLUMNS, METRICS, MODEL, RunFolder, check_writable, differences

__all__ = ["CHECKPOINT", "FINAL", "METRICS", "METRIC_COLUMNS", "MODEL", "RunFolder", "check_writable", "differences"]
