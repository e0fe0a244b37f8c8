"""The per-layer report of one :func:`~ghost.surgery.ghostify` call."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from ghost.io import write_text_atomic

__all__ = ["GhostReport", "LayerRecord"]


@dataclass
class LayerRecord:
    """What :func:`~ghost.surgery.ghostify` did with one ``nn.Conv2d``.

    ``params_before`` counts the conv plus the host modules it absorbed; ``params_after`` the Ghost module.
    MACs are per image at the example input, summed over calls (0 for a conv the example input never ran).
    ``reason`` says why a conv was kept, or notes about a replaced one (what was not absorbed and why).
    """

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    groups: int
    replaced: bool
    reason: str
    ratio: int | None = None
    dw_size: int | None = None
    absorbed: tuple[str, ...] = ()
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0


@dataclass
class GhostReport:
    """Per-layer records, model-level totals and the equivalence check of one ``ghostify`` call.

    Attributes:
        inputs: shapes of the example inputs the model was traced with.
        policy: the BatchNorm/activation policy.
        init: how the new layers were initialised.
        verified: whether the ratio-1 check ran and passed (see ``ghostify``'s ``verify``).
        verification: what the check compared and found, in words.
    """

    inputs: str
    policy: str
    init: str = "PyTorch default"
    layers: list[LayerRecord] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    verified: bool = False
    verification: str = "not checked"

    @property
    def speedup(self) -> float:
        """Theoretical speed-up: conv+linear MACs before / after."""
        return self.macs_before / self.macs_after

    @property
    def compression(self) -> float:
        """Parameter compression ratio: params before / after."""
        return self.params_before / self.params_after

    def summary(self) -> dict[str, float | int | str | bool]:
        """Model-level totals as a flat dict."""
        return {
            "policy": self.policy,
            "inputs": self.inputs,
            "init": self.init,
            "convs": len(self.layers),
            "replaced": sum(r.replaced for r in self.layers),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "compression": self.compression,
            "speedup": self.speedup,
            "verified": self.verified,
            "verification": self.verification,
        }

    def to_dataframe(self):
        """The per-layer records as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.layers])

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the per-layer records to ``path`` atomically."""
        write_text_atomic(path, self.to_dataframe().to_csv(index=False))

    def __str__(self) -> str:
        df = self.to_dataframe()
        df["action"] = ["replaced" if r else "kept" for r in df["replaced"]]
        df["kernel"] = [f"{k[0]}x{k[1]}" for k in df["kernel_size"]]
        df["stride"] = [f"{s[0]}" if s[0] == s[1] else f"{s[0]}x{s[1]}" for s in df["stride"]]
        df["absorbed"] = [",".join(a) for a in df["absorbed"]]
        for col in ("ratio", "dw_size"):
            df[col] = ["" if v is None or v != v else str(int(v)) for v in df[col]]
        columns = ["name", "in_channels", "out_channels", "kernel", "stride", "action", "ratio", "dw_size",
                   "absorbed", "params_before", "params_after", "macs_before", "macs_after", "reason"]
        s = self.summary()
        footer = (
            f"{s['replaced']}/{s['convs']} convs replaced (policy={self.policy}, inputs {self.inputs}, "
            f"new layers: {self.init} init): params {self.params_before:,} -> {self.params_after:,} "
            f"({self.compression:.2f}x), MACs {self.macs_before:,} -> {self.macs_after:,} "
            f"(theoretical speed-up {self.speedup:.2f}x)\nratio-1 check: {self.verification}"
        )
        return df[columns].to_string(index=False) + "\n" + footer
