"""Synthetic benchmarks for recurrent nets, generated on the fly: adding, copy (delayed recall),
noisy sine waves.

Each split is drawn once, in ``setup``, from its own generator spawned from ``data.seed``, so the
sets are reproducible, do not change when another split's size does, and never share a sequence.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from seqlab.data.base import SPLITS, SequenceDataModule, check_count, check_option
from seqlab.data.collate import Batch, SequenceDataset, pad_collate
from seqlab.errors import is_int

Sample = tuple[Tensor, Tensor]
# Index of a split's stream among those spawned from the seed; fixed so sizes can change freely.
STREAM = {split: i for i, split in enumerate(SPLITS)}


class SyntheticDataModule(SequenceDataModule):
    """Fixed, seeded train / val / test sets of ``<split>_size`` sequences each.

    Subclasses implement ``generate(n, rng)``, which draws ``n`` ``(x (T_i, C), y)`` samples.
    """

    def __init__(
        self,
        train_size: int,
        val_size: int,
        test_size: int,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        sizes = {"train_size": train_size, "val_size": val_size, "test_size": test_size}
        for key, size in sizes.items():
            check_count(key, size)
        check_count("seed", seed, minimum=0)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.seed = seed

    @abc.abstractmethod
    def generate(self, n: int, rng: np.random.Generator) -> list[Sample]:
        """``n`` fresh samples drawn from ``rng``."""

    def build_datasets(self) -> dict[str, Dataset]:
        streams = np.random.SeedSequence(self.seed).spawn(len(STREAM))
        seen: set[bytes] = set()
        datasets: dict[str, Dataset] = {}
        for split in SPLITS:
            rng = np.random.default_rng(streams[STREAM[split]])
            samples = self._draw_unseen(self.sizes[split], rng, seen)
            datasets[split] = SequenceDataset([x for x, _ in samples], [y for _, y in samples])
        return datasets

    def _draw_unseen(self, n: int, rng: np.random.Generator, seen: set[bytes]) -> list[Sample]:
        """``n`` samples whose inputs occur in no earlier split (nor twice in this one): a
        sequence in both train and test would measure memory, not generalisation."""
        samples: list[Sample] = []
        fruitless_rounds = 0
        while len(samples) < n:
            before = len(samples)
            for x, y in self.generate(n - len(samples), rng):
                # A 16-byte digest: keeping whole sequences as keys would double the memory.
                key = hashlib.blake2b(x.numpy().tobytes(), digest_size=16).digest()
                if key not in seen:
                    seen.add(key)
                    samples.append((x, y))
            fruitless_rounds = fruitless_rounds + 1 if len(samples) == before else 0
            if fruitless_rounds == 1000:
                raise RuntimeError(
                    f"{type(self).__name__}: 1000 draws in a row repeated earlier sequences; the "
                    f"options allow too few distinct ones for {sum(self.sizes.values())} in all"
                )
        return samples

    @property
    def input_size(self) -> int:
        self.require_setup()
        return int(self.datasets["train"][0][0].shape[-1])


class AddingDataModule(SyntheticDataModule):
    """The adding problem (Hochreiter & Schmidhuber, 1997), many-to-one regression.

    ``x (seq_len, 2)``: channel 0 holds values drawn uniformly from [0, 1], channel 1 marks two of
    them with a 1, one in each half of the sequence. ``y ()``: the sum of the two marked values.
    Always predicting the mean (1.0) scores an MSE of 1/6 (about 0.167).
    """

    task = "regression"

    def __init__(
        self,
        seq_len: int = 200,
        train_size: int = 10_000,
        val_size: int = 1_000,
        test_size: int = 1_000,
        seed: int = 0,
        batch_size: int = 50,
        num_workers: int = 0,
    ) -> None:
        super().__init__(train_size, val_size, test_size, seed, batch_size, num_workers)
        check_count("seq_len", seq_len, minimum=2, why=" (one marker in each half)")
        self.seq_len = seq_len

    def model_kwargs(self) -> dict[str, int]:
        return {"input_size": self.input_size, "output_size": 1}

    def generate(self, n: int, rng: np.random.Generator) -> list[Sample]:
        half = self.seq_len // 2
        values = rng.uniform(0.0, 1.0, (n, self.seq_len))
        first = rng.integers(0, half, n)
        second = rng.integers(half, self.seq_len, n)
        markers = np.zeros_like(values)
        rows = np.arange(n)
        markers[rows, first] = markers[rows, second] = 1.0
        x = torch.from_numpy(np.stack([values, markers], axis=-1).astype(np.float32))
        y = torch.from_numpy((values[rows, first] + values[rows, second]).astype(np.float32))
        return list(zip(x.unbind(0), y.unbind(0), strict=True))


class CopyDataModule(SyntheticDataModule):
    """Delayed recall ("copy memory", Hochreiter & Schmidhuber, 1997; Arjovsky et al., 2016).

    Inputs (one-hot over ``alphabet_size`` symbols, a blank and a recall marker): ``n_symbols``
    random symbols, ``delay`` blanks, the recall marker, then ``n_symbols - 1`` blanks, so
    ``T = 2 * n_symbols + delay``. Targets are the symbols, in order, at the last ``n_symbols``
    steps (from the marker on) and ``-100`` (ignored) everywhere else: only recall is scored.
    """

    task = "tagging"
    IGNORE = -100

    def __init__(
        self,
        delay: int = 50,
        n_symbols: int = 10,
        alphabet_size: int = 8,
        train_size: int = 10_000,
        val_size: int = 1_000,
        test_size: int = 1_000,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__(train_size, val_size, test_size, seed, batch_size, num_workers)
        check_count("delay", delay, minimum=0, why=" (blank steps before recall)")
        check_count("n_symbols", n_symbols)
        check_count("alphabet_size", alphabet_size, minimum=2)
        total = train_size + val_size + test_size
        # Redrawing repeats gets slow long before every sequence is taken; ask for headroom.
        check_option(
            "n_symbols",
            n_symbols,
            alphabet_size**n_symbols >= 2 * total,
            f"with data.alphabet_size={alphabet_size} there are only "
            f"{alphabet_size**n_symbols} distinct sequences, fewer than twice the {total} asked "
            "for (train + val + test); use more symbols or a larger alphabet",
        )
        self.delay = delay
        self.n_symbols = n_symbols
        self.alphabet_size = alphabet_size

    @property
    def seq_len(self) -> int:
        return 2 * self.n_symbols + self.delay

    def model_kwargs(self) -> dict[str, int]:
        return {"input_size": self.input_size, "num_classes": self.alphabet_size}

    def collate(self, samples: Sequence[Sample]) -> Batch:
        return pad_collate(samples, pad_targets=True)

    def generate(self, n: int, rng: np.random.Generator) -> list[Sample]:
        blank, marker = self.alphabet_size, self.alphabet_size + 1
        symbols = rng.integers(0, self.alphabet_size, (n, self.n_symbols))
        tokens = np.full((n, self.seq_len), blank)
        tokens[:, : self.n_symbols] = symbols
        tokens[:, self.n_symbols + self.delay] = marker
        targets = np.full((n, self.seq_len), self.IGNORE)
        targets[:, -self.n_symbols :] = symbols
        x = torch.nn.functional.one_hot(torch.from_numpy(tokens), self.alphabet_size + 2).float()
        y = torch.from_numpy(targets)
        return list(zip(x.unbind(0), y.unbind(0), strict=True))


class SineDataModule(SyntheticDataModule):
    """Noisy multi-frequency waves, many-to-many next-step forecasting.

    Each sequence is a sum of ``n_waves`` sinusoids (frequencies uniform in ``freq_range``
    cycles per step, random phases and amplitudes) plus Gaussian noise of ``noise_std``; lengths
    are uniform in ``[min_len, seq_len]``. ``x (T_i, 1)`` holds steps ``0..T_i-1``, ``y (T_i, 1)``
    steps ``1..T_i``. At validation and test the model also rolls out the last
    ``rollout_horizon`` steps of each sequence autoregressively from its own predictions.
    """

    task = "forecasting"

    def __init__(
        self,
        seq_len: int = 128,
        min_len: int = 64,
        n_waves: int = 3,
        freq_range: Sequence[float] = (0.01, 0.1),
        noise_std: float = 0.05,
        rollout_horizon: int = 20,
        train_size: int = 2_000,
        val_size: int = 200,
        test_size: int = 200,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(train_size, val_size, test_size, seed, batch_size, num_workers)
        check_count("seq_len", seq_len, minimum=2)
        check_option(
            "min_len",
            min_len,
            is_int(min_len) and 1 <= min_len <= seq_len,
            f"must be an integer in [1, data.seq_len={seq_len}]",
        )
        check_count("n_waves", n_waves)
        check_option(
            "freq_range",
            freq_range,
            len(freq_range) == 2 and 0 < freq_range[0] <= freq_range[1] <= 0.5,
            "must be [low, high] cycles per step with 0 < low <= high <= 0.5 (Nyquist)",
        )
        check_option("noise_std", noise_std, noise_std >= 0, "must be >= 0")
        check_option(
            "rollout_horizon",
            rollout_horizon,
            is_int(rollout_horizon) and 0 <= rollout_horizon < min_len,
            f"must be an integer in [0, data.min_len={min_len}): the rollout needs a step of "
            "context",
        )
        self.seq_len = seq_len
        self.min_len = min_len
        self.n_waves = n_waves
        self.freq_range = (float(freq_range[0]), float(freq_range[1]))
        self.noise_std = noise_std
        self.rollout_horizon = rollout_horizon

    def model_kwargs(self) -> dict[str, int]:
        return {"input_size": self.input_size, "rollout_horizon": self.rollout_horizon}

    def collate(self, samples: Sequence[Sample]) -> Batch:
        return pad_collate(samples, pad_targets=True)

    def generate(self, n: int, rng: np.random.Generator) -> list[Sample]:
        lengths = rng.integers(self.min_len, self.seq_len + 1, n)
        freqs = rng.uniform(*self.freq_range, (n, self.n_waves, 1))
        phases = rng.uniform(0, 2 * np.pi, (n, self.n_waves, 1))
        # Amplitudes summing to at most 1 keep every series in [-1, 1] before noise.
        amplitudes = rng.uniform(0.5, 1.0, (n, self.n_waves, 1)) / self.n_waves
        t = np.arange(self.seq_len + 1)
        waves = (amplitudes * np.sin(2 * np.pi * freqs * t + phases)).sum(1)
        series = waves + rng.normal(0.0, self.noise_std, waves.shape)
        series = torch.from_numpy(series.astype(np.float32)).unsqueeze(-1)  # (n, seq_len + 1, 1)
        return [(s[:length], s[1 : length + 1]) for s, length in zip(series, lengths, strict=True)]
