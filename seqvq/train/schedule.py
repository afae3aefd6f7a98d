"""Learning-rate schedules as picklable multiplicative factors for ``torch.optim.lr_scheduler.LambdaLR``."""
from __future__ import annotations

import math

SCHEDULES = ("constant", "step", "warmup_cosine")


class LRFactor:
    """Factor applied to every parameter group's base LR (the codebook group keeps its ratio to the rest).

    constant: 1.  step: ``gamma ** (step // step_size)``.  warmup_cosine: linear warm-up over ``warmup_steps``,
    then cosine decay from 1 to ``min_lr_ratio`` at ``total_steps``.
    """

    def __init__(self, schedule: str, total_steps: int, step_size: int = 1, gamma: float = 1.0,
                 warmup_steps: int = 0, min_lr_ratio: float = 0.0):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown LR schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
        if schedule == "step" and step_size < 1:
            raise ValueError(f"schedule 'step' needs step_size >= 1, got {step_size}")
        self.schedule, self.total_steps = schedule, total_steps
        self.step_size, self.gamma = step_size, gamma
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio

    def __call__(self, step: int) -> float:
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "step":
            return self.gamma ** (step // self.step_size)
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
