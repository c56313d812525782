"""LightningModules, one per kind of task. The data module says which one it needs."""

from __future__ import annotations

from seqlab.tasks.base import SequenceTask
from seqlab.tasks.classification import SequenceClassifier
from seqlab.tasks.forecasting import SequenceForecaster
from seqlab.tasks.language_model import LanguageModel
from seqlab.tasks.regression import SequenceRegressor
from seqlab.tasks.tagging import SequenceTagger

#: data module's ``task`` -> LightningModule class
TASKS: dict[str, type[SequenceTask]] = {
    "classification": SequenceClassifier,
    "regression": SequenceRegressor,
    "forecasting": SequenceForecaster,
    "tagging": SequenceTagger,
    "language_modeling": LanguageModel,
}

__all__ = [
    "TASKS",
    "LanguageModel",
    "SequenceClassifier",
    "SequenceForecaster",
    "SequenceRegressor",
    "SequenceTagger",
    "SequenceTask",
]
