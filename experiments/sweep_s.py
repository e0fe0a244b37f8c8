"""Ghost-VGG-16 (d=3) on CIFAR-10 for s in {2,3,4,5} with the VGG-16 baseline (paper Table 3).

    python -m experiments.sweep_s [--recipe quick|paper|long|fast] [--seeds N] [--jobs J]

Trains the configurations not finished yet (runs shared with the other CIFAR tables), then writes
`results/cifar10_s_sweep.{csv,md}` and `results/figures/cifar10_s_sweep.png`.
"""

from __future__ import annotations

import sys

from experiments._cifar_tables import main

if __name__ == "__main__":
    sys.exit(main(["s_sweep"], __doc__.split("\n\n")[0]))
