"""A callback that fails on purpose at a given (epoch, batch): an interrupted run, for resume tests."""

from __future__ import annotations

import lightning as L


class CrashAt(L.Callback):
    """Raises ``RuntimeError("CrashAt ...")`` before training batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError(f"CrashAt epoch {self.epoch} batch {self.batch}: simulated interruption")
