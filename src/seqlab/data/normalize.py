"""``data.normalize``: how a data module scales its sequences, fitted on the training split only.

``fit_normalizer(mode, train_sequences)`` returns a function of one ``(T, C)`` sequence; the
modes are `NORMALIZE_MODES`, and ``auto`` is settled from the training file by
`resolve_normalize`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from seqlab.data.base import check_option

# channel: z-score per channel with the training split's statistics; series: each sequence
# z-scored per channel over its own steps (what the UCR archive does); series_scale: series,
# plus each sequence's own level and spread as two more channels per channel (`SeriesScale`);
# none: as read; auto: see `resolve_normalize`.
NORMALIZE_MODES = ("channel", "series", "series_scale", "none", "auto")


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
