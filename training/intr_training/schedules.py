"""Learning-rate schedules, stepped once per optimizer update and planned over the whole run.

cosine (default): linear warm-up from ~0 to the peak rate, then a half cosine down to
    MIN_FACTOR x the peak at the run's last update, so any --epochs ends with a decayed rate.
step: the paper's StepLR: the peak rate, 10x lower after --lr-drop epochs (no warm-up unless
    asked for).

A schedule is a plain object (numbers and a name), so torch's LambdaLR saves it with the
scheduler's state and --resume continues it exactly.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .train_settings import check_ranges

SCHEDULES = ("cosine", "step")
SCHEDULE_HELP = ("cosine: linear warm-up (--warmup-epochs), then cosine decay to the end of the run "
                 "(default); step: the paper's StepLR, 10x lower after --lr-drop epochs")
MIN_FACTOR = 0.01      # cosine ends at 1 % of the peak rate
STEP_GAMMA = 0.1       # StepLR's drop
MAX_WARMUP_SHARE = 0.2  # warm-up never takes more than a fifth of a short run


@dataclass
class Schedule:
    """factor(update) multiplies each parameter group's peak learning rate."""
    kind: str
    total_updates: int
    warmup_updates: int = 0
    drop_update: int = 0  # step: the first update at the lower rate (0: never)

    def __call__(self, update: int) -> float:
        if update < self.warmup_updates:
            return (update + 1) / (self.warmup_updates + 1)
        if self.kind == "step":
            return STEP_GAMMA if self.drop_update and update >= self.drop_update else 1.0
        span = max(self.total_updates - self.warmup_updates - 1, 1)
        progress = min((update - self.warmup_updates) / span, 1.0)
        return MIN_FACTOR + (1 - MIN_FACTOR) * 0.5 * (1 + math.cos(math.pi * progress))

    def to_dict(self) -> dict:
        return asdict(self)


def plan(kind: str, epochs: int, updates_per_epoch: int, warmup_epochs: float = 0.0,
         lr_drop: int | None = None) -> Schedule:
    """The schedule of a run of `epochs` epochs with `updates_per_epoch` optimizer updates each."""
    if kind not in SCHEDULES:
        raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    check_ranges({"warmup_epochs": warmup_epochs})
    total = max(epochs * updates_per_epoch, 1)
    warmup = min(round(warmup_epochs * updates_per_epoch), int(MAX_WARMUP_SHARE * total))
    if kind == "step":
        if lr_drop is None:
            raise ValueError("--schedule step needs --lr-drop N (the epoch after which the rate drops 10x)")
        return Schedule(kind, total, warmup, lr_drop * updates_per_epoch)
    return Schedule(kind, total, warmup)


def updates_per_epoch(batches: int, accumulate: int) -> int:
    """Optimizer updates in an epoch of `batches` batches (the last partial group updates too)."""
    return math.ceil(batches / accumulate)


def scheduler(optimizer, schedule: Schedule):
    import torch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
