"""What to do when a training step's loss (or gradient) is NaN or infinite.

The check runs after backward, once gradients are averaged over DDP processes (so every process
decides the same), and before gradient clipping and the optimizer step: the weights never take
a non-finite update. ``policy=stop`` ends training with a message naming the step; ``skip``
drops that step's update (its gradients are cleared, so the optimizer leaves every weight and
moment untouched), counts it in ``train/nonfinite_steps`` and stops only after ``max_skips``.
Under ``16-mixed`` precision the gradient scaler already skips overflowing steps, so this
leaves them to it.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.optim import Optimizer

from seqlab.errors import ConfigError, UserError

log = logging.getLogger(__name__)

POLICIES = ("stop", "skip")


class NonFiniteLossError(UserError):
    """Training stopped on a non-finite loss or gradient."""


class NonFiniteLossGuard(Callback):
    def __init__(self, policy: str = "stop", max_skips: int = 100) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"callbacks.nonfinite_loss.policy={policy!r}: allowed: stop, skip")
        if max_skips < 0:
            raise ConfigError(f"callbacks.nonfinite_loss.max_skips={max_skips}: must be >= 0")
        self.policy = policy
        self.max_skips = max_skips
        self.skipped = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # before a resumed run's checkpoint restores the count
            self.skipped = 0

    def state_dict(self) -> dict[str, int]:
        # Saved with the checkpoint, so a resumed run's max_skips budget goes on where it was.
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer
    ) -> None:
        if str(trainer.precision) == "16-mixed":
            return
        grads = [
            p.grad
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if not grads or bool(torch.isfinite(torch.stack([g.norm() for g in grads])).all()):
            return
        where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        loss = getattr(pl_module, "step_loss", None)
        what = f"train loss {float(loss):g}" if loss is not None else "a non-finite gradient"
        if self.policy == "stop":
            raise NonFiniteLossError(
                f"{what} at {where}: training stopped before the weights took it (the last "
                "checkpoint is intact). Lower model.optimizer.lr, check the data, or set "
                "callbacks.nonfinite_loss.policy=skip"
            )
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        self.skipped += 1
        log.warning("%s at %s: step skipped (%d so far)", what, where, self.skipped)
        if self.skipped > self.max_skips:
            raise NonFiniteLossError(
                f"{self.skipped} non-finite steps, more than "
                f"callbacks.nonfinite_loss.max_skips={self.max_skips}: training stopped at {where}"
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("train/nonfinite_steps", float(self.skipped), on_epoch=True)
