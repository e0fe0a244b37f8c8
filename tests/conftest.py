"""Shared fixtures: locating the datasets the data-dependent tests need.

Data is never downloaded by the tests. Point them at local copies with environment variables:

- ``GHOST_CIFAR10``: a CIFAR-10 copy (official ``cifar-10-batches-py`` or a class-folder image copy);
- ``GHOST_IMAGENET_SAMPLES``: a folder of ImageNet JPEGs with ``labels.csv``.

When a variable is unset the tests that need it are *skipped with a reason* (shown by ``pytest -ra``).
With ``GHOST_REQUIRE_DATA=1`` (set by ``.ci/run``) a missing dataset fails those tests instead, so CI
never skips them silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _dataset_root(variable: str) -> Path:
    value = os.environ.get(variable)
    require = os.environ.get("GHOST_REQUIRE_DATA") == "1"
    if not value:
        message = f"{variable} is not set: point it at a local copy of the dataset to run this test"
        if require:
            pytest.fail(message + " (GHOST_REQUIRE_DATA=1 forbids skipping)")
        pytest.skip(message)
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        pytest.fail(f"{variable}={value} is not a directory")
    return path


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """Root of a local CIFAR-10 copy (``GHOST_CIFAR10``)."""
    return _dataset_root("GHOST_CIFAR10")


@pytest.fixture(scope="session")
def imagenet_samples_root() -> Path:
    """Folder of ImageNet sample JPEGs with ``labels.csv`` (``GHOST_IMAGENET_SAMPLES``)."""
    return _dataset_root("GHOST_IMAGENET_SAMPLES")


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for the module's tests: as fast for tiny models, and immune to the slowdown of a
    thread pool on a machine whose cores other processes keep busy (restored afterwards)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
