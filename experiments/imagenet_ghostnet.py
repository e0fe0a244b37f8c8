"""GhostNet 0.5x/1.0x/1.3x against MobileNetV3-Large under one recipe, on ImageNet-format data (paper Table 8).

    python -m experiments.imagenet_ghostnet --data ../shared/data/imagenette2-224    # CPU budget on Imagenette
    python -m experiments.imagenet_ghostnet --data /data/imagenet --recipe imagenet-ghostnet --launcher submitit

Trains the configurations not finished yet, then writes `results/imagenette_ghostnet.{csv,md}` and
`results/figures/imagenette_ghostnet.png`: measured params/FLOPs (1000 classes, 224x224) and top-1 beside
the paper's. The recipe `imagenet-ghostnet` is the paper's; `imagenette-budget` (default) fits a 2-core CPU.
"""

from __future__ import annotations

import sys

from experiments._tables import IMAGENET_GHOSTNET, main

if __name__ == "__main__":
    sys.exit(main([IMAGENET_GHOSTNET], __doc__.split("\n\n")[0]))
