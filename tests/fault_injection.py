"""Callbacks that break a training run on purpose, for the reliability tests.

Added to a run from the command line, e.g.
``+callbacks.kill._target_=tests.fault_injection.KillAfterEpoch +callbacks.kill.epoch=1``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class KillAfterEpoch(Callback):
    """SIGKILL (no clean-up at all) right after epoch ``epoch``'s checkpoint is written: as the
    next epoch starts (Lightning writes checkpoints after every other epoch-end hook)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch + 1:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtBatch(Callback):
    """Sends ``signum`` to this process after batch ``batch`` of epoch ``epoch`` (under DDP:
    to every process, or to rank ``rank``'s only)."""

    def __init__(
        self, epoch: int, batch: int, signum: int = signal.SIGTERM, rank: int | None = None
    ) -> None:
        self.epoch, self.batch, self.signum, self.rank = epoch, batch, signum, rank

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        batch_idx = args[-1]
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and (
            self.rank is None or trainer.global_rank == self.rank
        ):
            os.kill(os.getpid(), self.signum)


class NaNInputsAt(Callback):
    """Fills the inputs of the training batches at the given global steps with NaN."""

    def __init__(self, steps: list[int]) -> None:
        self.steps = set(steps)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step in self.steps:
            batch["x"].fill_(float("nan"))


class SignalAtTestBatch(Callback):
    """Sends ``signum`` to this process after test batch ``batch``."""

    def __init__(self, batch: int, signum: int = signal.SIGTERM) -> None:
        self.batch, self.signum = batch, signum

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)
