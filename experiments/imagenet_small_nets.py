"""GhostNet 0.5x/1.0x/1.3x against MobileNetV3-Large 1.0x and 0.75x under one recipe, on ImageNet-format data.

    python -m experiments.imagenet_small_nets --data ../shared/data/imagenette2-224    # CPU budget on Imagenette
    python -m experiments.imagenet_small_nets --data /data/imagenet --recipe imagenet-ghostnet --launcher submitit

Trains the configurations not finished yet, then writes `results/imagenette_small_nets_<recipe>.{csv,md}` and
`results/figures/imagenette_small_nets_<recipe>.png`: params and FLOPs (1000 classes at 224x224, and as
trained), the measured top-1, and the paper's ImageNet-1k numbers in their own columns. The recipe
`imagenet-ghostnet` is the paper's; `imagenette-64px` (default) fits a 2-core CPU. The committed Imagenette table
comes from `python -m experiments.campaign imagenette` instead (several seeds, the recipe chosen on a validation
split).
"""

from __future__ import annotations

import sys

from experiments._tables import IMAGENETTE_SMALL_NETS, main

if __name__ == "__main__":
    sys.exit(main([IMAGENETTE_SMALL_NETS], __doc__.split("\n\n")[0]))
