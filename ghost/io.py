"""Atomic file writes: a temporary file in the same folder, then ``os.replace`` (never a partial file)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["save_figure_atomic", "save_torch_atomic", "write_json_atomic", "write_text_atomic"]


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (readers see the old file or the whole new one)."""
    path = Path(path)
    tmp = _temporary(path)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_figure_atomic(figure: Figure, path: str | Path, dpi: int = 150) -> None:
    """``figure.savefig`` to ``path`` atomically (the format follows the suffix)."""
    path = Path(path)
    tmp = _temporary(path)
    figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or None)
    os.replace(tmp, path)


def save_torch_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    path = Path(path)
    tmp = _temporary(path)
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
