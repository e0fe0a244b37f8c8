"""Running many tiny LAPACK problems on one thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the body (or a decorated function) with one intra-op thread, then restore the previous count.

    The analysis runs many small operations (eigen- and least-squares problems at most a few hundred
    wide, im2col of single maps). Threading each of them costs far more in synchronisation than it saves:
    on a 2-core machine busy with another job, the same calls took 0.04 s on one thread and 3-40 s on two.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
