"""Ghost-<model> (d=3) for s in {2,3,4,5} with the <model> baseline (paper Table 3: VGG-16 on CIFAR-10).

    python -m experiments.sweep_s [--recipe quick|paper|long|fast] [--seeds N] [--jobs J]
    python -m experiments.sweep_s --dataset imagenet --data ../shared/data/imagenette2-224 --model resnet50

Trains the configurations not finished yet (runs shared with the other tables), then writes
`results/cifar10_s_sweep.{csv,md}` and `results/figures/cifar10_s_sweep.png` (on ImageNet-format data:
`results/imagenette_s_sweep[_<model>].*`).
"""

from __future__ import annotations

import sys

from experiments._tables import main, s_sweep, sweep_tables

if __name__ == "__main__":
    sys.exit(main(sweep_tables(s_sweep), __doc__.split("\n\n")[0]))
