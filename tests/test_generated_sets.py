"""scripts/generated_sets.py: held-out sets generated from their definitions, in the UCR
archive's layout (read by `data=ucr`) or as a folder of arrays (read by `data=folder`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from seqlab.pipeline import build_datamodule

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("generated_sets", ROOT / "scripts/generated_sets.py")
assert spec is not None and spec.loader is not None
generated = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generated)


def test_cbf_without_noise_is_a_plateau_a_rise_and_a_fall_of_height_six():
    t = np.arange(128)
    for label in range(3):
        rng = np.random.default_rng(5)
        a = int(rng.integers(16, 33))
        b = a + int(rng.integers(32, 97))
        series = generated.cbf_series(label, np.random.default_rng(5), noise=False)
        inside = (t >= a) & (t <= b)
        assert np.all(series[~inside] == 0)
        expected = {0: 6.0 + 0 * t, 1: 6.0 * (t - a) / (b - a), 2: 6.0 * (b - t) / (b - a)}
        np.testing.assert_allclose(series[inside], expected[label][inside])


@pytest.mark.parametrize(
    "label, kinds", [(0, "up up"), (1, "up down"), (2, "down up"), (3, "down down")]
)
def test_two_patterns_without_noise_holds_its_two_steps_in_order(label, kinds):
    rng = np.random.default_rng(label)
    lengths = rng.integers(8, 33, size=2)
    first = int(rng.integers(0, 128 - lengths.sum() + 1))
    second = int(rng.integers(first + lengths[0], 128 - lengths[1] + 1))
    series = generated.two_patterns_series(label, np.random.default_rng(label), noise=False)
    expected = np.zeros(128)
    for kind, begin, steps in zip(kinds.split(), (first, second), lengths, strict=True):
        half = int(steps) // 2
        expected[begin : begin + half] = -5 if kind == "up" else 5  # up: -5 then +5
        expected[begin + half : begin + steps] = 5 if kind == "up" else -5
    np.testing.assert_array_equal(series, expected)
    assert second >= first + lengths[0]  # the two never overlap


def test_the_files_are_read_by_data_ucr_with_balanced_z_scored_series(tmp_path, make_cfg):
    generated.write(tmp_path / "sets")
    cfg = make_cfg("data=ucr", f"data.data_dir={tmp_path / 'sets'}", "data.name=GenCBF")
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    assert len(datamodule.datasets["train"]) == 30 and len(datamodule.datasets["test"]) == 900
    table = np.loadtxt(tmp_path / "sets/GenCBF/GenCBF_TRAIN.tsv")
    assert sorted(np.unique(table[:, 0], return_counts=True)[1]) == [10, 10, 10]
    np.testing.assert_allclose(table[:, 1:].mean(1), 0, atol=1e-4)
    np.testing.assert_allclose(table[:, 1:].std(1), 1, atol=1e-3)
    again = tmp_path / "again"
    generated.write(again)
    assert (again / "GenCBF/GenCBF_TEST.tsv").read_bytes() == (
        tmp_path / "sets/GenCBF/GenCBF_TEST.tsv"
    ).read_bytes()


@pytest.mark.parametrize("label", sorted(generated.GESTURES))
def test_a_gesture_without_noise_is_its_two_bumps_in_order(label):
    x = generated.gesture_series(label, np.random.default_rng(3), noise=False)
    assert 60 <= len(x) <= 300 and x.shape[1] == 3
    (first_channel, first_sign), (second_channel, second_sign) = generated.GESTURES[label]
    for channel in {0, 1, 2} - {first_channel, second_channel}:
        assert np.all(x[:, channel] == 0)
    half = len(x) // 2  # the first bump is centred before 40% of the length, the second after 55%
    first, second = x[:half, first_channel], x[half:, second_channel]
    assert (first.max() if first_sign > 0 else -first.min()) > 1.3  # at least 0.7 * 2
    assert (second.max() if second_sign > 0 else -second.min()) > 1.3


def test_the_gesture_folder_is_read_by_data_folder(tmp_path, make_cfg):
    generated.write(tmp_path / "sets")
    cfg = make_cfg("data=folder", f"data.path={tmp_path / 'sets/GenGestures'}")
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    assert len(datamodule.datasets["train"]) == 180 and len(datamodule.datasets["test"]) == 600
    xs, labels = generated.read_gestures(tmp_path / "sets/GenGestures")["train"]
    assert len(xs) == 180 and sorted(set(labels)) == sorted(generated.GESTURES)
    assert all(x.shape[0] == 3 and 60 <= x.shape[1] <= 300 for x in xs)


@pytest.mark.parametrize("label", range(len(generated.ORDERS)))
def test_an_order_series_without_noise_is_its_two_bumps_in_order(label):
    x = generated.order_series(label, np.random.default_rng(5), noise=False)
    assert 60 <= len(x) <= generated.ORDER_MAX_STEPS
    half = len(x) // 2  # the first bump is centred before 40% of the length, the second after 60%
    for part, sign in zip((x[:half], x[half:]), generated.ORDERS[label], strict=True):
        assert (part.max() if sign > 0 else -part.min()) > 1.9


def test_the_order_set_is_read_by_data_ucr_at_its_own_lengths(tmp_path, make_cfg):
    generated.write_order(tmp_path / "GenOrder", np.random.default_rng(0))
    cfg = make_cfg("data=ucr", f"data.data_dir={tmp_path}", "data.name=GenOrder")
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    train = datamodule.datasets["train"]
    assert len(train) == 120 and len(datamodule.datasets["test"]) == 400
    lengths = [len(train[i][0]) for i in range(len(train))]
    assert min(lengths) >= 60 and max(lengths) <= 300 and len(set(lengths)) > 50
    labels = [int(train[i][1]) for i in range(len(train))]
    assert np.bincount(labels).tolist() == [30] * 4
