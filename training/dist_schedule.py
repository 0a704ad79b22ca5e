"""The learning-rate schedule as an MXNet LRScheduler, for multi-host (dist_sync) runs.

With a dist_sync kvstore Gluon runs the optimizer on the parameter servers (the optimizer is pickled
to them at the first step), so a learning rate set on the worker afterwards never reaches them. This
scheduler travels with the optimizer and computes `training.schedule.lr_at` where the update runs.
The servers unpickle it, so this module must be importable there (training.distributed starts them
with the project's code on PYTHONPATH) and must not touch `mxnet` at import: a server runs inside
`import mxnet`, where the package is still partly initialised. MXNet's Optimizer needs only what
`mx.lr_scheduler.LRScheduler` offers it: a `base_lr` attribute and `__call__(num_update)`.
"""

from __future__ import annotations

from training.schedule import lr_at


class StepSchedule:
    """lr_at(offset + update - 1, ...): `num_update` counts from 1; `offset` is the first step of a
    resumed run (a new optimizer on the servers counts from 1 again)."""

    def __init__(self, total_steps: int, base_lr: float, warmup_steps: int, schedule: str, offset: int = 0):
        self.base_lr = base_lr  # the Optimizer sets it to its learning_rate
        self.total_steps, self.warmup_steps, self.schedule, self.offset = total_steps, warmup_steps, schedule, offset

    def __call__(self, num_update: int) -> float:
        return lr_at(
            self.offset + max(num_update - 1, 0), self.total_steps, self.base_lr, self.warmup_steps, self.schedule
        )
