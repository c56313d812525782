"""Many-to-one sequence regression: encoder -> pooled features -> real-valued outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from seqlab.tasks.base import Row, SequenceTask, channel_columns


class SequenceRegressor(SequenceTask):
    """``x (B, T, D), lengths (B,) -> (B,)`` for ``output_size=1``, else ``(B, output_size)``;
    trained with the mean squared error, reported as ``{stage}/mse`` and ``{stage}/mae``.

    Predictions are ``head(features) * target_std + target_mean``: a data module that knows
    its targets' scale (the training split's mean and spread) passes it, so a freshly
    initialised head, whose outputs are near 0, starts at the mean in the data's own units,
    and losses and metrics are in those units.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        encoder: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        head: dict[str, Any] | None = None,
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ) -> None:
        super().__init__(encoder, optimizer, scheduler)
        if not target_std > 0:
            raise ValueError(f"target_std={target_std}: must be > 0")
        self.save_hyperparameters()
        self.output_size = output_size
        self.target_mean, self.target_std = float(target_mean), float(target_std)
        self.build_network(input_size, output_size, encoder, head)
        metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})
        self.set_metrics(metrics)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        out = self.head(self.encoder(x, lengths).features)
        if self.target_std != 1.0 or self.target_mean != 0.0:
            out = out * self.target_std + self.target_mean
        return out.squeeze(-1) if self.output_size == 1 else out

    def shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        preds = self(batch["x"], batch["lengths"]).float()
        target = batch["y"].float().view_as(preds)
        loss = F.mse_loss(preds, target)
        loss = self.reduce_loss(stage, loss, weight=len(target))
        # Flattened, so a multi-output target counts every output once.
        self.log_metrics(stage, preds.flatten(), target.flatten())
        return loss

    def prediction_columns(self, class_names: Sequence[str] = ()) -> list[str]:
        outputs = self.output_size
        return ["length", *channel_columns("target", outputs), *channel_columns("pred", outputs)]

    def prediction_rows(
        self, batch: dict[str, Tensor], output: Tensor, i: int, class_names: Sequence[str] = ()
    ) -> list[Row]:
        """The target's values, then the prediction's."""
        values = batch["y"][i].float().reshape(-1).tolist() + output[i].reshape(-1).tolist()
        return [[int(batch["lengths"][i]), *values]]
