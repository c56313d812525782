"""data.bucketing: training batches of similar lengths, in an order that is still a function of
the seed, the epoch and the process alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqlab.data.collate import SequenceDataset
from seqlab.data.sampler import ResumableSampler, bucket_order, padded_steps


def lengths_like_spoken_digits(n: int = 2400, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(6, 93, size=n).tolist()


def dataset_of(lengths: list[int]) -> SequenceDataset:
    return SequenceDataset([torch.zeros(t, 1) for t in lengths], torch.zeros(len(lengths)))


def test_bucketing_reorders_without_losing_or_repeating_a_sample() -> None:
    lengths = lengths_like_spoken_digits(1000)
    order = np.random.default_rng(1).permutation(1000).tolist()
    bucketed = bucket_order(order, lengths, 32, np.random.default_rng(2))
    assert sorted(bucketed) == sorted(order)
    assert bucketed != order
    # The 1000 % 32 = 8 samples of the short batch come last, so batches stay 32-aligned.
    tail = set(bucketed[-8:])
    assert all(len(set(bucketed[i : i + 32]) & tail) == 0 for i in range(0, 992, 32))


def test_bucketed_batches_pad_far_less_than_shuffled_ones() -> None:
    lengths = lengths_like_spoken_digits()
    order = np.random.default_rng(0).permutation(len(lengths)).tolist()
    plain = padded_steps(order, lengths, 32)
    bucketed = padded_steps(bucket_order(order, lengths, 32, np.random.default_rng(0)), lengths, 32)
    assert bucketed < 0.1 * plain


def test_padded_steps_counts_what_padding_adds() -> None:
    assert padded_steps([0, 1, 2], [3, 5, 4], 2) == (5 * 2 - 8) + 0


def sampler(lengths, rank=0, world_size=1, seed=7, position=None) -> ResumableSampler:
    return ResumableSampler(
        dataset_of(lengths), 16, seed, rank, world_size, position=position, lengths=lengths
    )


def test_the_order_is_a_function_of_seed_and_epoch_only() -> None:
    lengths = lengths_like_spoken_digits(300)
    first, again, other = sampler(lengths), sampler(lengths), sampler(lengths, seed=8)
    for s in (first, again, other):
        s.set_epoch(3)
    assert list(first) == list(again) != list(other)
    again.set_epoch(4)
    assert list(again) != list(first)


def test_a_resume_mid_epoch_goes_on_with_the_next_bucketed_batch() -> None:
    lengths = lengths_like_spoken_digits(300)
    whole = sampler(lengths)
    whole.set_epoch(2)
    resumed = sampler(lengths, position=lambda: (2, 5))  # epoch 2, 5 batches done
    assert list(resumed) == list(whole)[5 * 16 :]


@pytest.mark.parametrize("n", [300, 301])
def test_ddp_shards_are_disjoint_cover_the_set_and_have_as_many_batches(n) -> None:
    lengths = lengths_like_spoken_digits(n)
    shards = [list(sampler(lengths, rank, world_size=2)) for rank in range(2)]
    assert len(shards[0]) == len(shards[1])  # the same number of steps on both processes
    assert set(shards[0]) | set(shards[1]) == set(range(n))
    if n % 2 == 0:
        assert not set(shards[0]) & set(shards[1])


def test_a_data_module_buckets_its_training_batches_only(tmp_path) -> None:
    from seqlab.data.folder import FolderDataModule
    from tests.own_data import write_folder

    root = write_folder(tmp_path / "walks", n=200)
    plain = FolderDataModule(root, batch_size=8, test_fraction=0.5)
    bucketed = FolderDataModule(root, batch_size=8, test_fraction=0.5, bucketing=True)
    for dm in (plain, bucketed):
        dm.setup()

    def padding(loader) -> int:
        return sum(int((b["lengths"].max() - b["lengths"]).sum()) for b in loader)

    torch.manual_seed(0)
    assert padding(bucketed.train_dataloader()) < 0.5 * padding(plain.train_dataloader())
    assert padding(bucketed.test_dataloader()) == padding(plain.test_dataloader())


def test_bucketing_must_be_a_bool() -> None:
    from seqlab.data.ucr import UCRDataModule
    from seqlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.bucketing='yes': must be true or false"):
        UCRDataModule(bucketing="yes")  # type: ignore[arg-type]
