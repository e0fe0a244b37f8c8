"""What every experiment CLI does with careless input: one ``error: ...`` line on stderr and a non-zero exit.

No traceback for a mistake the user can fix (a bad value, a results folder that is a file or read-only, a
corrupt file, Ctrl-C), and nothing partial left behind. Usage::

    args = parser.parse_args(argv)
    with cli_errors():
        device = check_device(args.device)
        check_results_dir(args.results_dir)      # fail before the work, create nothing yet
        table = expensive_work()
        write_text_atomic(results_dir(args.results_dir) / "table.csv", table)
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

__all__ = ["check_device", "check_results_dir", "cli_errors", "fail", "results_dir"]

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr (line breaks become ``"; "``) and exit with ``code``."""
    text = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"error: {text}", file=sys.stderr)
    raise SystemExit(code)


def check_results_dir(path: str | Path) -> Path:
    """``path`` as a Path if it is, or can be created as, a folder this process can write to; creates nothing.

    Raises:
        ValueError: ``path`` (or, for a missing ``path``, its nearest existing parent) is not a folder or is
            not writable.
    """
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    prefix = "" if existing == path else f"cannot create {path}: "
    if not existing.is_dir():
        raise ValueError(f"{prefix}{existing} is a file, not a folder; pass a folder path (a missing one is created)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{prefix}{existing} is not writable; pass a folder you can write to")
    return path


def results_dir(path: str | Path) -> Path:
    """The output folder ``path``, created (with its parents) if missing.

    Raises:
        ValueError: as :func:`check_results_dir`: a file, or a folder that is not writable.
    """
    path = check_results_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_device(value: str) -> str:
    """``value`` if it names a device the CLIs accept: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ValueError: any other name.
    """
    if not _DEVICE.fullmatch(value):
        raise ValueError(f"unknown device {value!r}; use auto, cpu or cuda[:N]")
    return value


def _describe(error: OSError) -> str:
    """An OSError in one line naming its path, e.g. ``Permission denied: results/table.csv``."""
    if error.filename is None:
        return str(error)
    return f"{error.strerror or error}: {error.filename}"


@contextlib.contextmanager
def cli_errors(resume_hint: str | None = None) -> Iterator[None]:
    """Turn the errors a user can fix into :func:`fail`: ValueError (exit 2), OSError such as a permission
    problem or a full disk (exit 2, naming the path) and Ctrl-C (exit 130, with ``resume_hint`` if given)."""
    try:
        yield
    except ValueError as error:
        fail(str(error) or type(error).__name__)
    except OSError as error:
        fail(_describe(error))
    except KeyboardInterrupt:
        fail("interrupted" + (f"; {resume_hint}" if resume_hint else ""), code=130)
