"""The sunspots data module: a time-ordered split of one series into forecasting windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqlab.data.sunspots import SunspotsDataModule, load_sunspots


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    return load_sunspots()[1]


@pytest.fixture(scope="module")
def datamodule() -> SunspotsDataModule:
    datamodule = SunspotsDataModule(window=10, rollout_horizon=3)
    datamodule.setup("fit")
    return datamodule


def raw(datamodule: SunspotsDataModule, x: torch.Tensor) -> np.ndarray:
    return (x.squeeze(-1).double() * datamodule.std + datamodule.mean).numpy()


def forecast_index(datamodule: SunspotsDataModule, series: np.ndarray, split: str) -> list[int]:
    """The position in the series of each window's scored target."""
    positions = []
    for x, y, mask in datamodule.datasets[split]:
        # A window is a run of consecutive years: find where its inputs start.
        start = _find(series, raw(datamodule, x))
        positions.extend((start + 1 + mask.nonzero().flatten()).tolist())
        np.testing.assert_allclose(raw(datamodule, y), series[start + 1 : start + 11], atol=1e-3)
    return positions


def _find(series: np.ndarray, window: np.ndarray) -> int:
    windows = np.lib.stride_tricks.sliding_window_view(series, len(window))
    hits = np.flatnonzero(np.abs(windows - window).max(1) < 1e-3)
    assert len(hits) == 1
    return int(hits[0])


def test_splits_are_in_time_order_and_forecast_every_later_year_exactly_once(
    datamodule, series
) -> None:
    n = len(series)
    train = forecast_index(datamodule, series, "train")
    val = forecast_index(datamodule, series, "val")
    test = forecast_index(datamodule, series, "test")
    n_test = n_val = round(0.15 * n)
    n_train = n - n_val - n_test
    assert max(train) < min(val) and max(val) < min(test)
    assert max(train) == n_train - 1  # training targets never reach past the training years
    assert sorted(val) == list(range(n_train, n_train + n_val))
    assert sorted(test) == list(range(n - n_test, n))


def test_validation_and_test_windows_score_only_their_last_step(datamodule) -> None:
    for split in ("val", "test"):
        for x, y, mask in datamodule.datasets[split]:
            assert x.shape == y.shape == (10, 1)
            assert mask.tolist() == [False] * 9 + [True]
    assert all(mask.all() for _, _, mask in datamodule.datasets["train"])


def test_normalisation_uses_training_years_only(datamodule, series) -> None:
    n_train = len(series) - 2 * round(0.15 * len(series))
    assert datamodule.mean == pytest.approx(series[:n_train].mean(), rel=1e-5)
    assert datamodule.std == pytest.approx(series[:n_train].std(), rel=1e-5)
    assert datamodule.mean != pytest.approx(series.mean(), rel=1e-3)


def test_batches_carry_the_scored_steps(datamodule) -> None:
    batch = next(iter(datamodule.test_dataloader()))
    assert batch["x"].shape == batch["y"].shape == (32, 10, 1)
    assert batch["mask"].shape == (32, 10) and batch["mask"].dtype == torch.bool
    assert torch.equal(batch["x"][:, 1:], batch["y"][:, :-1])
    assert datamodule.model_kwargs() == {"input_size": 1, "rollout_horizon": 3}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "data.window=0"),
        ({"window": 500}, "data.window=500: must be < the 217 training years"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "data.val_fraction \\+ test_fraction=1.0"),
        ({"window": 5, "rollout_horizon": 6}, "data.rollout_horizon=6"),
        ({"window": 10.0}, "data.window=10.0: must be a positive integer"),
        ({"val_fraction": 0.001}, "data.val_fraction=0.001: must leave a year or more of the"),
        ({"test_fraction": 0.001}, "data.test_fraction=0.001: must leave a year or more of the"),
    ],
)
def test_bad_options_fail_naming_the_key(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        SunspotsDataModule(**kwargs).setup()
