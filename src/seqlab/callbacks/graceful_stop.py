"""Stop on SIGTERM or Ctrl-C at the next batch boundary, leaving a checkpoint to resume from.

Lightning already turns SIGTERM into an exception raised between two batches; Ctrl-C (SIGINT)
would instead interrupt whatever is running, half-way through an optimizer step perhaps. This
callback makes the first Ctrl-C behave like SIGTERM (a second one aborts at once), and on either
writes ``checkpoints/last.ckpt``: model, optimizer, loops, generators and the position in the
epoch, from which ``ckpt_path=last`` continues.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class TrainingStopped(SystemExit):
    """Raised to end a run that a signal stopped; exits with 128 + the signal's number, as a
    shell reports a process killed by that signal, and without a traceback."""

    def __init__(self, signum: int, checkpoint: str | None = None) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.checkpoint = checkpoint


class GracefulStop(Callback):
    def __init__(self, filename: str = "last.ckpt") -> None:
        self.filename = filename
        self.requested: int | None = None
        #: Where the stop's checkpoint went, once saved.
        self.saved: str | None = None
        self._previous_handler: Any = None

    # --------------------------------------------------------------------------- Ctrl-C
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.requested = None
        try:
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous_handler = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum
        log.warning("Ctrl-C: stopping after this batch (press Ctrl-C again to abort now)")

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._stop_if_requested(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_if_requested(trainer)  # a Ctrl-C during validation

    def _stop_if_requested(self, trainer: L.Trainer) -> None:
        # Under DDP a Ctrl-C can reach some processes only (one node's terminal): all stop
        # at the same batch, or the ones that stop would wait for the others in the
        # checkpoint's barrier forever. One process decides alone, at no cost.
        if trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False):
            raise TrainingStopped(self.requested or signal.SIGINT)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handler()

    # ------------------------------------------------------------------------ both signals
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handler()
        if isinstance(exception, SIGTERMException):
            signum: int = signal.SIGTERM
        elif isinstance(exception, TrainingStopped):
            signum = exception.signum
        else:
            return
        # Outside a fit (the test after it) there is no training to resume, and the weights
        # loaded for the test would overwrite the fit's last.ckpt.
        if trainer.state.fn != TrainerFn.FITTING:
            return
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            log.warning(
                "%s: stopped at epoch %d, step %d; checkpoint saved to %s. "
                "Resume with ckpt_path=last (or ckpt_path=%s)",
                signal.Signals(signum).name,
                trainer.current_epoch,
                trainer.global_step,
                path,
                path,
            )
        self.saved = str(path)

    def checkpoint_path(self, trainer: L.Trainer) -> Path:
        checkpoint = next(
            (cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)),  # type: ignore[attr-defined]
            None,
        )
        dirpath = checkpoint.dirpath if checkpoint and checkpoint.dirpath else None
        return Path(dirpath or Path(trainer.default_root_dir) / "checkpoints") / self.filename
