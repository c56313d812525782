"""Many-to-one sequence classification: encoder -> pooled features -> class logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from seqlab.tasks.base import Row, SequenceTask
from seqlab.tasks.pictures import Picture, PictureOptions, TestPictures, confusion_matrix_figure


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

    def _class_names(self, class_names: Sequence[str]) -> list[str]:
        """``class_names`` where given, else the classes' indices as names."""
        return list(class_names) or [str(c) for c in range(self.hparams["num_classes"])]

    def prediction_columns(self, class_names: Sequence[str] = ()) -> list[str]:
        names = self._class_names(class_names)
        return ["length", "target", "pred", *(f"prob_{name}" for name in names)]

    def prediction_rows(
        self, batch: dict[str, Tensor], output: Tensor, i: int, class_names: Sequence[str] = ()
    ) -> list[Row]:
        """The class, the predicted class and every class's probability."""
        names = self._class_names(class_names)
        probs = output[i].softmax(-1)
        target, pred = names[int(batch["y"][i])], names[int(probs.argmax())]
        return [[int(batch["lengths"][i]), target, pred, *probs.tolist()]]

    def test_pictures(self, options: PictureOptions) -> TestPictures | None:
        return ConfusionMatrixPictures(self)


class ConfusionMatrixPictures(TestPictures):
    """``confusion_matrix``: the test split's confusion matrix (synced across processes)."""

    def __init__(self, model: SequenceClassifier) -> None:
        self.model = model
        num_classes = int(model.hparams["num_classes"])
        self.confusion = MulticlassConfusionMatrix(num_classes).to(model.device)

    def update(self, trainer: L.Trainer, batch: dict[str, Tensor]) -> None:
        logits = self.model(batch["x"], batch["lengths"])
        self.confusion.update(logits.argmax(-1), batch["y"])

    def epoch_end(self, trainer: L.Trainer) -> list[Picture]:
        matrix = self.confusion.compute().cpu().numpy()  # every rank: it syncs under DDP
        if not trainer.is_global_zero:
            return []
        names = list(getattr(getattr(trainer, "datamodule", None), "class_names", None) or [])
        if len(names) != len(matrix):
            names = [str(i) for i in range(len(matrix))]
        return [Picture("confusion_matrix", confusion_matrix_figure(matrix, names))]
