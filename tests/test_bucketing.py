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
    assert bucketed < 0.25 * plain  # 75 batches: 4 pools of 18 (and one of 3)


def batches_of(order: list[int], batch_size: int) -> set[frozenset[int]]:
    return {frozenset(order[i : i + batch_size]) for i in range(0, len(order), batch_size)}


def test_a_set_within_one_pool_still_meets_in_new_batches_each_epoch() -> None:
    # PLAID's size and batch: 537 series in 34 batches of 16 (a pool holds 50). Lengths all
    # distinct, so sorting the whole set would give the very same batches every epoch.
    lengths = np.random.default_rng(0).permutation(537).tolist()
    epochs = [
        bucket_order(np.random.default_rng(seed).permutation(537).tolist(), lengths, 16, rng)
        for seed, rng in ((1, np.random.default_rng(1)), (2, np.random.default_rng(2)))
    ]
    whole_set = [sorted(order, key=lambda i: lengths[i]) for order in epochs]
    assert batches_of(whole_set[0], 16) == batches_of(whole_set[1], 16)
    assert len(batches_of(epochs[0], 16) & batches_of(epochs[1], 16)) == 0
    # Still bucketed: pools of 8 batches (the MIN_POOLS = 4 rule) pad far less than shuffling.
    shuffled = np.random.default_rng(3).permutation(537).tolist()
    assert padded_steps(epochs[0], lengths, 16) < 0.4 * padded_steps(shuffled, lengths, 16)


def test_too_few_batches_for_pools_leaves_the_shuffle_as_it_is() -> None:
    order = np.random.default_rng(0).permutation(40).tolist()
    lengths = list(range(40))
    full = bucket_order(order, lengths, 16, np.random.default_rng(0))
    # 2 full batches (< MIN_POOLS): each batch is its own pool, so it holds the same samples.
    assert batches_of(full[:32], 16) == batches_of(order[:32], 16)
    assert full[32:] == sorted(order[32:], key=lambda i: lengths[i])


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
