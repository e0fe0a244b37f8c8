"""Reproduce the paper's three CIFAR-10 tables: d sweep, s sweep and compression (10 configurations).

    python -m experiments.reproduce                                    # smoke scale: <15 min on 2 CPU cores
    python -m experiments.reproduce --recipe paper --seeds 3 --jobs 4  # full scale, on one GPU

Each configuration is trained once per seed (runs shared between the tables, finished ones skipped), then
`results/cifar10_{d_sweep,s_sweep,compression}.{csv,md}` and their figures under `results/figures/` are
written.
"""

from __future__ import annotations

import sys

from experiments._tables import CIFAR_COMPRESSION, d_sweep, main, s_sweep
from ghost.train import Dataset

TABLES = [d_sweep(Dataset.CIFAR10, "vgg16_cifar"), s_sweep(Dataset.CIFAR10, "vgg16_cifar"), CIFAR_COMPRESSION]

if __name__ == "__main__":
    sys.exit(main(TABLES, __doc__.split("\n\n")[0]))
