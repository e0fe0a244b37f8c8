"""Ghost-<model> (s=2) for d in {1,3,5,7} with the <model> baseline (paper Table 2: VGG-16 on CIFAR-10).

    python -m experiments.sweep_d [--recipe quick|paper|long|fast] [--seeds N] [--jobs J]
    python -m experiments.sweep_d --dataset imagenet --data ../shared/data/imagenette2-224 --model resnet50

Trains the configurations not finished yet (runs shared with the other tables), then writes
`results/cifar10_d_sweep.{csv,md}` and `results/figures/cifar10_d_sweep.png` (on ImageNet-format data:
`results/imagenette_d_sweep[_<model>].*`).
"""

from __future__ import annotations

import sys

from experiments._tables import d_sweep, main, sweep_tables

if __name__ == "__main__":
    sys.exit(main(sweep_tables(d_sweep), __doc__.split("\n\n")[0]))
