"""VGG-16, Ghost-VGG-16 (s=2), ResNet-56 and Ghost-ResNet-56 (s=2) on CIFAR-10 (paper Table 4).

    python -m experiments.cifar_compression [--recipe quick|paper|long|fast] [--seeds N] [--jobs J]

Trains the configurations not finished yet (runs shared with the other CIFAR tables), then writes
`results/cifar10_compression.{csv,md}` and `results/figures/cifar10_compression.png`.
"""

from __future__ import annotations

import sys

from experiments._tables import CIFAR_COMPRESSION, main

if __name__ == "__main__":
    sys.exit(main([CIFAR_COMPRESSION], __doc__.split("\n\n")[0]))
