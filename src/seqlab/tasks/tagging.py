"""Per-step sequence classification ("tagging"): one class per step, some steps unscored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from seqlab.tasks.base import Row, SequenceTask
from seqlab.tasks.classification import classification_metrics

#: Target of a step that is not scored (torch's cross-entropy convention).
IGNORE_INDEX = -100


class SequenceTagger(SequenceTask):
    """``x (B, T, D), lengths (B,) -> logits (B, T, num_classes)``.

    Targets ``y (B, T)`` hold a class per step, or ``-100`` where a step is not scored (e.g.
    the copy task scores only the recalled symbols). Padded steps are never scored, whatever
    their target. The loss and the metrics are over scored steps: a batch's loss is the mean
    over its scored steps, and epoch values weight batches by how many steps they scored.
    """

    per_step = True

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
        return self.head(self.encoder(x, lengths).outputs)

    def shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        encoded = self.encoder(batch["x"], batch["lengths"])
        logits = self.head(encoded.outputs)
        target = batch["y"]
        scored = self.real_steps(encoded, batch["lengths"]) & (target != IGNORE_INDEX)
        logits, target = logits[scored].float(), target[scored]
        count = len(target)  # the scored steps (their number is known once indexed)
        # Mean over scored steps; a batch with none scores 0 (a mean of nothing would be NaN,
        # which would stop training and poison the epoch's average).
        loss = F.cross_entropy(logits, target, reduction="sum") / max(count, 1)
        loss = self.reduce_loss(stage, loss, weight=count)
        self.log_metrics(stage, logits, target)
        return loss

    def prediction_columns(self, class_names: Sequence[str] = ()) -> list[str]:
        return ["step", "scored", "target", "pred"]

    def prediction_rows(
        self, batch: dict[str, Tensor], output: Tensor, i: int, class_names: Sequence[str] = ()
    ) -> list[Row]:
        """One row per real step: whether it is scored, its target (empty if not), the
        predicted class."""
        rows: list[Row] = []
        for t in range(int(batch["lengths"][i])):
            target = int(batch["y"][i, t])
            scored = target != IGNORE_INDEX
            pred = int(output[i, t].argmax())
            rows.append([t, int(scored), target if scored else "", pred])
        return rows
