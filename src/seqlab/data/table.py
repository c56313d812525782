"""``data=table``: every sequence in one long-format CSV or Parquet file, a row per step:
``data=table data.path=steps.parquet``.

Only the columns named (or, for channels, those left over) are read, the channels as float32;
sequences are cut from one array sorted by id and time, so the table needs a few times its
numeric size in memory, not one Python object per cell.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqlab.data.arrays import ArraysDataModule, Sequences, check_sequence
from seqlab.data.base import check_option
from seqlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class TableDataModule(ArraysDataModule):
    """Sequences from a table with one row per step.

    - ``id_column``: which sequence a row belongs to;
    - ``time_column``: the rows' order within a sequence (null: the file's order);
    - ``label_column``: one label per sequence (the same on each of its rows), or
      ``step_label_column``: one label per row (tagging); exactly one of them;
    - ``split_column`` (optional): ``train``, ``val`` or ``test``, the same on a sequence's rows;
    - ``channels``: the input columns (null: every column not named above).
    """

    def __init__(
        self,
        path: str | Path = "data/my_table.parquet",
        id_column: str = "id",
        time_column: str | None = "time",
        label_column: str | None = "label",
        step_label_column: str | None = None,
        split_column: str | None = None,
        channels: Sequence[str] | None = None,
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
        self.path = Path(path)
        check_option(
            "path",
            str(path),
            self.path.suffix.lower() in FORMATS,
            f"allowed: a {', '.join(FORMATS)} file",
        )
        check_option(
            "label_column",
            label_column,
            (label_column is None) != (step_label_column is None),
            f"with data.step_label_column={step_label_column!r}: set exactly one of them "
            "(label_column: one label per sequence; step_label_column: one per row)",
        )
        self.id_column = id_column
        self.time_column = time_column
        self.label_column = label_column
        self.step_label_column = step_label_column
        self.split_column = split_column
        self.channels = list(channels) if channels is not None else None

    def source_name(self) -> str:
        return str(self.path)

    def read(self) -> Sequences:
        named, channels = self._columns(table_columns(self.path))
        frame = read_table(self.path, [*named, *channels])
        ids = frame[self.id_column].to_numpy()
        if len(ids) == 0:
            raise DataError(f"{self.path}: no rows")
        if _missing(ids).any():
            raise DataError(f"{self.path}: an empty {self.id_column} cell")
        # Integer codes sort ids of any type (numbers, strings) the same way.
        keys = [_codes(ids)]
        if self.time_column is not None:
            keys.insert(0, _codes(frame[self.time_column].to_numpy()))
        order = np.lexsort(keys)  # by id, then time; stable, so file order breaks ties
        ids = ids[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        ends = np.r_[starts[1:], len(ids)]
        values = np.empty((len(order), len(channels)), dtype=np.float32)
        for j, name in enumerate(channels):
            values[:, j] = self._numeric(frame[name].to_numpy(), name)[order]
        if self.time_column is not None:
            time = frame[self.time_column].to_numpy()[order]
            repeated = np.flatnonzero(time[1:] == time[:-1])
            repeated = repeated[ids[repeated] == ids[repeated + 1]]
            if len(repeated):
                raise DataError(
                    f"{self.path}: id {_shown(ids[repeated[0]])} has two rows at "
                    f"{self.time_column}={_shown(time[repeated[0]])}"
                )
        label_name = self.label_column or self.step_label_column
        labels = frame[label_name].to_numpy()[order]
        split = frame[self.split_column].to_numpy()[order] if self.split_column else None
        del frame
        inputs, targets, splits, names = [], [], [], []
        for start, end in zip(starts, ends, strict=True):
            where = f"{self.path}, {self.id_column}={_shown(ids[start])}"
            inputs.append(check_sequence(values[start:end], where, None, channels))
            if self.label_column is not None:
                targets.append(self._constant(labels[start:end], self.label_column, where))
            else:
                step = labels[start:end]
                if _missing(step).any():
                    raise DataError(f"{where}: an empty {self.step_label_column} cell")
                targets.append(step)
            splits.append(
                "" if split is None else str(self._constant(split[start:end], "split", where))
            )
            names.append(where)
        return Sequences(inputs, targets, self.step_label_column is not None, splits, names)

    def _columns(self, present: list[str]) -> tuple[list[str], list[str]]:
        """The named columns and the channels to read, each checked against the table's."""
        named = {
            "id_column": self.id_column,
            "time_column": self.time_column,
            "label_column": self.label_column,
            "step_label_column": self.step_label_column,
            "split_column": self.split_column,
        }
        for key, column in named.items():
            if column is not None and column not in present:
                raise ConfigError(
                    f"data.{key}={column!r}: no such column in {self.path}; columns: "
                    f"{', '.join(present)}"
                )
        used = {c for c in named.values() if c is not None}
        channels = self.channels
        if channels is None:
            channels = [c for c in present if c not in used]
        for column in channels:
            if column in used:
                raise ConfigError(
                    f"data.channels: {column!r} is also named as the id, time, label or split "
                    "column; an input channel must be another column"
                )
            if column not in present:
                raise ConfigError(
                    f"data.channels: no column {column!r} in {self.path}; columns: "
                    f"{', '.join(present)}"
                )
        if not channels:
            raise ConfigError(
                f"data.channels: {self.path} has no column left for inputs; columns: "
                f"{', '.join(present)}"
            )
        return sorted(used), channels

    def _numeric(self, column: np.ndarray, name: str) -> np.ndarray:
        if column.dtype.kind not in "biuf":
            raise DataError(
                f"{self.path}: column {name!r} holds {column.dtype} values, not numbers (an "
                "input channel; name the inputs in data.channels)"
            )
        return column

    @staticmethod
    def _constant(values: np.ndarray, column: str, where: str) -> Any:
        if _missing(values[:1]).any():
            raise DataError(f"{where}: an empty {column} cell")
        if (values != values[0]).any():
            raise DataError(
                f"{where}: {column} takes several values ({_shown(values[0])}, "
                f"{_shown(values[values != values[0]][0])}); a sequence has one"
            )
        return values[0].item() if isinstance(values[0], np.generic) else values[0]


def _shown(value: Any) -> str:
    """A cell as messages show it: ``'s01'``, ``3`` (not ``np.int64(3)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _codes(values: np.ndarray) -> np.ndarray:
    """Integers in the sort order of ``values``."""
    return np.asarray(_pandas().factorize(values, sort=True)[0])


def _missing(values: np.ndarray) -> np.ndarray:
    """True where a cell read from the table is empty (NaN, None)."""
    return np.asarray(_pandas().isna(values))


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError as err:
        raise ConfigError(
            "data=table needs pandas (and pyarrow for Parquet): pip install -e '.[table]'"
        ) from err
    return pd


def table_columns(path: Path) -> list[str]:
    """The table's column names, read without its rows."""
    if not path.is_file():
        raise ConfigError(f"data.path={str(path)!r}: no such file")
    pd = _pandas()
    try:
        if FORMATS[path.suffix.lower()] == "csv":
            return [str(c) for c in pd.read_csv(path, nrows=0).columns]
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        # A DataFrame's saved index is stored as a column; it is not the data's.
        index = (schema.pandas_metadata or {}).get("index_columns", [])
        return [name for name in schema.names if name not in index]
    except ImportError as err:
        raise ConfigError(
            "data=table with a Parquet file needs pyarrow: pip install -e '.[table]'"
        ) from err
    except Exception as err:  # pandas and pyarrow raise many types for a bad file
        raise DataError(f"{path}: not a readable table: {_first_line(err)}") from err


def read_table(path: Path, columns: list[str]) -> Any:
    """Only ``columns`` of the table, as a pandas DataFrame."""
    pd = _pandas()
    try:
        if FORMATS[path.suffix.lower()] == "csv":
            return pd.read_csv(path, usecols=columns)
        return pd.read_parquet(path, columns=columns)
    except Exception as err:
        raise DataError(f"{path}: not a readable table: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
