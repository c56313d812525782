"""Pieces every data module shares: train-only normalisation, stratified splits, the base
module's contract; and the UCR module built on them."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from seqlab.data.base import masked_collate, stratified_split
from seqlab.data.collate import add_input_noise, resample, shift_channels, time_warp
from seqlab.data.normalize import ChannelNormalizer
from seqlab.data.sources import load_ts
from seqlab.data.ucr import UCRDataModule, find_dataset
from seqlab.errors import ConfigError


def test_normalizer_statistics_count_every_real_step_once() -> None:
    short, long = torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 1.0], [4.0, 1.0]])
    normalizer = ChannelNormalizer.fit([short, long])
    # Over steps (0, 2, 4), not over the two sequences' means (0 and 3).
    assert normalizer.mean.tolist() == [2.0, 1.0]
    assert normalizer.std[0] == pytest.approx(2.0)
    # A constant channel is centred, not divided by zero.
    assert torch.isfinite(normalizer(long)).all() and normalizer(long)[:, 1].eq(0).all()


def test_normalizer_fitted_on_one_step_centres_it() -> None:
    normalizer = ChannelNormalizer.fit([torch.tensor([[2.0, -1.0]])])
    assert normalizer(torch.tensor([[3.0, -1.0]])).tolist() == [[1.0, 0.0]]


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_stratified_split_holds_out_the_fraction_of_every_class(fraction: float) -> None:
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    keep, held = stratified_split(labels, fraction, seed=0)
    assert not set(keep) & set(held) and len(keep) + len(held) == len(labels)
    for cls, count in enumerate([10, 20, 30, 40]):
        assert (labels[held] == cls).sum() == round(fraction * count)


@pytest.mark.parametrize("fraction", [0.01, 0.99])
def test_stratified_split_puts_every_class_of_two_or_more_on_both_sides(fraction: float) -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])
    keep, held = stratified_split(labels, fraction, seed=0)
    assert {0, 1} <= set(labels[keep]) and {0, 1} <= set(labels[held])


@pytest.mark.parametrize("order", ["random", "last"])
def test_stratified_split_never_holds_out_a_class_s_only_sample(order: str) -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])
    keep, held = stratified_split(labels, 0.6, seed=0, order=order)
    assert list(labels[keep]).count(2) == 1 and 2 not in labels[held]


def test_ordered_split_holds_out_each_class_s_last_samples() -> None:
    labels = np.array([0, 1, 0, 1, 0, 2, 1, 0, 2, 0, 1, 2, 2, 2])
    keep, held = stratified_split(labels, 0.4, seed=0, order="last")
    assert held.tolist() == [6, 7, 9, 10, 12, 13]  # class 0: 7, 9; class 1: 6, 10; class 2: 12, 13
    assert sorted([*keep, *held]) == list(range(len(labels)))
    for seed in (1, 2):  # the seed plays no part
        again = stratified_split(labels, 0.4, seed=seed, order="last")
        assert np.array_equal(again[1], held) and np.array_equal(again[0], keep)


def test_block_split_holds_out_each_sample_once_over_all_blocks() -> None:
    labels = np.array([0, 1, 0, 1, 0, 2, 1, 0, 2, 0, 1, 2, 2, 2, 0])
    held_out = []
    for block in range(3):  # fraction 1/3: three runs per class, in file order
        keep, held = stratified_split(labels, 1 / 3, seed=0, order="block", block=block)
        assert sorted([*keep, *held]) == list(range(len(labels)))
        held_out.append(held.tolist())
    # class 0 at 0, 2, 4, 7, 9, 14; class 1 at 1, 3, 6, 10; class 2 at 5, 8, 11, 12, 13
    assert held_out == [[0, 1, 2, 3, 5, 8], [4, 6, 7, 11, 12], [9, 10, 13, 14]]
    with pytest.raises(ValueError, match=re.escape("block=5: fraction 0.2 makes blocks 0-4")):
        stratified_split(labels, 0.2, seed=0, order="block", block=5)
    for fraction in (0.0, 0.7):  # no block, or a single one holding everything
        with pytest.raises(ValueError, match="order='block' needs 0 < fraction <= 2/3"):
            stratified_split(labels, fraction, seed=0, order="block")
    with pytest.raises(ValueError, match="order='first': allowed: random, last, block"):
        stratified_split(labels, 0.2, seed=0, order="first")


def test_masked_collate_pads_masks_with_false() -> None:
    a = (torch.ones(3, 1), torch.ones(3, 1), torch.tensor([True, False, True]))
    b = (torch.ones(1, 1), torch.ones(1, 1), torch.tensor([True]))
    batch = masked_collate([a, b])
    assert batch["mask"].tolist() == [[True, False, True], [True, False, False]]
    assert batch["lengths"].tolist() == [3, 1] and batch["y"].shape == (2, 3, 1)


def test_ucr_normalisation_is_fitted_on_the_training_split_only(tmp_path) -> None:
    datamodule = UCRDataModule("JapaneseVowels", data_dir=tmp_path)
    datamodule.setup()
    train_x, _ = load_ts(find_dataset("JapaneseVowels", tmp_path)[0])
    fit = torch.cat([x for x, _ in datamodule.datasets["train"]])
    torch.testing.assert_close(fit.mean(0), torch.zeros(12), atol=1e-5, rtol=0)
    # The validation samples come from the published training file but are not fitted on.
    everything = torch.from_numpy(np.concatenate(train_x))
    assert not torch.allclose(datamodule.normalizer.mean, everything.mean(0), atol=1e-4)
    assert len(datamodule.datasets["train"]) + len(datamodule.datasets["val"]) == len(train_x)


def test_ucr_last_split_validates_on_each_speaker_s_last_utterances(tmp_path) -> None:
    """JapaneseVowels stores 30 utterances per speaker in recording order: ``last`` holds out
    the last 6 of each."""
    datamodule = UCRDataModule("JapaneseVowels", data_dir=tmp_path, val_split="last")
    datamodule.setup()
    train_x, train_y = load_ts(find_dataset("JapaneseVowels", tmp_path)[0])
    scale = datamodule.normalizer
    val = datamodule.datasets["val"]
    expected = [i for speaker in range(9) for i in range(30 * speaker + 24, 30 * speaker + 30)]
    assert len(val) == len(expected) == 54
    for (x, y), i in zip(val, expected, strict=True):
        torch.testing.assert_close(x, scale(torch.from_numpy(train_x[i])))
        assert datamodule.class_names[int(y)] == str(train_y[i])


@pytest.mark.parametrize("block", [0, 2, 4])
def test_ucr_block_split_validates_on_a_run_of_each_speaker_s_utterances(tmp_path, block):
    datamodule = UCRDataModule(
        "JapaneseVowels", data_dir=tmp_path, val_split="block", val_block=block
    )
    datamodule.setup()
    train_x, _ = load_ts(find_dataset("JapaneseVowels", tmp_path)[0])
    expected = [30 * s + 6 * block + i for s in range(9) for i in range(6)]
    assert len(datamodule.datasets["val"]) == 54
    for (x, _), i in zip(datamodule.datasets["val"], expected, strict=True):
        torch.testing.assert_close(x, datamodule.normalizer(torch.from_numpy(train_x[i])))


def test_resample_keeps_a_straight_line_and_its_end_points() -> None:
    for old, new in [(4, 29), (29, 7), (10, 10), (2, 3)]:
        t = torch.arange(old, dtype=torch.float32)
        line = torch.stack([t, 5 - 2 * t], dim=1)
        expected = torch.linspace(0, old - 1, new)
        out = resample(line, new)
        assert out.shape == (new, 2)
        torch.testing.assert_close(out[:, 0], expected)
        torch.testing.assert_close(out[:, 1], 5 - 2 * expected)
    torch.testing.assert_close(
        resample(torch.tensor([[2.0, -1.0]]), 3), torch.tensor([[2.0, -1.0]] * 3)
    )


def test_ucr_resize_length_resamples_every_split_before_normalising(tmp_path) -> None:
    datamodule = UCRDataModule("JapaneseVowels", data_dir=tmp_path, resize_length=29)
    datamodule.setup()
    for split in ("train", "val", "test"):
        assert {x.shape for x, _ in datamodule.datasets[split]} == {(29, 12)}
    # The normaliser is fitted on the resampled training steps, and test samples are the raw
    # file's sequences resampled, then scaled with it.
    fit = torch.cat([x for x, _ in datamodule.datasets["train"]])
    torch.testing.assert_close(fit.mean(0), torch.zeros(12), atol=1e-5, rtol=0)
    test_x, _ = load_ts(find_dataset("JapaneseVowels", tmp_path)[1])
    for i in (0, 100, 369):
        raw = torch.from_numpy(test_x[i])
        assert raw.shape[0] in (19, 10, 11)  # stretched to 29
        expected = datamodule.normalizer(resample(raw, 29))
        torch.testing.assert_close(datamodule.datasets["test"][i][0], expected)


def ramp_batch() -> dict[str, torch.Tensor]:
    """Two sequences (lengths 10 and 4) whose channels are straight lines in time."""
    x = torch.zeros(2, 10, 2)
    for row, length in enumerate((10, 4)):
        t = torch.arange(length, dtype=torch.float32)
        x[row, :length, 0] = t
        x[row, :length, 1] = 5 - 2 * t
    return {"x": x, "lengths": torch.tensor([10, 4]), "y": torch.tensor([1, 0])}


def test_input_noise_touches_real_steps_only() -> None:
    batch = ramp_batch()
    noisy = add_input_noise(batch, 0.5)
    real = torch.arange(10) < batch["lengths"].unsqueeze(1)
    assert (noisy["x"][~real] == 0).all()
    assert (noisy["x"][real] != batch["x"][real]).all()


def test_time_warp_resamples_each_sequence_between_its_own_ends() -> None:
    torch.manual_seed(0)
    batch = ramp_batch()
    seen = set()
    for _ in range(50):
        warped = time_warp(batch, 0.5)
        assert torch.equal(warped["y"], batch["y"])
        for row, (old, new) in enumerate(zip((10, 4), warped["lengths"].tolist(), strict=True)):
            seen.add((row, new))
            assert round(old * 0.5) <= new <= round(old * 1.5)
            sequence = warped["x"][row, :new]
            # A straight line resampled is the same line, end points kept, at the new rate.
            expected = torch.linspace(0, old - 1, new) if new > 1 else torch.zeros(1)
            torch.testing.assert_close(sequence[:, 0], expected)
            torch.testing.assert_close(sequence[:, 1], 5 - 2 * expected)
            assert (warped["x"][row, new:] == 0).all()
    assert len(seen) > 6  # the stretch is drawn per sequence and per call


def test_channel_shift_moves_each_sequence_by_one_offset_per_channel() -> None:
    torch.manual_seed(0)
    batch = ramp_batch()
    shifted = shift_channels(batch, 0.5)
    delta = shifted["x"] - batch["x"]
    offsets = set()
    for row, length in enumerate((10, 4)):
        # Every real step of a sequence moves by the same offset per channel; padding stays zero.
        torch.testing.assert_close(delta[row, :length], delta[row, :1].expand(length, -1))
        assert (shifted["x"][row, length:] == 0).all()
        offsets.update(delta[row, 0].tolist())
    assert len(offsets) == 4 and 0.0 not in offsets  # drawn per sequence and per channel
    assert shifted["lengths"] is batch["lengths"] and shifted["y"] is batch["y"]


def test_time_warp_zero_keeps_the_batch() -> None:
    batch = ramp_batch()
    warped = time_warp(batch, 0.0)
    assert torch.equal(warped["x"], batch["x"]) and torch.equal(warped["lengths"], batch["lengths"])


@pytest.mark.parametrize("training", [True, False])
def test_ucr_augments_training_batches_only(tmp_path, training) -> None:
    datamodule = UCRDataModule(
        "JapaneseVowels", data_dir=tmp_path, noise_std=0.3, time_warp=0.3, shift_std=0.3
    )
    datamodule.trainer = type("FakeTrainer", (), {"training": training})()
    batch = ramp_batch()
    out = datamodule.on_after_batch_transfer(batch, 0)
    assert (out is batch) is not training


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"time_warp": 1.0}, "data.time_warp=1.0: must be in [0, 1)"),
        ({"shift_std": -0.1}, "data.shift_std=-0.1: must be >= 0"),
        ({"val_split": "tail"}, "data.val_split='tail': allowed: random, last, block"),
        (
            {"val_split": "block", "val_block": 5},
            "data.val_block=5: with val_split=block and val_fraction=0.2: an integer in [0, 5)",
        ),
        (
            {"val_split": "block", "val_fraction": 0.0},
            "data.val_fraction=0.0: val_split=block needs 0 < val_fraction <= 2/3",
        ),
        (
            {"val_split": "block", "val_fraction": 0.7},
            "data.val_fraction=0.7: val_split=block needs 0 < val_fraction <= 2/3",
        ),
        ({"resize_length": 0}, "data.resize_length=0: must be a positive integer, or null"),
        ({"resize_length": 2.5}, "data.resize_length=2.5: must be a positive integer, or null"),
        ({"resize_length": True}, "data.resize_length=True: must be a positive integer, or null"),
        ({"split_seed": -1}, "data.split_seed=-1: must be an integer >= 0"),
        ({"batch_size": 8.0}, "data.batch_size=8.0: must be a positive integer"),
    ],
)
def test_ucr_rejects_an_augmentation_or_split_outside_its_range(tmp_path, option, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        UCRDataModule("JapaneseVowels", data_dir=tmp_path, **option)
