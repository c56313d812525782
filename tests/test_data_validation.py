"""Bad data fails before training with an error naming the file (or split) and the sample."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqlab.data.base import check_inputs
from seqlab.data.collate import SequenceDataset
from seqlab.data.ucr import UCRDataModule, available_datasets, find_dataset
from seqlab.errors import ConfigError, DataError
from tests.test_train import run_cli

HEADER = """@problemName {name}
@timeStamps false
@missing false
@univariate {univariate}
@equalLength false
@classLabel true a b c
@data
"""


def write_ts(folder: Path, name: str, split: str, rows: list[str]) -> None:
    univariate = "true" if all(":" not in row.rsplit(":", 1)[0] for row in rows) else "false"
    text = HEADER.format(name=name, univariate=univariate) + "\n".join(rows) + "\n"
    (folder / f"{name}_{split}.ts").write_text(text)


GOOD = ["1.0,2.0,3.0:a", "2.0,1.0,0.5,0.1:b", "0.3,0.2:c", "1.5,2.5,3.5:a"]


@pytest.mark.parametrize(
    ("train", "test", "message"),
    [
        (
            ["1.0,inf,3.0:a", *GOOD],
            GOOD,
            r"Bad_TRAIN\.ts: sample 0 has a NaN or inf value at step 1",
        ),
        (GOOD, [*GOOD, "1.0,-inf:b"], r"Bad_TEST\.ts: sample 4 has a NaN or inf value at step 1"),
        (
            ["?,?:1.0,2.0:a", "1,2:3,4:b", "1,2:1,1:c"],
            ["1,2:3,4:b"],
            r"Bad_TRAIN\.ts: sample 0, channel 0: every step is missing",
        ),
        (GOOD, [*GOOD, "1,2:3,4:a"], r"Bad_TEST\.ts: not a readable \.ts file: Inconsistent"),
        (GOOD, ["1,2:3,4:a"], r"Bad_TEST\.ts: test samples have 2 channels, training samples 1"),
        # Declared (a b c), but not in training; an undeclared one: tests/test_bad_inputs.py.
        (
            [row for row in GOOD if not row.endswith(":c")],
            ["1.0,2.0:c"],
            r"Bad_TEST\.ts: class labels \['c'\] never occur in .*Bad_TRAIN",
        ),
        (["not numbers at all"], GOOD, r"Bad_TRAIN\.ts: sample 0 is empty"),
    ],
)
def test_bad_ts_files_are_named_with_the_sample(tmp_path, train, test, message) -> None:
    write_ts(tmp_path, "Bad", "TRAIN", train)
    write_ts(tmp_path, "Bad", "TEST", test)
    with pytest.raises(DataError, match=message):
        UCRDataModule("Bad", data_dir=tmp_path).setup()


def test_a_file_that_is_not_ts_at_all(tmp_path) -> None:
    for split in ("TRAIN", "TEST"):
        (tmp_path / f"Junk_{split}.ts").write_bytes(b"\x00\x01 binary junk")
    with pytest.raises(DataError, match=r"Junk_TRAIN\.ts: "):
        UCRDataModule("Junk", data_dir=tmp_path).setup()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([torch.ones(3, 2), torch.tensor([[1.0, float("nan")]])], "sample 1: NaN or inf"),
        ([torch.ones(3, 2), torch.ones(0, 2)], r"sample 1: input of shape \(0, 2\)"),
        ([torch.ones(3, 2), torch.ones(3, 4)], "sample 1: 4 channels, but sample 0 has 2"),
    ],
)
def test_every_data_module_checks_its_samples(inputs, message) -> None:
    # What a forked data module's build_datasets returns is checked the same way.
    dataset = SequenceDataset(inputs, torch.zeros(len(inputs)))
    with pytest.raises(DataError, match=f"MyData train split, {message}"):
        check_inputs(dataset, "MyData train split")


def test_cli_names_the_bad_file_and_exits_2(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_ts(data, "Bad", "TRAIN", ["1.0,NaN,3.0:a", *GOOD])
    write_ts(data, "Bad", "TEST", GOOD)
    result = run_cli("data.name=Bad", f"data.data_dir={data}", "data.missing=error", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "error: " in output
    assert "Bad_TRAIN.ts: sample 0 has a NaN or inf value at step 1 (data.missing" in output
    assert "Traceback" not in output


def test_listing_sets_skips_a_file_with_a_bare_class_label_line(tmp_path) -> None:
    write_ts(tmp_path, "Good", "TRAIN", GOOD)
    write_ts(tmp_path, "Good", "TEST", GOOD)
    for split in ("TRAIN", "TEST"):
        (tmp_path / f"Odd_{split}.ts").write_text("@classLabel\n@data\n1,2:a\n")
    with pytest.raises(ConfigError, match=r"data.name='Nope'.*Available: .*Good"):
        UCRDataModule("Nope", data_dir=tmp_path).setup()


def test_unknown_name_without_a_data_dir_says_where_to_put_files() -> None:
    with pytest.raises(ConfigError) as error:
        UCRDataModule("Nope", data_dir=None).setup()
    assert "None" not in str(error.value).replace("'Nope'", "")
    assert "Nope_TEST.ts (or the UCR archive's .tsv) in a folder, set as data.data_dir" in str(
        error.value
    )


def test_missing_values_are_filled_in_linearly_or_refused(tmp_path) -> None:
    # Inside a sequence a NaN ('?' or NaN in a .ts file) is a missing value: on the straight line
    # between its neighbours, the nearest value at either end; trailing NaN are padding.
    write_ts(tmp_path, "Gaps", "TRAIN", ["?,1.0,NaN,NaN,4.0,?:a", "2.0,NaN,NaN:b", *GOOD])
    write_ts(tmp_path, "Gaps", "TEST", GOOD)
    datamodule = UCRDataModule("Gaps", data_dir=tmp_path, normalize="none", val_fraction=0)
    datamodule.setup()
    rows = {tuple(x[:, 0].tolist()) for x, _ in datamodule.datasets["train"]}
    assert (1.0, 1.0, 2.0, 3.0, 4.0) in rows and (2.0,) in rows  # the last '?' is padding
    with pytest.raises(DataError, match=r"Gaps_TRAIN\.ts: sample 0 has a NaN .* at step 0"):
        UCRDataModule("Gaps", data_dir=tmp_path, missing="error").setup()
    with pytest.raises(ConfigError, match=r"data\.missing='zero': allowed: interpolate, error"):
        UCRDataModule("Gaps", data_dir=tmp_path, missing="zero")


def test_the_ucr_2018_archive_tsv_files_are_found_and_read(tmp_path) -> None:
    # <Name>/<Name>_TRAIN.tsv: the label, then the values, tab-separated; NaN pads a short one.
    folder = tmp_path / "Tabs"
    folder.mkdir()
    (folder / "Tabs_TRAIN.tsv").write_text("1\t0.5\t1.5\t2.5\n2\t3.0\tNaN\t1.0\n1\t0.1\t0.2\tNaN\n")
    (folder / "Tabs_TEST.tsv").write_text("2\t1.0\t2.0\t3.0\n")
    datamodule = UCRDataModule("Tabs", data_dir=tmp_path, normalize="none", val_fraction=0)
    datamodule.setup()
    assert datamodule.class_names == ["1", "2"]
    train = sorted(x[:, 0].tolist() for x, _ in datamodule.datasets["train"])
    assert train == [pytest.approx([0.1, 0.2]), [0.5, 1.5, 2.5], [3.0, 2.0, 1.0]]
    assert "Tabs" in available_datasets(tmp_path)


def test_every_name_listed_as_available_loads() -> None:
    # aeon keeps JapaneseVowels_eq in JapaneseVowels/: it was listed in the error message of
    # an unknown name, but asking for it failed with that same message.
    names = available_datasets()
    assert "JapaneseVowels_eq" in names
    for name in names:
        train, test = find_dataset(name)
        assert train.name.startswith(f"{name}_TRAIN") and test.name.startswith(f"{name}_TEST")
    datamodule = UCRDataModule("JapaneseVowels_eq", val_fraction=0)
    datamodule.setup()
    assert {len(x) for x, _ in datamodule.datasets["train"]} == {25}


def test_a_set_one_folder_down_in_your_data_dir_is_found(tmp_path) -> None:
    folder = tmp_path / "Group"
    folder.mkdir()
    (folder / "Tabs_TRAIN.tsv").write_text("1\t0.5\t1.5\n2\t3.0\t1.0\n")
    (folder / "Tabs_TEST.tsv").write_text("2\t1.0\t2.0\n")
    assert available_datasets(tmp_path).count("Tabs") == 1
    assert find_dataset("Tabs", tmp_path)[0] == folder / "Tabs_TRAIN.tsv"
