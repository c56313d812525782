"""Many-to-one sequence classification: encoder -> pooled features -> class logits."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from seqlab.nn.heads import MLPHead
from seqlab.tasks.base import SequenceTask, build_encoder


class SequenceClassifier(SequenceTask):
    """``x (B, T, D), lengths (B,) -> logits (B, num_classes)``, trained with cross-entropy."""

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        encoder: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        head: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(encoder, optimizer, scheduler)
        self.save_hyperparameters()
        self.encoder = build_encoder(encoder, input_size)
        self.head = MLPHead(self.encoder.output_size, num_classes, **(head or {}))
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        self.set_metrics(metrics)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.encoder(x, lengths).features)

    def shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits = self(batch["x"], batch["lengths"])
        # The loss is computed in fp32 even under mixed precision.
        loss = F.cross_entropy(logits.float(), batch["y"])
        loss = self.reduce_loss(stage, loss, weight=len(batch["y"]))
        self.log_metrics(stage, logits, batch["y"])
        return loss
