"""Atomic file writes (a temporary file in the same folder, then ``os.replace``: never a partial file), and reading
a JSON object back."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["read_json_object", "save_figure_atomic", "save_torch_atomic", "write_json_atomic", "write_text_atomic"]


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file next to ``path`` (its folder created if missing) that replaces ``path`` when the block
    ends normally and is removed when it raises or is interrupted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (readers see the old file or the whole new one)."""
    with _replacing(Path(path)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_figure_atomic(figure: Figure, path: str | Path, dpi: int = 150) -> None:
    """``figure.savefig`` to ``path`` atomically (the format follows the suffix)."""
    path = Path(path)
    with _replacing(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or None)


def save_torch_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    with _replacing(Path(path)) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def read_json_object(path: str | Path, fix: str) -> dict[str, Any]:
    """The JSON object stored in the file ``path``.

    Raises:
        ValueError: the file cannot be read, is not JSON or holds another value than an object (the message names
            the file and ends with ``fix``, what to do about it).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is unreadable or corrupt ({error}); {fix}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} is corrupt (it holds no JSON object); {fix}")
    return data
