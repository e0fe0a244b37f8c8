"""Model surgery: convert any CNN built from ``nn.Conv2d`` into its Ghost version, and prove it.

See :func:`ghostify`. The BatchNorm/activation policies (paper Section 3.1; the README says why this matters):

- ``"paper"`` (default): where a conv's output is read only by its own BatchNorm (and the BatchNorm's only by
  an activation module), the Ghost module gets conv-BN(-act) in *both* branches, as in the paper's module, and
  the host's BN/act modules become ``nn.Identity`` so nothing runs twice. Readers are found from the real
  data flow (:mod:`ghost.surgery.dataflow`), so plain code such as ``relu(y) + y`` or ``out += identity``
  keeps the BN/act in the host. A host activation shared with other call sites (torchvision ResNet's single
  ``relu``) stays in place; an idempotent one (ReLU, ReLU6) is also copied into the module, which leaves the
  function unchanged. Fused norm-activations that subclass ``nn.BatchNorm2d`` (timm's ``BatchNormAct2d``) are
  absorbed whole: the module's BN copies keep their activation.
- ``"dropin"``: a pure drop-in for the conv alone (no BN/act inside); the host's BN/act stay.

:func:`ghostify_trained` (and :func:`transfer_weights`) initialise the converted model from a *trained* host
(:mod:`ghost.surgery.transfer`) instead of from scratch.
"""

from ghost.surgery.convert import ACTIVATIONS, POLICIES, ghost_macs, ghostify
from ghost.surgery.report import GhostReport, LayerRecord
from ghost.surgery.transfer import LayerFit, assign_ghosts, ghostify_trained, transfer_weights

__all__ = [
    "ACTIVATIONS", "POLICIES", "GhostReport", "LayerFit", "LayerRecord", "assign_ghosts", "ghost_macs", "ghostify",
    "ghostify_trained", "transfer_weights",
]
