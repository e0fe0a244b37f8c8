"""Where a dataset copy is: the folder a caller names, or else the environment variable of its kind.

One resolver for the three kinds of copy (``GHOST_CIFAR10``: CIFAR-10, ``GHOST_IMAGENET``: an ImageFolder-style
copy, ``GHOST_IMAGENET_SAMPLES``: a folder of ImageNet JPEGs with ``labels.csv``); each loader checks the layout.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataNotFoundError", "data_root"]


class DataNotFoundError(ValueError):
    """A dataset is missing or malformed; the message says what was looked for where and how to fix it."""

    def _render_traceback_(self) -> list[str]:
        """How IPython (a notebook) shows this error: one line, no stack; the message says what to fix."""
        return [f"{type(self).__name__}: {self}"]


def data_root(root: str | Path | None, env_var: str, what: str, how_to_fix: str) -> Path:
    """``root``, or else ``$env_var`` when ``root`` is ``None`` or empty, with ``~`` expanded.

    Raises:
        DataNotFoundError: neither is given (the message names ``what`` was looked for and ``how_to_fix`` it).
    """
    if root is None or str(root) == "":
        root = os.environ.get(env_var)
        if not root:
            raise DataNotFoundError(f"no {what} given and {env_var} is not set; {how_to_fix}")
    return Path(root).expanduser()
