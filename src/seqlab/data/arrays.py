"""Your own labelled sequences, however they are stored: the task read from the labels, the
splits, train-only normalisation. ``data=folder`` and ``data=table`` read their files into a
`Sequences`; `ArraysDataModule` does the rest, the same way for both."""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from seqlab.data.base import (
    SPLITS,
    SequenceDataModule,
    auto_batch_size,
    check_count,
    check_option,
    downsample_factor,
    stratified_split,
)
from seqlab.data.collate import Batch, SequenceDataset, downsample, pad_collate
from seqlab.data.normalize import Normalizer, fit_normalizer, normalize_mode, resolve_normalize
from seqlab.errors import DataError, is_int

log = logging.getLogger(__name__)

#: ``data.task``: ``auto`` reads it from the labels (see `infer_task`).
TASK_CHOICES = ("auto", "classification", "regression", "tagging")


@dataclass
class Sequences:
    """What a reader found: one entry per sequence, in a fixed order.

    ``targets[i]`` is one label (a string or a number) or, for per-step labels, an array of
    ``len(inputs[i])`` of them; ``splits[i]`` is ``"train"``, ``"val"``, ``"test"`` or ``""``
    (not given: the fractions decide); ``names[i]`` says where sequence ``i`` came from in an
    error message (a file, a table's id).
    """

    inputs: list[np.ndarray]  # (T_i, C) float32, finite
    targets: list[Any]
    per_step: bool
    splits: list[str]
    names: list[str]

    def __post_init__(self) -> None:
        sizes = {len(self.inputs), len(self.targets), len(self.splits), len(self.names)}
        if len(sizes) != 1:
            raise ValueError(f"Sequences: fields of different lengths {sorted(sizes)}")


def check_sequence(
    x: np.ndarray, where: str, channels: int | None, channel_names: Sequence[str] = ()
) -> np.ndarray:
    """``x`` as a ``(T, C)`` float32 array of finite numbers with ``T >= 1`` (and ``channels``
    channels, when given), or a `DataError` naming ``where`` (and the channel's name, from
    ``channel_names`` where given)."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: values of type {x.dtype}; need numbers")
    if x.ndim != 2:
        raise DataError(f"{where}: array of shape {x.shape}; need (steps, channels) or (steps,)")
    if x.shape[0] == 0:
        raise DataError(f"{where}: no steps (shape {x.shape})")
    bad = ~np.isfinite(x)
    if bad.any():
        step, channel = map(int, np.argwhere(bad)[0])
        named = repr(channel_names[channel]) if channel_names else channel
        raise DataError(
            f"{where}: NaN or inf at step {step}, channel {named} (missing values are not "
            "supported: fill or drop them first)"
        )
    if channels is not None and x.shape[1] != channels:
        raise DataError(
            f"{where}: {x.shape[1]} channels where the first sequence has {channels} "
            f"(shape {x.shape} read as steps x channels)"
        )
    return np.ascontiguousarray(x, dtype=np.float32)


def as_number(value: Any) -> float | None:
    """``value`` as a float when it reads as one (``"3"``, ``2.5``), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def infer_task(seqs: Sequences) -> str:
    """``data.task=auto``: per-step labels are tagging; one label per sequence is regression
    when every label is a number and some are not whole, classification otherwise (strings,
    or whole numbers such as class ids). Whole numbers that are amounts, such as ages, need
    ``data.task=regression``."""
    if seqs.per_step:
        return "tagging"
    numbers = [as_number(t) for t in seqs.targets]
    if all(n is not None for n in numbers) and any(n != round(n) for n in numbers):  # type: ignore[arg-type]
        return "regression"
    return "classification"


def class_order(labels: Sequence[Any]) -> list[str]:
    """The classes, named as read: by value when all are numbers (so ``"2"`` comes before
    ``"10"``), alphabetically otherwise."""
    names = sorted({str(label) for label in labels})
    numbers = {name: as_number(name) for name in names}
    if all(n is not None for n in numbers.values()):
        names.sort(key=lambda name: numbers[name])  # type: ignore[arg-type, return-value]
    return names


class ArraysDataModule(SequenceDataModule, abc.ABC):
    """Sequences from your files, split and normalised as ``data=ucr`` does a UCR set.

    - ``task``: ``auto`` (`infer_task`), ``classification``, ``regression`` or ``tagging``.
    - Splits: what the files say (a split column) wins; without a test split, ``test_fraction``
      of the training sequences is held out for test, then ``val_fraction`` of the rest for
      validation (each class in proportion for classification), drawn with ``split_seed``.
    - ``normalize``: ``channel`` (the training split's statistics), ``series`` (each sequence
      by itself), ``series_scale`` (series, plus each sequence's level and spread as channels),
      ``none`` or ``auto`` (from the training sequences: ``resolve_normalize``). Targets
      of a regression are scaled with the training split's mean and spread; the model predicts
      in your units (``SequenceRegressor``'s ``target_mean`` and ``target_std``).
    - ``max_length``: longer sequences averaged over runs of ``k`` steps (not for tagging,
      whose labels are per step).
    - ``batch_size="auto"``: ``auto_batch_size`` of the training split.

    Subclasses implement ``read()``.
    """

    # `task` is set by setup(), from data.task or the labels; config checks read data.task.

    def __init__(
        self,
        task: str = "auto",
        val_fraction: float = 0.0,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        normalize: bool | str = "auto",
        max_length: int | None = None,
        batch_size: int | str = "auto",
        num_workers: int = 0,
        bucketing: bool = False,
    ) -> None:
        self.auto_batch = batch_size == "auto"
        super().__init__(32 if self.auto_batch else batch_size, num_workers, bucketing)  # type: ignore[arg-type]
        check_option("task", task, task in TASK_CHOICES, f"allowed: {', '.join(TASK_CHOICES)}")
        check_option("val_fraction", val_fraction, _is_fraction(val_fraction), "must be in [0, 1)")
        check_option(
            "test_fraction",
            test_fraction,
            _is_fraction(test_fraction) and test_fraction > 0,
            "must be in (0, 1) (the share held out for test where the files name no test split)",
        )
        check_count("split_seed", split_seed, minimum=0)
        check_option(
            "max_length",
            max_length,
            max_length is None or (is_int(max_length) and max_length >= 1),
            "must be a positive integer, or null to keep every step",
        )
        self.task_option = task
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.normalize = normalize_mode(normalize)
        self.max_length = max_length
        self.downsample_factor = 1
        self.class_names: list[str] = []
        self.normalizer: Normalizer | None = None
        self.target_mean = 0.0
        self.target_std = 1.0

    @abc.abstractmethod
    def read(self) -> Sequences:
        """Every sequence with its label and, where the files give one, its split."""

    @property
    def input_size(self) -> int:
        self.require_setup()
        return int(self.datasets["train"][0][0].shape[-1])

    def model_kwargs(self) -> dict[str, Any]:
        self.require_setup()
        if self.task == "regression":
            return {
                "input_size": self.input_size,
                "output_size": 1,
                "target_mean": self.target_mean,
                "target_std": self.target_std,
            }
        return {"input_size": self.input_size, "num_classes": len(self.class_names)}

    def collate(self, samples: Sequence[Any]) -> Batch:
        return pad_collate(samples, pad_targets=self.task == "tagging")

    def build_datasets(self) -> dict[str, Dataset]:
        seqs = self.read()
        task = infer_task(seqs) if self.task_option == "auto" else self.task_option
        if (task == "tagging") != seqs.per_step:
            given = "per-step labels" if seqs.per_step else "one label per sequence"
            raise DataError(f"data.task={task}: the files give {given}; use data.task=auto")
        self.task = task
        targets = self._encode_targets(seqs, task)
        split = self._assign_splits(seqs, targets, task)
        train = np.flatnonzero(split == "train")
        self.normalize = resolve_normalize(self.normalize, [seqs.inputs[i] for i in train])
        self.downsample_factor = downsample_factor(
            max(len(seqs.inputs[i]) for i in train), self.max_length
        )
        if task == "tagging" and self.downsample_factor > 1:
            log.warning(
                "data.max_length=%s is not applied: per-step labels cannot be averaged",
                self.max_length,
            )
            self.downsample_factor = 1
        inputs = [downsample(torch.from_numpy(x), self.downsample_factor) for x in seqs.inputs]
        # Statistics from the training split only.
        self.normalizer = fit_normalizer(self.normalize, [inputs[i] for i in train])
        inputs = [self.normalizer(x) for x in inputs]
        if task == "regression":
            train_targets = torch.stack([targets[i] for i in train])
            self.target_mean = float(train_targets.mean())
            spread = float(train_targets.std()) if len(train) > 1 else 1.0
            self.target_std = spread if spread > 1e-12 else 1.0
        datasets: dict[str, Dataset] = {}
        for name in SPLITS:
            idx = np.flatnonzero(split == name)
            datasets[name] = SequenceDataset([inputs[i] for i in idx], [targets[i] for i in idx])
        if self.auto_batch:
            self.batch_size = auto_batch_size(len(train))
        self._log_summary(seqs, task, split)
        return datasets

    def _encode_targets(self, seqs: Sequences, task: str) -> list[Tensor]:
        if task == "regression":
            values = []
            for target, name in zip(seqs.targets, seqs.names, strict=True):
                number = as_number(target)
                if number is None:
                    raise DataError(
                        f"{name}: label {target!r} is not a number; data.task=regression "
                        "needs numeric labels (use data.task=auto for classes)"
                    )
                values.append(torch.tensor(number, dtype=torch.float32))
            return values
        if task == "tagging":
            for target, x, name in zip(seqs.targets, seqs.inputs, seqs.names, strict=True):
                if len(target) != len(x):
                    raise DataError(
                        f"{name}: {len(target)} per-step labels for {len(x)} steps; need one "
                        "label per step"
                    )
            self.class_names = class_order([v for t in seqs.targets for v in t.tolist()])
            index = {c: i for i, c in enumerate(self.class_names)}
            return [torch.tensor([index[str(v)] for v in t.tolist()]) for t in seqs.targets]
        self.class_names = class_order(seqs.targets)
        index = {c: i for i, c in enumerate(self.class_names)}
        return [torch.tensor(index[str(t)]) for t in seqs.targets]

    def _assign_splits(self, seqs: Sequences, targets: list[Tensor], task: str) -> np.ndarray:
        """Each sequence's split: the files' word where given, the fractions elsewhere."""
        split = np.array(seqs.splits, dtype=object)
        for value, name in zip(split, seqs.names, strict=True):
            if value not in ("", *SPLITS):
                raise DataError(f"{name}: split {value!r}; allowed: {', '.join(SPLITS)}")
        split[split == ""] = "train"
        # Classes in proportion for classification; one stratum otherwise.
        strata = np.array(
            [int(t) if task == "classification" else 0 for t in targets], dtype=np.int64
        )
        for name, fraction in (("test", self.test_fraction), ("val", self.val_fraction)):
            pool = np.flatnonzero(split == "train")
            if (split == name).any() or fraction == 0 or len(pool) < 2:
                continue
            _, held = stratified_split(strata[pool], fraction, self.split_seed)
            split[pool[held]] = name
        if not (split == "train").any():
            raise DataError(f"{self.source_name()}: no training sequences")
        if not (split == "test").any():
            raise DataError(
                f"{self.source_name()}: no test sequences (one training sequence cannot be split)"
            )
        if task == "classification":
            seen = {int(t) for t, s in zip(targets, split, strict=True) if s == "train"}
            unseen = [c for i, c in enumerate(self.class_names) if i not in seen]
            if unseen:
                raise DataError(f"{self.source_name()}: classes {unseen} have no training sequence")
        return split

    def source_name(self) -> str:
        """What error messages call the data (a folder, a file)."""
        return type(self).__name__

    def _log_summary(self, seqs: Sequences, task: str, split: np.ndarray) -> None:
        lengths = [len(x) for x in seqs.inputs]
        counts = " / ".join(f"{int((split == s).sum())} {s}" for s in SPLITS)
        classes = f", {len(self.class_names)} classes" if task != "regression" else ""
        log.info(
            "%s: %s, %s, %d channels%s, lengths %d-%d, normalize=%s",
            self.source_name(),
            task if self.task_option != "auto" else f"{task} (data.task=auto)",
            counts,
            seqs.inputs[0].shape[1],
            classes,
            min(lengths),
            max(lengths),
            self.normalize,
        )
        if self.downsample_factor > 1:
            log.info(
                "%s: every sequence averaged over runs of %d steps (data.max_length=%d)",
                self.source_name(),
                self.downsample_factor,
                self.max_length,
            )
        if self.auto_batch:
            log.info("%s: batch_size=auto is %d", self.source_name(), self.batch_size)


def _is_fraction(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
