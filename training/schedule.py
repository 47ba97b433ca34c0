"""Learning-rate schedule: linear warmup, then cosine decay to a minimum LR.

The schedule is a pure function of the *global* step of the whole run. That is what makes the
paper's midtraining protocol exact: a run resumed at step s with a new data mixture asks the same
function for step s, s+1, ... and ends at the same final step as the uninterrupted run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CosineSchedule:
    """Warmup + cosine, defined on optimizer steps 0 .. total_steps-1."""

    peak_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int

    def lr(self, step: int) -> float:
        """The learning rate for the optimizer update that turns step `step` into `step + 1`."""
        if step < self.warmup_steps:
            # (step + 1) so the very first update already moves the weights.
            return self.peak_lr * (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> CosineSchedule:
        return cls(**state)


def warmup_steps_for(total_steps: int, *, warmup_steps: int | None, warmup_fraction: float) -> int:
    """An explicit step count wins; otherwise a fraction of the run (the paper: 10%)."""
    if warmup_steps is not None:
        return warmup_steps
    return max(1, round(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0
