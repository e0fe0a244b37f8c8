"""Ghost-VGG-16 (s=2) on CIFAR-10 for d in {1,3,5,7} with the VGG-16 baseline (paper Table 2).

    python -m experiments.sweep_d [--recipe quick|paper|long|fast] [--seeds N] [--jobs J]

Trains the configurations not finished yet (runs shared with the other CIFAR tables), then writes
`results/cifar10_d_sweep.{csv,md}` and `results/figures/cifar10_d_sweep.png`.
"""

from __future__ import annotations

import sys

from experiments._cifar_tables import main

if __name__ == "__main__":
    sys.exit(main(["d_sweep"], __doc__.split("\n\n")[0]))
