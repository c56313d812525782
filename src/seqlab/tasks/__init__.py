"""LightningModules, one per kind of task. The data module says which one it needs."""

from __future__ import annotations

from seqlab.tasks.base import SequenceTask
from seqlab.tasks.classification import SequenceClassifier

#: data module's ``task`` -> LightningModule class
TASKS: dict[str, type[SequenceTask]] = {
    "classification": SequenceClassifier,
}

__all__ = ["TASKS", "SequenceClassifier", "SequenceTask"]
