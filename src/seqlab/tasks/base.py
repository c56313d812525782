"""What every seqlab task shares: the encoder built from config, optimisers, logging."""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.utils import instantiate
from torch import Tensor, nn

DEFAULT_ENCODER = "seqlab.nn.LSTMEncoder"


def build_encoder(config: dict[str, Any], input_size: int) -> nn.Module:
    """Instantiate the encoder config (``_target_`` defaults to seqlab's LSTM encoder)."""
    config = {"_target_": DEFAULT_ENCODER, **config}
    return instantiate(config, input_size=input_size, _convert_="all")


class SequenceTask(L.LightningModule):
    """Base LightningModule: an encoder, a head, a loss, and metrics per stage.

    Hyperparameters are plain dicts from the Hydra config, saved in every checkpoint, so
    ``Task.load_from_checkpoint(path)`` rebuilds the model with no config at hand.
    Subclasses implement ``forward`` and ``shared_step(batch, stage) -> loss``.
    """

    #: True for tasks where step t may only see steps <= t (e.g. next-character prediction).
    causal: bool = False

    def __init__(
        self,
        encoder: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if self.causal and encoder.get("bidirectional", False):
            raise ValueError(
                "model.encoder.bidirectional=true: this task predicts the next step, and a "
                "bidirectional encoder would see the future. Use model=lstm."
            )

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams["optimizer"], params=self.parameters())
        if not self.hparams.get("scheduler"):
            return optimizer
        scheduler = instantiate(self.hparams["scheduler"], optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"},
        }

    def log_loss(self, stage: str, loss: Tensor, weight: int) -> None:
        """Log ``stage/loss``; epoch values are averaged weighted by ``weight`` (samples or steps),
        so a short last batch counts for what it holds, not as much as a full one."""
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=weight,
            sync_dist=stage != "train",
        )

    # `shared_step` is each task's own: its loss, metrics and logging.
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.shared_step(batch, "train")  # type: ignore[attr-defined]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "val")  # type: ignore[attr-defined]

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "test")  # type: ignore[attr-defined]

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self(batch["x"], batch["lengths"])
