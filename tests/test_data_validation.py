"""Bad data fails before training with an error naming the file (or split) and the sample."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqlab.data.base import check_inputs
from seqlab.data.collate import SequenceDataset
from seqlab.data.ucr import UCRDataModule
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
        (["1.0,NaN,3.0:a", *GOOD], GOOD, r"Bad_TRAIN\.ts: sample 0 has NaN or inf values"),
        (GOOD, [*GOOD, "1.0,inf:b"], r"Bad_TEST\.ts: sample 4 has NaN or inf values"),
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
    result = run_cli("data.name=Bad", f"data.data_dir={data}", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "error: " in output and "Bad_TRAIN.ts: sample 0 has NaN or inf values" in output
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
    assert "Nope_TEST.ts in a folder, set as data.data_dir" in str(error.value)
