"""What seqlab's data modules share: the base class, option checks, splits, the check of every
sample. The scaling is in `normalize`, the training order in `sampler`."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from seqlab.data.collate import Batch, pad_collate
from seqlab.data.sampler import ResumableSampler, padded_steps, train_position
from seqlab.errors import ConfigError, DataError, is_int

SPLITS = ("train", "val", "test")
# How `stratified_split` picks the held-out samples of each class.
SPLIT_ORDERS = ("random", "last", "block")


def check_option(key: str, value: object, ok: bool, allowed: str) -> None:
    """Fail before training, naming the config key, the value given and what is allowed."""
    if not ok:
        raise ConfigError(f"data.{key}={value!r}: {allowed}")


def check_count(key: str, value: object, minimum: int = 1, why: str = "") -> None:
    """`check_option` for an integer option of at least ``minimum`` (a float such as Hydra's
    reading of `1e4`, or a bool, is refused rather than failing later without the key)."""
    bound = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    check_option(key, value, is_int(value) and value >= minimum, f"must be {bound}{why}")


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

    def input_steps_per_epoch(self) -> int:
        """Time steps one training epoch feeds the model, padding included (each batch is padded
        to its longest sequence): epoch 0's order, as one process sees the whole split. The
        other epochs are other shuffles of the same split, padded about as much (with
        ``bucketing``, as little). Read by ``budget.max_input_steps``."""
        self.require_setup()
        lengths = self.lengths("train")
        order = list(self.train_dataloader().sampler)
        return sum(lengths[i] for i in order) + padded_steps(order, lengths, self.batch_size)

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
