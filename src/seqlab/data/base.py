"""What seqlab's data modules share: in-memory splits, loaders, train-only normalisation."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from seqlab.data.collate import Batch, pad_collate
from seqlab.errors import ConfigError, DataError, is_int

if TYPE_CHECKING:
    from lightning.pytorch.loops.progress import _ProcessedTracker

SPLITS = ("train", "val", "test")
# How `stratified_split` picks the held-out samples of each class.
SPLIT_ORDERS = ("random", "last", "block")
# channel: z-score per channel with the training split's statistics; series: each sequence
# z-scored per channel over its own steps (what the UCR archive does); series_scale: series,
# plus each sequence's own level and spread as two more channels per channel (`SeriesScale`);
# none: as read; auto: see `resolve_normalize`.
NORMALIZE_MODES = ("channel", "series", "series_scale", "none", "auto")


def check_option(key: str, value: object, ok: bool, allowed: str) -> None:
    """Fail before training, naming the config key, the value given and what is allowed."""
    if not ok:
        raise ConfigError(f"data.{key}={value!r}: {allowed}")


def check_count(key: str, value: object, minimum: int = 1, why: str = "") -> None:
    """`check_option` for an integer option of at least ``minimum`` (a float such as Hydra's
    reading of `1e4`, or a bool, is refused rather than failing later without the key)."""
    bound = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    check_option(key, value, is_int(value) and value >= minimum, f"must be {bound}{why}")


def normalize_mode(value: object) -> str:
    """``data.normalize`` as one of ``NORMALIZE_MODES`` (``true`` is ``channel``, ``false``
    ``none``, as before the modes existed)."""
    if isinstance(value, bool):
        return "channel" if value else "none"
    check_option(
        "normalize",
        value,
        value in NORMALIZE_MODES,
        f"allowed: {', '.join(NORMALIZE_MODES)} (true: channel, false: none)",
    )
    return str(value)


def resolve_normalize(mode: str, sequences: Sequence[np.ndarray | Tensor]) -> str:
    """``auto`` from the training sequences (``(T_i, C)`` each, as read):

    - several channels: ``channel``, so the channels keep their relative levels (the
      multivariate archive's deep-learning benchmarks, Fawaz et al. 2019);
    - one channel, every sequence already z-scored (the UCR archive stores most of its sets so):
      ``series``, as its DTW baseline reads them;
    - one channel with levels or spreads that differ between sequences: ``series_scale``. A
      set stored raw may tell its classes apart by amplitude (PLAID's appliances draw different
      currents), which ``series`` would throw away; ``channel`` would read a heavy-tailed set as
      near-constant zeros (Covid3Month_disc, 0 to 20,341).
    """
    if mode != "auto":
        return mode
    if sequences[0].shape[1] > 1:
        return "channel"
    return "series" if carries_no_scale(sequences) else "series_scale"


def carries_no_scale(sequences: Sequence[np.ndarray | Tensor]) -> bool:
    """Whether every sequence has the same level and spread (within 1% of the spread, and 5%
    of it between the widest and the narrowest), as z-scored ones have, whatever their
    convention for the spread: nothing would be learnt from them."""
    levels, spreads = _levels_and_spreads([torch.as_tensor(x) for x in sequences])
    unit = spreads.max().clamp_min(1e-12)
    return bool(
        levels.max() - levels.min() <= 0.01 * unit and spreads.min() >= 0.95 * spreads.max()
    )


def _levels_and_spreads(sequences: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Each sequence's mean and (population) standard deviation per channel: two ``(N, C)``."""
    x = [s.double() for s in sequences]
    levels = torch.stack([s.mean(0) for s in x])
    spreads = torch.stack([s.std(0, unbiased=False) for s in x])
    return levels, spreads


def standardize_series(x: Tensor) -> Tensor:
    """A ``(T, C)`` sequence z-scored per channel over its own steps (a constant channel, or a
    one-step sequence, is only centred)."""
    std = x.std(0, unbiased=False) if len(x) > 1 else torch.ones_like(x[0])
    return (x - x.mean(0)) / std.clamp_min(1e-6)


@dataclass(frozen=True)
class SeriesScale:
    """``normalize=series_scale``: each sequence z-scored by itself (its shape), and beside it,
    constant over its steps, its own level and spread per channel, so ``(T, C)`` becomes
    ``(T, 3C)``: ``[z-scored x, level, spread]``.

    Level is ``asinh(mean / unit)`` and spread ``log(std / unit + 1e-3)`` (both readable across
    orders of magnitude, the level's sign kept), ``unit`` the training sequences' median spread
    (the lower middle one for an even count); both are then z-scored with the training
    sequences' statistics and clipped to +-`CLIP`, so a test sequence far outside them cannot
    swamp the network. Fit on the training split only.
    """

    unit: Tensor  # (C,)
    mean: Tensor  # (2C,)
    std: Tensor  # (2C,)

    CLIP = 6.0
    # Features that hardly vary over the training split are only centred (no division by ~0).
    MIN_SPREAD = 0.01

    @staticmethod
    def _features(levels: Tensor, spreads: Tensor, unit: Tensor) -> Tensor:
        return torch.cat([torch.asinh(levels / unit), torch.log(spreads / unit + 1e-3)], -1)

    @classmethod
    def fit(cls, sequences: Sequence[Tensor]) -> SeriesScale:
        levels, spreads = _levels_and_spreads(sequences)
        unit = spreads.median(0).values.clamp_min(1e-12)
        features = cls._features(levels, spreads, unit)
        std = features.std(0, unbiased=False).clamp_min(cls.MIN_SPREAD)
        return cls(unit, features.mean(0), std)

    def __call__(self, x: Tensor) -> Tensor:
        levels, spreads = _levels_and_spreads([x])
        features = (self._features(levels, spreads, self.unit) - self.mean) / self.std
        features = features.clamp(-self.CLIP, self.CLIP).to(x.dtype)
        return torch.cat([standardize_series(x), features.expand(len(x), -1)], dim=1)


Normalizer = Callable[[Tensor], Tensor]


def fit_normalizer(mode: str, sequences: Sequence[Tensor]) -> Normalizer:
    """The resolved ``data.normalize`` mode as a function of one ``(T, C)`` sequence, fitted on
    ``sequences`` (the training split's, after any resampling) where the mode has statistics."""
    if mode == "channel":
        return ChannelNormalizer.fit(sequences)
    if mode == "series_scale":
        return SeriesScale.fit(sequences)
    if mode == "series":
        return standardize_series
    return _unchanged


def _unchanged(x: Tensor) -> Tensor:
    return x


def auto_batch_size(samples: int) -> int:
    """``batch_size=auto``: a tenth of the training split, at least 8 and at most 16.

    FCN's rule (Wang et al. 2017; Fawaz et al. 2019 use ``min(n / 10, 16)``): a small set gets
    enough updates per epoch, and noisy enough gradients, from small batches. The floor keeps
    batch normalisation's statistics steady.
    """
    return min(16, max(8, samples // 10))


def downsample_factor(longest: int, max_length: int | None) -> int:
    """The smallest integer ``k`` with ``ceil(longest / k) <= max_length`` (1 for null)."""
    if max_length is None:
        return 1
    return max(1, -(-longest // max_length))


def block_count(fraction: float) -> int:
    """How many runs ``order="block"`` cuts each class into: ``round(1 / fraction)`` (0 for a
    fraction of 0)."""
    return round(1 / fraction) if fraction > 0 else 0


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int, *, order: str = "random", block: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(keep, held_out)`` with about ``fraction`` of each class held out.

    Which of a class's samples are held out depends on ``order``:

    - ``"random"``: a draw seeded by ``seed``, at least one where a class has two or more, and
      never a class's only sample (training would never see that class);
    - ``"last"``: its last ones in the given order, as many as ``"random"`` holds out;
    - ``"block"``: the class cut into ``round(1 / fraction)`` runs of consecutive samples
      (sizes differing by at most one); run ``block`` is held out. Running every block once is
      a k-fold cross-validation in which each sample is held out exactly once.

    ``seed`` plays no part unless ``order="random"``.
    """
    if order not in SPLIT_ORDERS:
        raise ValueError(f"order={order!r}: allowed: {', '.join(SPLIT_ORDERS)}")
    blocks = block_count(fraction)
    if order == "block" and blocks < 2:
        raise ValueError(f"fraction={fraction}: order='block' needs 0 < fraction <= 2/3")
    if order == "block" and not 0 <= block < blocks:
        raise ValueError(f"block={block}: fraction {fraction} makes blocks 0-{blocks - 1}")
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        if order == "block":
            runs = np.array_split(idx, blocks)
            held.append(runs[block])
            keep.append(np.concatenate([run for i, run in enumerate(runs) if i != block]))
            continue
        n_held = round(fraction * len(idx))
        if fraction > 0:  # at least one held out, and at least one kept for training
            n_held = min(max(n_held, 1), len(idx) - 1)
        if order == "random":
            idx = rng.permutation(idx)
            held.append(idx[:n_held])
            keep.append(idx[n_held:])
        else:
            keep.append(idx[: len(idx) - n_held])
            held.append(idx[len(idx) - n_held :])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def check_inputs(dataset: Dataset, where: str) -> None:
    """Every input a non-empty ``(T, C)`` tensor of finite numbers with the same ``C``: a NaN
    would turn every weight into NaN at the first step, long after the cause is out of sight."""
    channels = None
    for i in range(len(dataset)):  # type: ignore[arg-type]
        x = dataset[i][0]
        if x.dim() != 2 or x.shape[0] == 0:
            raise DataError(
                f"{where}, sample {i}: input of shape {tuple(x.shape)}; need (T >= 1, C)"
            )
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise DataError(f"{where}, sample {i}: NaN or inf in the input")
        if channels is None:
            channels = x.shape[1]
        elif x.shape[1] != channels:
            raise DataError(
                f"{where}, sample {i}: {x.shape[1]} channels, but sample 0 has {channels}"
            )


@dataclass(frozen=True)
class ChannelNormalizer:
    """Per-channel z-score ``(x - mean) / std`` with statistics of the real steps it was fitted on.

    Fit it on the training split only: statistics that saw validation or test data would leak
    them into the model.
    """

    mean: Tensor  # (C,)
    std: Tensor  # (C,)

    @classmethod
    def fit(cls, sequences: Sequence[Tensor]) -> ChannelNormalizer:
        """From a list of ``(T_i, C)`` sequences (no padding, so every step is real)."""
        steps = torch.cat(list(sequences))
        # A constant channel would divide by zero, and one step has no spread (std NaN):
        # leave those centred instead.
        std = steps.std(0) if len(steps) > 1 else torch.ones_like(steps[0])
        return cls(steps.mean(0), std.clamp_min(1e-6))

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def train_position(trainer: L.Trainer) -> tuple[int, int]:
    """``(epoch, batches of it already trained)`` where the next training pass starts.

    Read from the trainer's loop counters, which a checkpoint restores: after a resume
    mid-epoch it is the interrupted epoch and how far it got, otherwise ``(epoch, 0)``. Lightning
    creates a resumed run's first loader iterator before it calls ``set_epoch``, so a sampler
    asks this instead.
    """
    # Lightning declares `current` as the base tracker; an epoch's is a _ProcessedTracker.
    epochs = cast("_ProcessedTracker", trainer.fit_loop.epoch_progress.current)
    mid_epoch = epochs.started > epochs.processed
    batches = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    return epochs.processed, batches if mid_epoch else 0


class ResumableSampler(DistributedSampler):
    """The training order: a fresh shuffle each epoch that depends on ``(seed, epoch)`` alone,
    and this process's shard of it under DDP (Lightning keeps a ``DistributedSampler``).

    Unlike a ``RandomSampler`` it never draws from torch's global generator, and with
    ``position`` (see ``train_position``) a run resumed from a checkpoint, even mid-epoch, sees
    exactly the batches the interrupted run would have seen next.

    With ``lengths`` (each sample's steps) the order is bucketed (`bucket_order`): a batch holds
    sequences of similar length, so little of it is padding; still a function of the seed, the
    epoch and the shard alone, so a resume is as exact.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        position: Callable[[], tuple[int, int]] | None = None,
        lengths: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=True,
            seed=seed,
        )
        self.batch_size = batch_size
        self.position = position
        self.lengths = lengths

    def __iter__(self) -> Iterator[int]:
        skip = 0
        if self.position is not None:
            epoch, skip = self.position()
            self.set_epoch(epoch)
        order = list(super().__iter__())
        if self.lengths is not None:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank])
            order = bucket_order(order, self.lengths, self.batch_size, rng)
        return iter(order[skip * self.batch_size :])


#: How many batches' worth of the shuffled order ``bucket_order`` sorts by length at a time.
BUCKET_POOL = 50


def bucket_order(
    order: Sequence[int],
    lengths: Sequence[int],
    batch_size: int,
    rng: np.random.Generator,
    pool: int = BUCKET_POOL,
) -> list[int]:
    """``order`` rearranged so that each run of ``batch_size`` holds similar lengths.

    The shuffled ``order`` is cut into pools of ``pool`` batches; each pool is sorted by length
    and cut into batches, and the full batches of every pool are shuffled together. A short
    batch (the order's last few samples) stays at the end, so that a loader cutting the order
    every ``batch_size`` samples cuts it on these batches' boundaries. Sorting within pools of
    a random order, not the whole set, keeps which sequences meet in a batch random.
    """
    size = batch_size * pool
    batches: list[list[int]] = []
    for start in range(0, len(order), size):
        bucket = sorted(order[start : start + size], key=lambda i: lengths[i])  # stable
        batches += [bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size)]
    full = [batch for batch in batches if len(batch) == batch_size]
    short = [batch for batch in batches if len(batch) < batch_size]
    return [i for k in rng.permutation(len(full)) for i in full[k]] + [i for b in short for i in b]


def padded_steps(order: Sequence[int], lengths: Sequence[int], batch_size: int) -> int:
    """Padding steps a loader adds when it batches ``order`` every ``batch_size`` samples."""
    total = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start : start + batch_size]]
        total += max(batch) * len(batch) - sum(batch)
    return total


class SequenceDataModule(L.LightningDataModule, abc.ABC):
    """A data module whose train / val / test splits live in memory.

    Subclasses set ``task`` (a key of ``seqlab.tasks.TASKS``), build the splits in
    ``build_datasets()`` and say what the task module needs in ``model_kwargs()``;
    ``collate`` turns a list of samples into a batch (``pad_collate`` by default).
    ``setup`` builds the splits once: ``train()`` calls it early to size the model.
    ``bucketing``: training batches of similar lengths (``ResumableSampler``), for data whose
    lengths vary; validation and test keep their order.
    """

    task: str

    def __init__(self, batch_size: int = 32, num_workers: int = 0, bucketing: bool = False) -> None:
        super().__init__()
        check_count("batch_size", batch_size)
        check_count("num_workers", num_workers, minimum=0)
        check_option("bucketing", bucketing, isinstance(bucketing, bool), "must be true or false")
        # Collects the subclass's constructor arguments too; checkpoints keep them.
        self.save_hyperparameters(logger=False)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.bucketing = bucketing
        self.datasets: dict[str, Dataset] = {}

    @abc.abstractmethod
    def build_datasets(self) -> dict[str, Dataset]:
        """The ``"train"``, ``"val"`` and ``"test"`` datasets."""

    @abc.abstractmethod
    def model_kwargs(self) -> dict[str, int]:
        """What the task module's constructor needs to know about the data."""

    def collate(self, samples: Sequence[Any]) -> Batch:
        return pad_collate(samples)

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            datasets = self.build_datasets()
            for split, dataset in datasets.items():
                check_inputs(dataset, f"{type(self).__name__} {split} split")
            self.datasets = datasets

    def require_setup(self) -> None:
        if not self.datasets:
            raise RuntimeError("call setup() before asking the data module for sizes")

    def lengths(self, split: str) -> list[int]:
        """Each sample's steps in ``split``, as batching sees them."""
        dataset = self.datasets[split]
        return [len(dataset[i][0]) for i in range(len(dataset))]  # type: ignore[arg-type]

    def _loader(
        self, split: str, shuffle: bool, collate_fn: Callable[..., Batch] | None = None
    ) -> DataLoader:
        dataset = self.datasets[split]
        rank, world_size = 0, 1
        if self.trainer is not None:
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
        sampler: torch.utils.data.Sampler | None = None
        if shuffle:
            # torch.initial_seed() is the run's seed once seed_everything has run.
            trainer = self.trainer
            sampler = ResumableSampler(
                dataset,
                self.batch_size,
                torch.initial_seed() % 2**32,
                rank,
                world_size,
                position=None if trainer is None else lambda: train_position(trainer),
                lengths=self.lengths(split) if self.bucketing else None,
            )
        elif world_size > 1:
            # Lightning's default DistributedSampler pads the last shard with repeated samples,
            # which evaluation would count twice; this one gives each sample to exactly one
            # process (shards may then differ by one batch, which evaluation tolerates).
            sampler = UnrepeatedDistributedSampler(
                dataset,
                num_replicas=world_size,
                rank=rank,
                shuffle=False,
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_fn or self.collate,
            # Its own generator: starting a loader never draws from torch's global one, whose
            # state a checkpoint restores (dropout and input noise depend on it).
            generator=torch.Generator().manual_seed(torch.initial_seed() % 2**63),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class MaskedSequenceDataset(Dataset):
    """In-memory ``(x (T_i, C), y (T_i, ...), mask (T_i,) bool)`` triples: per-step targets with
    the steps that count marked in ``mask`` (e.g. only the forecast of a window's last step)."""

    def __init__(
        self, inputs: Sequence[Tensor], targets: Sequence[Tensor], masks: Sequence[Tensor]
    ) -> None:
        if not len(inputs) == len(targets) == len(masks):
            raise ValueError(f"{len(inputs)} inputs, {len(targets)} targets, {len(masks)} masks")
        self.inputs, self.targets, self.masks = list(inputs), list(targets), list(masks)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.inputs[index], self.targets[index], self.masks[index]


def masked_collate(samples: Sequence[tuple[Tensor, Tensor, Tensor]]) -> Batch:
    """``pad_collate`` with per-step targets, plus ``"mask": (B, T_max)`` (False at padding)."""
    batch = pad_collate([(x, y) for x, y, _ in samples], pad_targets=True)
    batch["mask"] = torch.nn.utils.rnn.pad_sequence(
        [mask for _, _, mask in samples], batch_first=True
    )
    return batch
