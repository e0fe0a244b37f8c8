"""A run folder on disk: its files, the lock that keeps a second process out, checkpoints and the result.

A run folder holds ``checkpoint.pt`` (written atomically after every epoch while the run is going),
``metrics.csv`` (one row per epoch) and, once finished, ``model.pt`` (final weights) and ``final.json`` (the
result with its full provenance, :class:`ghost.runs.RunRecord`; its presence marks the run as finished).
``.lock`` is held (an ``fcntl`` lock, released by the operating system when the process ends, even on SIGKILL)
by the process that trains the run.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
from pathlib import Path
from typing import IO, Any

import torch

from ghost.io import save_torch_atomic, write_text_atomic
from ghost.runs.record import FINAL, RunRecord

__all__ = ["CHECKPOINT", "FINAL", "METRICS", "MODEL", "METRIC_COLUMNS", "RunFolder", "check_writable", "differences"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
MODEL = "model.pt"
LOCK = ".lock"
_CHECKPOINT_VERSION = 2
METRIC_COLUMNS = (
    "epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "test_top5", "epoch_time_s",
    "images_per_s", "test_acc_running_bn",
)  # fmt: skip
"""``test_acc_running_bn``: with precise BN, the test top-1 measured with the running statistics just before they
were recomputed (what the run would have scored without precise BN); empty otherwise."""


def differences(expected: dict[str, Any], found: dict[str, Any], prefix: str = "") -> str:
    """The keys (nested dicts as ``a.b``) whose values differ, as ``key: <found> there, <expected> now``."""
    parts = []
    for key in sorted(set(expected) | set(found)):
        new, old = expected.get(key), found.get(key)
        if isinstance(new, dict) and isinstance(old, dict):
            parts.append(differences(new, old, f"{prefix}{key}."))
        elif new != old:
            parts.append(f"{prefix}{key}: {old!r} there, {new!r} now")
    return ", ".join(p for p in parts if p)


def check_writable(path: str | Path) -> None:
    """Raise ``ValueError`` when the run folder ``path`` cannot be created or written (before any work)."""
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"cannot create the run folder {path}: {existing} is a file; use another path")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write the run folder {path}: {existing} is read-only; use another path")


class RunFolder:
    """The files of one run, for a run identity (a JSON-ready dict that says what makes two runs the same)."""

    def __init__(self, path: str | Path, identity: dict[str, Any]) -> None:
        self.path = Path(path)
        self.identity = identity
        self._lock: IO[str] | None = None

    def finished(self) -> RunRecord | None:
        """The record when this run is finished; raises if the folder holds another run or a corrupt record."""
        if not (self.path / FINAL).is_file():
            return None
        record = RunRecord.read(self.path)
        if record.identity is None:
            raise ValueError(f"{self.path / FINAL} is not a {FINAL} of this engine; delete {self.path} to redo the run")
        if record.identity != self.identity:
            raise ValueError(
                f"{self.path} holds a finished run of a different configuration "
                f"({differences(self.identity, record.identity)}); use another output folder or delete it"
            )
        return record

    def lock(self) -> None:
        """Take the folder's lock (creating the folder); raises if another process is training this run."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ValueError(
                f"{self.path} is being trained by another process right now; wait for it to finish "
                "(a finished run is then reused) or use another output folder"
            ) from None
        self._lock = handle
        for stale in self.path.glob(".*.tmp"):  # left by a run killed in the middle of an atomic write
            stale.unlink()

    def unlock(self) -> None:
        """Release the lock (the operating system releases it anyway when the process ends)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last epoch's checkpoint of this run, ``None`` when there is none; raises if it is unreadable
        or belongs to another run."""
        path = self.path / CHECKPOINT
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            version, found = state["version"], state["identity"]
        except Exception as error:  # torch.load fails in many ways on a damaged file; all mean "unreadable"
            raise ValueError(
                f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}: {str(error)[:120]}); "
                f"delete it to restart this run from scratch"
            ) from error
        if version != _CHECKPOINT_VERSION or found != self.identity:
            raise ValueError(
                f"checkpoint {path} belongs to a different run ({differences(self.identity, found)}); "
                f"use another output folder or delete {self.path} to start over"
            )
        return state

    def save_checkpoint(self, state: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Write the checkpoint and ``metrics.csv`` atomically (``state`` besides the identity and version)."""
        save_torch_atomic({"version": _CHECKPOINT_VERSION, "identity": self.identity, **state},
                          self.path / CHECKPOINT)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        write_text_atomic(self.path / METRICS, buffer.getvalue())

    def finish(self, weights: dict[str, torch.Tensor], record: RunRecord) -> None:
        """Write ``model.pt`` then the record (which marks the run finished), and drop the checkpoint."""
        save_torch_atomic({k: v.detach().cpu() for k, v in weights.items()}, self.path / MODEL)
        write_text_atomic(self.path / FINAL, record.to_json())
        (self.path / CHECKPOINT).unlink(missing_ok=True)
