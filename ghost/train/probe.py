"""How a run trains on its device when its recipe leaves the choice open: a short measured probe, in the spirit
of ``cudnn.benchmark``, of every setting the recipe allows (:meth:`ghost.train.Recipe.device_candidates`).

Each candidate trains a few optimizer steps on a copy of the model (warm-up steps first, untimed: that is where
``torch.compile`` compiles), the timed steps give its images/s, and the fastest wins (the first on a tie). The
choice and every measurement go into the run's checkpoint and record, and a resumed run reuses them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from ghost.recipes import DeviceSettings

__all__ = ["ProbeResult", "choose_settings"]


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """The chosen setting and the images/s measured for each candidate (keyed by :attr:`DeviceSettings.label`)."""

    chosen: DeviceSettings
    images_per_s: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (what checkpoints and records hold)."""
        return {"chosen": dataclasses.asdict(self.chosen), "images_per_s": dict(self.images_per_s)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ProbeResult:
        """The inverse of :meth:`to_dict`."""
        return cls(DeviceSettings(**data["chosen"]), dict(data["images_per_s"]))


def choose_settings(
    candidates: Sequence[DeviceSettings],
    step_for: Callable[[DeviceSettings], Callable[[], None]],
    images_per_step: int,
    *,
    warmup: int = 2,
    steps: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> ProbeResult:
    """Measure each of ``candidates`` and return the fastest.

    Args:
        candidates: the settings to compare (at least one).
        step_for: builds a trainer for one setting and returns a function that runs one optimizer step (and
            waits for the device).
        images_per_step: images per optimizer step (the global batch).
        warmup: untimed steps per candidate; steps: timed steps per candidate.
        clock: seconds (a fake clock in tests).

    Raises:
        ValueError: no candidates, or fewer than one timed step.
    """
    if not candidates or steps < 1 or warmup < 0:
        raise ValueError("the probe needs at least one candidate setting, steps >= 1 and warmup >= 0")
    rates: dict[str, float] = {}
    for settings in candidates:
        step = step_for(settings)
        for _ in range(warmup):
            step()
        start = clock()
        for _ in range(steps):
            step()
        rates[settings.label] = round(steps * images_per_step / max(clock() - start, 1e-9), 1)
    best = max(candidates, key=lambda s: rates[s.label])  # max keeps the first of equal ones
    return ProbeResult(best, rates)
