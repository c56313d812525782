"""Many-to-one sequence classification: encoder -> pooled features -> class logits."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from seqlab.tasks.base import SequenceTask


def classification_metrics(num_classes: int) -> MetricCollection:
    """Accuracy (over all predictions) and macro F1 (each class counts alike)."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        }
    )


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
        self.build_network(input_size, num_classes, encoder, head)
        self.set_metrics(classification_metrics(num_classes))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.encoder(x, lengths).features)

    def shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits = self(batch["x"], batch["lengths"])
        # The loss is computed in fp32 even under mixed precision.
        loss = F.cross_entropy(logits.float(), batch["y"])
        loss = self.reduce_loss(stage, loss, weight=len(batch["y"]))
        self.log_metrics(stage, logits, batch["y"])
        return loss
