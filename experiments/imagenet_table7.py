"""ResNet-50 against Ghost-ResNet-50 (s=2 and s=4) on ImageNet-format data (paper Table 7).

    python -m experiments.imagenet_table7 --data ../shared/data/imagenette2-224      # CPU budget on Imagenette
    python -m experiments.imagenet_table7 --data /data/imagenet --recipe imagenet-resnet50 --launcher submitit

Trains the configurations not finished yet, then writes `results/imagenette_table7.{csv,md}` and
`results/figures/imagenette_table7.png`: measured params/FLOPs (1000 classes, 224x224) and top-1/top-5 beside
the paper's. The recipe `imagenet-resnet50` is the paper's; `imagenette-budget` (default) fits a 2-core CPU.
"""

from __future__ import annotations

import sys

from experiments._tables import IMAGENET_TABLE7, main

if __name__ == "__main__":
    sys.exit(main([IMAGENET_TABLE7], __doc__.split("\n\n")[0]))
