"""Yearly sunspot numbers 1700-2008 (the series `statsmodels` ships), next-year forecasting."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from seqlab.data.base import (
    MaskedSequenceDataset,
    SequenceDataModule,
    check_count,
    check_option,
    masked_collate,
)
from seqlab.data.collate import Batch
from seqlab.errors import is_int

log = logging.getLogger(__name__)


def load_sunspots() -> tuple[np.ndarray, np.ndarray]:
    """``(years, yearly mean sunspot numbers)``, both ``(309,)``."""
    try:
        from statsmodels.datasets import sunspots
    except ModuleNotFoundError as err:  # statsmodels is the optional `data` extra
        raise ModuleNotFoundError(
            "data=sunspots needs the `statsmodels` package: pip install 'seqlab[data]'"
        ) from err
    frame = sunspots.load_pandas().data
    return frame["YEAR"].to_numpy(dtype=int), frame["SUNACTIVITY"].to_numpy(dtype=np.float32)


class SunspotsDataModule(SequenceDataModule):
    """Forecast next year's sunspot number from the ``window`` years before it.

    The series is split in time order: the first years train, the next ``val_fraction``
    validate, the last ``test_fraction`` test, so no model sees a later year while fitting.
    It is z-scored with statistics of the training years only, and metrics are in those units.

    Training samples are every window of ``window + 1`` consecutive training years (inputs the
    first ``window``, targets the last ``window``), with every step scored. A validation or test
    sample exists for each year of its split: the ``window`` years before it as inputs, and only
    the last step, the forecast of that year, scored. So every val / test year is forecast
    exactly once, from a full window of the past (which may reach into earlier splits, as it
    would in use), and the persistence forecast is scored on the same years.
    With ``rollout_horizon`` H the model also forecasts each of those years H steps ahead,
    from its own forecasts of the H - 1 years before it (``{stage}/rollout_*``).
    """

    task = "forecasting"

    def __init__(
        self,
        window: int = 30,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        rollout_horizon: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        check_count("window", window, why=" (years)")
        check_option("val_fraction", val_fraction, 0 < val_fraction < 1, "must be in (0, 1)")
        check_option("test_fraction", test_fraction, 0 < test_fraction < 1, "must be in (0, 1)")
        check_option(
            "val_fraction + test_fraction",
            val_fraction + test_fraction,
            val_fraction + test_fraction < 1,
            "must be < 1: the training years come first",
        )
        check_option(
            "rollout_horizon",
            rollout_horizon,
            is_int(rollout_horizon) and 0 <= rollout_horizon <= window,
            f"must be an integer in [0, data.window={window}]",
        )
        self.window = window
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.rollout_horizon = rollout_horizon
        self.mean = self.std = 0.0
        self.split_years: dict[str, tuple[int, int]] = {}

    def model_kwargs(self) -> dict[str, int]:
        return {"input_size": 1, "rollout_horizon": self.rollout_horizon}

    def collate(self, samples: Sequence[tuple[Tensor, Tensor, Tensor]]) -> Batch:
        return masked_collate(samples)

    def build_datasets(self) -> dict[str, Dataset]:
        years, values = load_sunspots()
        n = len(values)
        n_test = round(self.test_fraction * n)
        n_val = round(self.val_fraction * n)
        for key, fraction, count in (
            ("test_fraction", self.test_fraction, n_test),
            ("val_fraction", self.val_fraction, n_val),
        ):
            check_option(key, fraction, count >= 1, f"must leave a year or more of the {n} years")
        bounds = {"train": (0, n - n_val - n_test), "val": (n - n_val - n_test, n - n_test)}
        bounds["test"] = (n - n_test, n)
        n_train = bounds["train"][1]
        check_option(
            "window",
            self.window,
            self.window < n_train,
            f"must be < the {n_train} training years",
        )
        train_values = values[:n_train]
        self.mean, self.std = float(train_values.mean()), float(train_values.std())
        series = torch.from_numpy((values - self.mean) / self.std).unsqueeze(-1)  # (n, 1)
        self.split_years = {s: (int(years[a]), int(years[b - 1])) for s, (a, b) in bounds.items()}

        width = self.window
        train = [series[s : s + width + 1] for s in range(n_train - width)]
        datasets: dict[str, Dataset] = {
            "train": MaskedSequenceDataset(
                [w[:-1] for w in train],
                [w[1:] for w in train],
                [torch.ones(width, dtype=torch.bool) for _ in train],
            )
        }
        last_only = torch.zeros(width, dtype=torch.bool)
        last_only[-1] = True
        for split in ("val", "test"):
            targets = range(*bounds[split])  # the index of each year forecast
            datasets[split] = MaskedSequenceDataset(
                [series[t - width : t] for t in targets],
                [series[t - width + 1 : t + 1] for t in targets],
                [last_only for _ in targets],
            )
        log.info(
            "sunspots: train %d-%d, val %d-%d, test %d-%d, windows of %d years",
            *self.split_years["train"],
            *self.split_years["val"],
            *self.split_years["test"],
            width,
        )
        return datasets
