"""``data=folder``: one array file per sequence and a labels CSV, the shape most recordings
come in. No Python to write: ``data=folder data.path=<folder>``."""

from __future__ import annotations

import csv
import logging
import zipfile
from pathlib import Path

import numpy as np

from seqlab.data.arrays import ArraysDataModule, Sequences, check_sequence
from seqlab.data.base import check_option
from seqlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: How a file's array is laid out: steps x channels, or channels x steps.
LAYOUTS = ("TC", "CT")
#: The labels file's columns. ``file`` and one of ``label`` / ``step_labels`` are required
#: (for ``.npz`` files holding ``x`` and ``y``, ``y`` gives the per-step labels instead).
COLUMNS = ("file", "label", "step_labels", "split")
SUFFIXES = (".npy", ".npz")


class FolderDataModule(ArraysDataModule):
    """Sequences stored one per file in ``path``, listed in ``path/<labels>``.

    The labels file is a CSV with a header and the columns of ``COLUMNS``:

    - ``file``: the array's path, relative to ``path``: a ``.npy`` file, or a ``.npz`` file with
      one array or arrays ``x`` (the sequence) and ``y`` (its per-step labels);
    - ``label``: the sequence's label: a class name or number, or a real value (regression;
      see ``ArraysDataModule`` for how the task is chosen);
    - ``step_labels``: instead of ``label``, a second array file of one label per step (tagging);
    - ``split`` (optional): ``train``, ``val`` or ``test``; empty cells are left to the fractions.

    Arrays are ``(steps, channels)`` with ``layout="TC"`` or ``(channels, steps)`` with ``CT``; a
    1-D array is one channel. Nothing in the files is unpickled.
    """

    def __init__(
        self,
        path: str | Path = "data/my_sequences",
        labels: str = "labels.csv",
        layout: str = "TC",
        task: str = "auto",
        val_fraction: float = 0.0,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        normalize: bool | str = "auto",
        max_length: int | None = None,
        batch_size: int | str = "auto",
        num_workers: int = 0,
        bucketing: bool = False,
    ) -> None:
        super().__init__(
            task, val_fraction, test_fraction, split_seed, normalize, max_length, batch_size,
            num_workers, bucketing,
        )  # fmt: skip
        check_option("layout", layout, layout in LAYOUTS, f"allowed: {', '.join(LAYOUTS)}")
        self.path = Path(path)
        self.labels_file = self.path / labels
        self.layout = layout

    def source_name(self) -> str:
        return str(self.path)

    def read(self) -> Sequences:
        if not self.path.is_dir():
            raise ConfigError(f"data.path={str(self.path)!r}: no such folder")
        if not self.labels_file.is_file():
            raise ConfigError(
                f"data.labels: no labels file {self.labels_file}; need a CSV with columns "
                "file,label[,split] (or file,step_labels[,split])"
            )
        rows = read_labels(self.labels_file)
        inputs, targets, splits, names = [], [], [], []
        channels: int | None = None
        per_step = "label" not in rows[0][1]
        for line, row in rows:
            where = f"{self.labels_file.name} line {line}"
            file = self._file(row["file"], where)
            x, y = self._load(file)
            x = check_sequence(x, str(file), channels)
            channels = x.shape[1]
            if not per_step:
                label = row["label"]
                if label == "":
                    raise DataError(f"{where} ({row['file']}): the label is empty")
                target: object = label
            elif row.get("step_labels"):
                step_file = self._file(row["step_labels"], where)
                target = labels_array(self._load(step_file)[0], step_file)
            elif y is not None:
                target = labels_array(y, file)
            else:
                raise DataError(
                    f"{where} ({row['file']}): no label: the labels file has no label column, "
                    "its step_labels cell is empty and the file holds no y array"
                )
            inputs.append(x)
            targets.append(target)
            splits.append(row.get("split", ""))
            names.append(str(file))
        return Sequences(inputs, targets, per_step, splits, names)

    def _file(self, name: str, where: str) -> Path:
        if name == "":
            raise DataError(f"{where}: the file cell is empty")
        file = self.path / name
        if file.suffix not in SUFFIXES:
            raise DataError(f"{where}: {file}: allowed files: {', '.join(SUFFIXES)}")
        if not file.is_file():
            raise DataError(f"{where}: {file}: no such file")
        return file

    def _load(self, file: Path) -> tuple[np.ndarray, np.ndarray | None]:
        """The sequence as ``(T, C)`` and, from an ``.npz`` with ``y``, its per-step labels."""
        x, y = load_arrays(file)
        if x.ndim == 1:
            x = x[:, None]
        elif self.layout == "CT" and x.ndim == 2:
            x = x.T
        return x, y


def read_labels(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The labels CSV's rows with their line numbers, its columns checked."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [
                (reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k})
                for row in reader
            ]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not a readable CSV file: {err}") from err
    if not columns:
        raise DataError(f"{path}: empty; need a header line such as file,label,split")
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise DataError(f"{path}: unknown column {unknown[0]!r}; allowed: {', '.join(COLUMNS)}")
    if "file" not in columns:
        raise DataError(f"{path}: no 'file' column; columns: {', '.join(columns)}")
    if ("label" in columns) == ("step_labels" in columns):
        raise DataError(
            f"{path}: need exactly one of the columns 'label' (one per sequence) and "
            f"'step_labels' (a file of per-step labels); columns: {', '.join(columns)}"
        )
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    seen: dict[str, int] = {}
    for line, row in rows:
        if row["file"] in seen:
            raise DataError(
                f"{path} line {line}: {row['file']} is listed twice (first on line "
                f"{seen[row['file']]})"
            )
        seen[row["file"]] = line
    return rows


def load_arrays(file: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y)`` of a ``.npy`` (``y`` None) or ``.npz`` file, never unpickling anything."""
    try:
        if file.suffix == ".npy":
            return np.load(file, allow_pickle=False), None
        with np.load(file, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if len(keys) == 1:
                return archive[keys[0]], None
            if "x" not in keys:
                raise DataError(
                    f"{file}: arrays {keys}; an .npz file holds one array, or 'x' and 'y'"
                )
            return archive["x"], archive["y"] if "y" in keys else None
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{file}: not a readable {file.suffix} file: {first}") from err


def labels_array(y: np.ndarray, file: Path) -> np.ndarray:
    """Per-step labels as a 1-D array (a ``(T, 1)`` column is flattened)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{file}: per-step labels of shape {y.shape}; need (steps,)")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{file}: NaN or inf among the per-step labels")
    return y
