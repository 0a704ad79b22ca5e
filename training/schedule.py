"""Learning-rate schedule and early stopping: pure functions of the step / the metric history."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int, schedule: str = "cosine") -> float:
    """Linear warm-up to base_lr, then cosine decay to 1% of it (or constant)."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps:
        return base_lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    final = base_lr * 0.01
    return final + (base_lr - final) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class EarlyStopping:
    """Tracks the best value of a higher-is-better metric; `should_stop` after `patience` bad epochs."""

    patience: int
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list = field(default_factory=list)

    def update(self, epoch: int, value: float) -> bool:
        """Record an epoch's metric; True when it is a new best."""
        self.history.append(value)
        if value > self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def to_dict(self) -> dict:
        return {
            "patience": self.patience,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "EarlyStopping":
        return cls(**d)
