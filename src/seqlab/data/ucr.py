"""UCR/UEA time-series classification sets: the ones aeon ships, or your own `.ts` files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from seqlab.data.base import (
    SPLIT_ORDERS,
    SequenceDataModule,
    auto_batch_size,
    block_count,
    check_count,
    check_option,
    downsample_factor,
    stratified_split,
)
from seqlab.data.collate import (
    Batch,
    SequenceDataset,
    add_input_noise,
    downsample,
    resample,
    shift_channels,
    time_warp,
)
from seqlab.data.normalize import Normalizer, fit_normalizer, normalize_mode, resolve_normalize
from seqlab.data.sources import (
    MISSING_POLICIES,
    SOURCES,
    SPLIT_FORMATS,
    is_classification,
    load_split,
    read_pair,
    source_dir,
)
from seqlab.errors import ConfigError, DataError, is_int

log = logging.getLogger(__name__)


def _split_files(folder: Path, name: str) -> tuple[Path, Path] | None:
    """``name``'s pair in ``folder/name/``, else ``folder/``, else any other subfolder of
    ``folder`` (aeon keeps JapaneseVowels_eq in JapaneseVowels/): where `_set_names` finds them."""
    bases = [folder / name, folder]
    if folder.is_dir():
        bases += sorted(p for p in folder.iterdir() if p.is_dir() and p.name != name)
    for base in bases:
        for suffix in SPLIT_FORMATS:
            train, test = base / f"{name}_TRAIN{suffix}", base / f"{name}_TEST{suffix}"
            for path in (train, test):
                if path.exists() and not path.is_file():
                    raise DataError(
                        f"{path}: a folder, not a {suffix} file; put the file itself there"
                    )
            if train.is_file() and test.is_file():
                return train, test
    return None


def _set_names(folder: Path) -> set[str]:
    """The names of the classification pairs in ``folder`` or one folder down: what
    `_split_files` can find."""
    names: set[str] = set()
    for suffix in SPLIT_FORMATS:
        for pattern in (f"*_TRAIN{suffix}", f"*/*_TRAIN{suffix}"):
            for train in sorted(folder.glob(pattern)):
                name = train.name[: -len(f"_TRAIN{suffix}")]
                test = train.with_name(f"{name}_TEST{suffix}")
                if train.is_file() and test.is_file() and _classification(train):
                    names.add(name)
    return names


def available_datasets(data_dir: str | Path | None = None) -> list[str]:
    """Names loadable offline: your files in ``data_dir`` and the classification sets aeon ships."""
    names: set[str] = set()
    folders = [Path(data_dir)] if data_dir is not None and Path(data_dir).is_dir() else []
    folders.append(source_dir("aeon"))
    for folder in folders:
        names |= _set_names(folder)
    return sorted(names)


def _classification(train: Path) -> bool:
    """A `.ts` file says whether it holds classes; the other formats always do."""
    return train.suffix != ".ts" or is_classification(train)


def find_dataset(name: str, data_dir: str | Path | None = None) -> tuple[Path, Path]:
    """The ``(train, test)`` files of ``name`` (``.ts``, else ``.tsv`` as the UCR 2018 archive
    has them, ``.txt`` or ``.arff``); your ``data_dir`` wins over aeon's copy."""
    folders = [Path(data_dir)] if data_dir is not None else []
    folders.append(source_dir("aeon"))
    for folder in folders:
        found = _split_files(folder, name)
        if found is not None:
            return found
    where = f"in {data_dir} or " if data_dir is not None else ""
    own = (
        f"{data_dir}/ or {data_dir}/{name}/"
        if data_dir is not None
        else "a folder, set as data.data_dir"
    )
    raise ConfigError(
        f"data.name={name!r}: no such UCR/UEA data set {where}in aeon's bundled sets. "
        f"Available: {', '.join(available_datasets(data_dir))}. For your own data put "
        f"{name}_TRAIN.ts and {name}_TEST.ts (or the UCR archive's .tsv) in {own}."
    )


class UCRDataModule(SequenceDataModule):
    """A UCR/UEA classification set with its published train/test split.

    Batches are ``{"x": (B, T_max, C), "lengths": (B,), "y": (B,)}``; validation is carved from
    the training split, ``val_fraction`` of each class (``val_split``: ``random`` seeded by
    ``split_seed``, each class's ``last`` samples in file order, or its ``block``-th run of
    consecutive samples, see ``stratified_split``). ``normalize``: ``channel`` statistics are
    fitted on the training split only, ``series`` z-scores each sequence by itself,
    ``series_scale`` adds each sequence's level and spread as channels (``SeriesScale``),
    ``auto`` picks one from the training file (``resolve_normalize``).
    ``max_length``: sequences are averaged over runs of ``k`` steps, one ``k`` for all, the
    smallest that brings the longest training sequence within ``max_length`` steps.
    ``batch_size="auto"``: see ``auto_batch_size``. ``missing``: a NaN inside a sequence is
    filled in linearly (``interpolate``) or refused (``error``); see `seqlab.data.sources`.
    """

    task = "classification"
    name: str  # the data set (LightningDataModule's optional name)

    def __init__(
        self,
        name: str = "JapaneseVowels",
        data_dir: str | Path | None = "data",
        source: str | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        val_split: str = "random",
        val_block: int = 0,
        normalize: bool | str = "channel",
        resize_length: int | None = None,
        max_length: int | None = None,
        noise_std: float = 0.0,
        time_warp: float = 0.0,
        shift_std: float = 0.0,
        batch_size: int | str = 32,
        num_workers: int = 0,
        bucketing: bool = False,
        missing: str = "interpolate",
    ) -> None:
        self.auto_batch = batch_size == "auto"
        super().__init__(32 if self.auto_batch else batch_size, num_workers, bucketing)  # type: ignore[arg-type]
        check_option(
            "source",
            source,
            source is None or source in SOURCES,
            f"allowed: null (data_dir, then aeon's sets), {', '.join(SOURCES)}",
        )
        check_option("val_fraction", val_fraction, 0 <= val_fraction < 1, "must be in [0, 1)")
        check_option(
            "missing",
            missing,
            missing in MISSING_POLICIES,
            f"allowed: {', '.join(MISSING_POLICIES)}",
        )
        check_count("split_seed", split_seed, minimum=0)
        check_option(
            "val_split", val_split, val_split in SPLIT_ORDERS, f"allowed: {', '.join(SPLIT_ORDERS)}"
        )
        if val_split == "block":
            blocks = block_count(val_fraction)
            check_option(
                "val_fraction",
                val_fraction,
                blocks >= 2,
                "val_split=block needs 0 < val_fraction <= 2/3 (two or more blocks)",
            )
            check_option(
                "val_block",
                val_block,
                is_int(val_block) and 0 <= val_block < blocks,
                f"with val_split=block and val_fraction={val_fraction}: an integer in [0, {blocks})",
            )
        check_option(
            "resize_length",
            resize_length,
            resize_length is None or (is_int(resize_length) and resize_length >= 1),
            "must be a positive integer, or null to keep each sequence's own length",
        )
        check_option(
            "max_length",
            max_length,
            max_length is None or (is_int(max_length) and max_length >= 1),
            "must be a positive integer, or null to keep every step",
        )
        check_option("noise_std", noise_std, noise_std >= 0, "must be >= 0 (0: no noise)")
        check_option("time_warp", time_warp, 0 <= time_warp < 1, "must be in [0, 1) (0: off)")
        check_option("shift_std", shift_std, shift_std >= 0, "must be >= 0 (0: off)")
        self.name = name
        self.data_dir = data_dir
        self.source = source
        self.missing = missing
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.val_split = val_split
        self.val_block = val_block
        self.normalize = normalize_mode(normalize)
        self.resize_length = resize_length
        self.max_length = max_length
        self.downsample_factor = 1
        self.noise_std = noise_std
        self.time_warp = time_warp
        self.shift_std = shift_std
        self.class_names: list[str] = []
        self.normalizer: Normalizer | None = None

    @property
    def input_size(self) -> int:
        self.require_setup()
        return int(self.datasets["train"][0][0].shape[-1])

    @property
    def num_classes(self) -> int:
        self.require_setup()
        return len(self.class_names)

    def model_kwargs(self) -> dict[str, int]:
        """What the task module needs to know about the data."""
        return {"input_size": self.input_size, "num_classes": self.num_classes}

    def build_datasets(self) -> dict[str, Dataset]:
        if self.source is None:
            train_file, test_file = find_dataset(self.name, self.data_dir)
            train_x, train_y, test_x, test_y = read_pair(train_file, test_file, self.missing)
        else:
            train_x, train_y, test_x, test_y = load_split(self.source, self.name, self.missing)
            train_file = test_file = Path(f"{self.source}:{self.name}")
        self.class_names = [str(c) for c in np.unique(train_y)]
        if len(self.class_names) < 2:
            raise DataError(
                f"{train_file}: its {len(train_y)} sample(s) are all of class "
                f"{self.class_names[0]!r}; a classifier needs two classes or more to train on"
            )
        unknown = sorted(set(map(str, test_y)) - set(self.class_names))
        if unknown:
            raise DataError(f"{test_file}: class labels {unknown} never occur in {train_file}")
        index = {c: i for i, c in enumerate(self.class_names)}
        train_t = torch.tensor([index[str(c)] for c in train_y])
        test_t = torch.tensor([index[str(c)] for c in test_y])

        lengths = [x.shape[0] for x in train_x + test_x]
        if self.resize_length is not None:
            # Per sequence, so it uses nothing from other samples (and nothing from test).
            size = self.resize_length
            train_x = [resample(torch.from_numpy(x), size).numpy() for x in train_x]
            test_x = [resample(torch.from_numpy(x), size).numpy() for x in test_x]

        fit_idx, val_idx = stratified_split(
            train_y,
            self.val_fraction,
            self.split_seed,
            order=self.val_split,
            block=self.val_block,
        )
        self.normalize = resolve_normalize(self.normalize, train_x)
        # One factor for every split, from the training file alone.
        self.downsample_factor = downsample_factor(
            max(x.shape[0] for x in train_x), self.max_length
        )
        train_s = [self._prepare(x) for x in train_x]
        test_s = [self._prepare(x) for x in test_x]
        fit_x = [train_s[i] for i in fit_idx]
        # Statistics from the training split only.
        self.normalizer = scale = fit_normalizer(self.normalize, fit_x)
        datasets: dict[str, Dataset] = {
            "train": SequenceDataset([scale(x) for x in fit_x], train_t[fit_idx]),
            "val": SequenceDataset([scale(train_s[i]) for i in val_idx], train_t[val_idx]),
            "test": SequenceDataset([scale(x) for x in test_s], test_t),
        }
        if self.auto_batch:
            self.batch_size = auto_batch_size(len(fit_idx))
        log.info(
            "%s: %d train / %d val / %d test, %d channels, %d classes, lengths %d-%d",
            self.name,
            len(fit_idx),
            len(val_idx),
            len(test_x),
            train_x[0].shape[1],
            len(self.class_names),
            min(lengths),
            max(lengths),
        )
        if self.resize_length is not None:
            log.info("%s: every sequence resampled to %d steps", self.name, self.resize_length)
        if self.downsample_factor > 1:
            log.info(
                "%s: every sequence averaged over runs of %d steps (data.max_length=%d)",
                self.name,
                self.downsample_factor,
                self.max_length,
            )
        if self.auto_batch:
            log.info("%s: batch_size=auto is %d", self.name, self.batch_size)
        log.info(
            "%s: normalize=%s, %d input channels to the model",
            self.name,
            self.normalize,
            datasets["train"][0][0].shape[-1],
        )
        return datasets

    def _prepare(self, x: np.ndarray) -> torch.Tensor:
        """One sequence as the model reads it, before normalisation."""
        return downsample(torch.from_numpy(x), self.downsample_factor)

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        if self.trainer is None or not self.trainer.training:
            return batch
        if self.time_warp:
            batch = time_warp(batch, self.time_warp)
        if self.shift_std:
            batch = shift_channels(batch, self.shift_std)
        if self.noise_std:
            batch = add_input_noise(batch, self.noise_std)
        return batch
