"""data=table: one long-format CSV or Parquet file, checked against data=folder on the same walks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqlab.data.folder import FolderDataModule
from seqlab.data.table import TableDataModule
from seqlab.errors import ConfigError, DataError
from tests.own_data import table_rows, write_folder, write_table
from tests.test_data_folder import re_search, samples
from tests.test_train import run_cli

pytest.importorskip("pandas")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_gives_the_sequences_a_folder_of_the_same_walks_gives(tmp_path, suffix) -> None:
    # Same walks, same labels; the table's rows are shuffled and its ids sort as the files do.
    table = TableDataModule(write_table(tmp_path / f"walks{suffix}"), normalize="channel")
    folder = FolderDataModule(write_folder(tmp_path / "walks"), normalize="channel")
    table.setup()
    folder.setup()
    assert table.task == folder.task == "classification"
    assert table.class_names == folder.class_names
    for split in ("train", "test"):
        (xs_t, ys_t), (xs_f, ys_f) = samples(table.datasets[split]), samples(folder.datasets[split])
        assert len(xs_t) == len(xs_f) > 0
        assert all(torch.allclose(a, b) for a, b in zip(xs_t, xs_f, strict=True))
        assert all(int(a) == int(b) for a, b in zip(ys_t, ys_f, strict=True))


def test_per_row_labels_make_a_tagging_task_and_a_split_column_is_read(tmp_path) -> None:
    rows = table_rows(n=12)
    for row in rows:
        row["phase"] = "high" if float(row["c0"]) > 0 else "low"  # type: ignore[arg-type]
        row["split"] = "test" if row["id"] in ("s000", "s001", "s002") else "train"
    dm = TableDataModule(
        write_table(tmp_path / "t.parquet", rows),
        label_column=None,
        step_label_column="phase",
        split_column="split",
        channels=["c0", "c1"],
    )
    dm.setup()
    assert dm.task == "tagging" and dm.class_names == ["high", "low"]
    assert len(dm.datasets["test"]) == 3 and len(dm.datasets["train"]) == 9
    x, y = dm.datasets["test"][0]
    assert y.shape == x.shape[:1]


def test_rows_without_a_time_column_keep_the_files_order(tmp_path) -> None:
    rows = [{"id": i // 5, "label": i // 5 % 2, "v": float(i)} for i in range(40)]
    dm = TableDataModule(write_table(tmp_path / "t.csv", rows), time_column=None, normalize="none")
    dm.setup()
    # write_table shuffles the rows: without a time column their order in the file is kept.
    import pandas as pd

    stored = pd.read_csv(tmp_path / "t.csv")
    first = stored[stored["id"] == 0]["v"].to_numpy(np.float32)
    all_x = [x[:, 0].numpy() for split in ("train", "test") for x in samples(dm.datasets[split])[0]]
    assert any(np.array_equal(x, first) for x in all_x)


BAD = [
    ("unknown_column", {"label_column": "lable"}, ConfigError, r"data\.label_column='lable': no such column in .*t\.csv; columns: id, time"),
    ("unknown_channel", {"channels": ["c9"]}, ConfigError, r"data\.channels: no column 'c9'"),
    ("nan", {}, DataError, r"t\.csv, id='s004': NaN or inf at step 3, channel 'c1'"),
    ("two_labels", {}, DataError, r"t\.csv, id='s001': label takes several values"),
    ("missing_label", {}, DataError, r"t\.csv, id='s002': an empty label cell"),
    ("repeated_time", {}, DataError, r"t\.csv: id 's003' has two rows at time=2"),
    ("text_channel", {}, DataError, r"t\.csv: column 'c1' holds object values, not numbers"),
    ("empty_file", {}, DataError, r"t\.csv: not a readable table"),
    ("missing_file", {}, ConfigError, r"data\.path='.*t\.csv': no such file"),
]  # fmt: skip


def break_table(path: Path, case: str) -> None:
    rows = table_rows()
    for row in rows:
        if case == "nan" and row["id"] == "s004" and row["time"] == 3:
            row["c1"] = float("nan")
        if case == "two_labels" and row["id"] == "s001" and row["time"] == 0:
            row["label"] = "up" if row["label"] != "up" else "down"
        if case == "missing_label" and row["id"] == "s002":
            row["label"] = None
        if case == "repeated_time" and row["id"] == "s003" and row["time"] == 3:
            row["time"] = 2
        if case == "text_channel":
            row["c1"] = "loud"
    write_table(path, rows)
    if case == "empty_file":
        path.write_text("")
    if case == "missing_file":
        path.unlink()


@pytest.mark.parametrize(("case", "options", "error", "message"), BAD)
def test_each_bad_table_is_named_in_one_line(tmp_path, case, options, error, message) -> None:
    path = tmp_path / "t.csv"
    break_table(path, case)
    with pytest.raises(error, match=message) as raised:
        TableDataModule(path, **options).setup()
    assert "\n" not in str(raised.value)


def test_options_that_cannot_work_are_refused_at_once(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"data\.path='t\.xlsx': allowed: a \.csv"):
        TableDataModule("t.xlsx")
    with pytest.raises(ConfigError, match=r"data\.label_column=None: .*exactly one"):
        TableDataModule("t.csv", label_column=None)
    path = write_table(tmp_path / "t.csv")
    with pytest.raises(ConfigError, match=r"data\.channels: 'label' is also named"):
        TableDataModule(path, channels=["c0", "label"]).setup()


def test_cli_trains_a_bilstm_on_a_parquet_table_with_no_python(tmp_path) -> None:
    path = write_table(tmp_path / "steps.parquet")
    result = run_cli("data=table", f"data.path={path}", "model=bilstm", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "logs").glob("train/runs/*/metrics.json")
    assert "test/acc" in json.loads(metrics_file.read_text())


def test_cli_bad_table_exits_2_with_one_error_line_and_writes_nothing(tmp_path) -> None:
    path = tmp_path / "t.csv"
    break_table(path, "nan")
    result = run_cli("data=table", f"data.path={path}", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    errors = [line for line in output.splitlines() if "error: " in line]
    assert len(errors) == 1 and re_search(BAD[2][3], errors[0]), output[-3000:]
    assert "Traceback" not in output
    assert not list((tmp_path / "logs").glob("**/*.ckpt"))
