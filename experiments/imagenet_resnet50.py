"""ResNet-50 against Ghost-ResNet-50 (s=2 and s=4) under one recipe, on ImageNet-format data.

    python -m experiments.imagenet_resnet50 --data ../shared/data/imagenette2-224    # CPU budget on Imagenette
    python -m experiments.imagenet_resnet50 --data /data/imagenet --recipe imagenet-resnet50 --launcher submitit

Trains the configurations not finished yet, then writes `results/imagenette_resnet50_<recipe>.{csv,md}` and
`results/figures/imagenette_resnet50_<recipe>.png`: params and FLOPs (1000 classes at 224x224, and as trained),
the measured top-1/top-5, and the paper's ImageNet-1k numbers in their own columns. The recipe
`imagenet-resnet50` is the paper's; `imagenette-64px` (default) fits a 2-core CPU. The committed Imagenette table
comes from `python -m experiments.campaign imagenette` instead (several seeds, the recipe chosen on a validation
split).
"""

from __future__ import annotations

import sys

from experiments._tables import IMAGENETTE_RESNET50, main

if __name__ == "__main__":
    sys.exit(main([IMAGENETTE_RESNET50], __doc__.split("\n\n")[0]))
