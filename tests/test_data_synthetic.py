"""The synthetic data modules: adding, copy (delayed recall) and noisy sine waves."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from seqlab.data.synthetic import (
    AddingDataModule,
    CopyDataModule,
    SineDataModule,
    SyntheticDataModule,
)

SMALL = {"train_size": 48, "val_size": 16, "test_size": 16}


def built(cls: type[SyntheticDataModule], **kwargs) -> SyntheticDataModule:
    datamodule = cls(**{**SMALL, **kwargs})
    datamodule.setup("fit")
    return datamodule


def inputs(datamodule: SyntheticDataModule, split: str) -> list[torch.Tensor]:
    return [x for x, _ in datamodule.datasets[split]]


MODULES = [
    (AddingDataModule, {"seq_len": 20}),
    # Only 4**4 = 256 distinct copy sequences: drawing 80 of them repeats some (about 12 pairs
    # expected), so the splits stay disjoint only if repeats are redrawn.
    (CopyDataModule, {"delay": 5, "n_symbols": 4, "alphabet_size": 4}),
    (SineDataModule, {"seq_len": 30, "min_len": 10, "rollout_horizon": 4}),
]


@pytest.mark.parametrize(("cls", "kwargs"), MODULES)
def test_splits_have_the_configured_sizes_and_share_no_sequence(cls, kwargs) -> None:
    datamodule = built(cls, **kwargs)
    keys = {}
    for split in ("train", "val", "test"):
        split_inputs = inputs(datamodule, split)
        assert len(split_inputs) == SMALL[f"{split}_size"]
        keys[split] = {x.numpy().tobytes() for x in split_inputs}
        assert len(keys[split]) == len(split_inputs)
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]


@pytest.mark.parametrize(("cls", "kwargs"), MODULES)
def test_same_seed_gives_the_same_sets_and_another_seed_does_not(cls, kwargs) -> None:
    first, again = built(cls, seed=3, **kwargs), built(cls, seed=3, **kwargs)
    other = built(cls, seed=4, **kwargs)
    for split in ("train", "val", "test"):
        for (x1, y1), (x2, y2) in zip(first.datasets[split], again.datasets[split], strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not all(
        torch.equal(a, b) for a, b in zip(inputs(first, "test"), inputs(other, "test"), strict=True)
    )


def test_resizing_the_training_set_leaves_validation_and_test_unchanged() -> None:
    small = built(AddingDataModule, seq_len=20)
    large = built(AddingDataModule, seq_len=20, train_size=96)
    for split in ("val", "test"):
        assert all(
            torch.equal(a, b)
            for a, b in zip(inputs(small, split), inputs(large, split), strict=True)
        )


def test_setup_is_idempotent() -> None:
    datamodule = built(AddingDataModule, seq_len=20)
    train = datamodule.datasets["train"]
    datamodule.setup("fit")
    datamodule.setup("test")
    assert datamodule.datasets["train"] is train


def test_adding_target_is_the_sum_of_the_two_marked_values_one_marker_per_half() -> None:
    datamodule = built(AddingDataModule, seq_len=21)
    for x, y in datamodule.datasets["train"]:
        assert x.shape == (21, 2)
        values, markers = x[:, 0], x[:, 1]
        marked = markers.nonzero().flatten()
        assert len(marked) == 2 and set(markers.unique().tolist()) == {0.0, 1.0}
        assert marked[0] < 21 // 2 <= marked[1]
        assert y.shape == () and y == pytest.approx(float(values[marked].sum()))
        assert values.min() >= 0 and values.max() <= 1
    assert datamodule.model_kwargs() == {"input_size": 2, "output_size": 1}


def test_adding_batches_are_many_to_one() -> None:
    batch = next(iter(built(AddingDataModule, seq_len=20, batch_size=8).train_dataloader()))
    assert batch["x"].shape == (8, 20, 2)
    assert batch["lengths"].tolist() == [20] * 8
    assert batch["y"].shape == (8,)


def test_copy_scores_only_the_recall_steps_and_they_hold_the_symbols_in_order() -> None:
    n, delay, alphabet = 4, 5, 4
    datamodule = built(CopyDataModule, delay=delay, n_symbols=n, alphabet_size=alphabet)
    blank, marker = alphabet, alphabet + 1
    for x, y in datamodule.datasets["train"]:
        assert x.shape == (2 * n + delay, alphabet + 2)
        assert torch.equal(x.sum(-1), torch.ones(2 * n + delay))  # one-hot at every step
        tokens = x.argmax(-1)
        symbols = tokens[:n]
        assert (symbols < alphabet).all()
        assert (tokens[n : n + delay] == blank).all()
        assert tokens[n + delay] == marker
        assert (tokens[n + delay + 1 :] == blank).all()
        assert torch.equal(y[-n:], symbols)
        assert (y[:-n] == CopyDataModule.IGNORE).all()
    assert datamodule.model_kwargs() == {"input_size": alphabet + 2, "num_classes": alphabet}


def test_copy_batches_have_per_step_targets() -> None:
    datamodule = built(CopyDataModule, delay=5, n_symbols=3, batch_size=8)
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["x"].shape == (8, 11, 10)
    assert batch["y"].shape == (8, 11) and batch["y"].dtype == torch.long


def test_copy_refuses_more_sequences_than_the_alphabet_allows() -> None:
    # 2**3 = 8 distinct symbol strings cannot fill 80 distinct sequences.
    with pytest.raises(ValueError, match=r"data\.n_symbols=3: .* only 8 distinct sequences"):
        CopyDataModule(n_symbols=3, alphabet_size=2, **SMALL)


def test_sine_targets_are_the_next_inputs_and_lengths_vary_within_bounds() -> None:
    datamodule = built(SineDataModule, seq_len=30, min_len=10, rollout_horizon=4)
    lengths = set()
    for x, y in datamodule.datasets["train"]:
        assert x.shape == y.shape and x.shape[1] == 1
        assert 10 <= x.shape[0] <= 30
        assert torch.equal(x[1:], y[:-1])
        lengths.add(x.shape[0])
    assert len(lengths) > 1
    assert datamodule.model_kwargs() == {"input_size": 1, "rollout_horizon": 4}


def test_sine_batches_pad_inputs_and_targets_alike() -> None:
    datamodule = built(SineDataModule, seq_len=30, min_len=10, rollout_horizon=4, batch_size=16)
    batch = next(iter(datamodule.train_dataloader()))
    steps = int(batch["lengths"].max())
    assert batch["x"].shape == batch["y"].shape == (16, steps, 1)
    for row, length in enumerate(batch["lengths"].tolist()):
        assert (batch["y"][row, length:] == 0).all()


@pytest.mark.parametrize(
    ("cls", "kwargs", "key"),
    [
        (AddingDataModule, {"seq_len": 1}, "data.seq_len=1"),
        (AddingDataModule, {"train_size": 0}, "data.train_size=0"),
        (AddingDataModule, {"batch_size": 0}, "data.batch_size=0"),
        (CopyDataModule, {"delay": -1}, "data.delay=-1"),
        (CopyDataModule, {"alphabet_size": 1}, "data.alphabet_size=1"),
        (SineDataModule, {"min_len": 40, "seq_len": 30}, "data.min_len=40"),
        (SineDataModule, {"freq_range": [0.2, 0.1]}, "data.freq_range=[0.2, 0.1]"),
        (SineDataModule, {"min_len": 10, "rollout_horizon": 10}, "data.rollout_horizon=10"),
        # Hydra reads `1e4` as 10000.0; YAML's `true` is a bool: neither is a count.
        (AddingDataModule, {"train_size": 1e4}, "data.train_size=10000.0: must be a positive"),
        (AddingDataModule, {"val_size": True}, "data.val_size=True: must be a positive integer"),
        (AddingDataModule, {"seq_len": 20.5}, "data.seq_len=20.5: must be an integer >= 2"),
        (AddingDataModule, {"seed": -1}, "data.seed=-1: must be an integer >= 0"),
        (CopyDataModule, {"delay": 1.5}, "data.delay=1.5: must be an integer >= 0"),
        (SineDataModule, {"min_len": 10.0}, "data.min_len=10.0: must be an integer in [1, "),
        (SineDataModule, {"rollout_horizon": 2.0}, "data.rollout_horizon=2.0: must be an integer"),
        (SineDataModule, {"num_workers": 0.5}, "data.num_workers=0.5: must be an integer >= 0"),
    ],
)
def test_bad_options_fail_naming_the_key_and_value(cls, kwargs, key) -> None:
    with pytest.raises(ValueError, match=re.escape(key)):
        cls(**kwargs)


def test_numpy_integers_are_counts_too() -> None:
    datamodule = AddingDataModule(seq_len=np.int64(20), train_size=np.int32(10), val_size=5)
    assert datamodule.seq_len == 20 and datamodule.sizes["train"] == 10
