"""data=folder: a folder of arrays with labels.csv, checked against data=ucr on the same set."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqlab.data.folder import FolderDataModule
from seqlab.data.sources import read_pair
from seqlab.data.ucr import UCRDataModule, find_dataset
from seqlab.errors import ConfigError, DataError
from tests.own_data import CLASSES, walks, write_folder
from tests.test_train import run_cli


def ucr_as_folder(name: str, root: Path) -> Path:
    """A UCR set written as one .npy per series, its published split in the split column."""
    train_x, train_y, test_x, test_y = read_pair(*find_dataset(name))
    root.mkdir()
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "split"])
        for split, xs, ys in (("train", train_x, train_y), ("test", test_x, test_y)):
            for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
                np.save(root / f"{split}_{i:03d}.npy", x)
                writer.writerow([f"{split}_{i:03d}.npy", y, split])
    return root


def samples(dataset) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return [dataset[i][0] for i in range(len(dataset))], [
        dataset[i][1] for i in range(len(dataset))
    ]


# One channel stored z-scored, one stored raw (its level and spread become channels), six.
@pytest.mark.parametrize(
    ("name", "mode"),
    [("GunPoint", "series"), ("UnitTest", "series_scale"), ("BasicMotions", "channel")],
)
def test_a_ucr_set_as_a_folder_gives_data_ucr_exactly(tmp_path, name, mode) -> None:
    # The oracle: the same series, labels and split through both modules (data=ucr's recipe,
    # data=folder's defaults), sample by sample.
    ucr = UCRDataModule(
        name, data_dir=None, val_fraction=0.0, normalize="auto", max_length=64, batch_size="auto"
    )
    folder = FolderDataModule(ucr_as_folder(name, tmp_path / name), max_length=64)
    ucr.setup()
    folder.setup()
    assert ucr.normalize == folder.normalize == mode
    assert folder.task == "classification" and folder.class_names == ucr.class_names
    assert folder.model_kwargs() == ucr.model_kwargs()
    for split in ("train", "test"):
        (xs_u, ys_u), (xs_f, ys_f) = samples(ucr.datasets[split]), samples(folder.datasets[split])
        assert len(xs_u) == len(xs_f) > 0
        assert all(torch.equal(a, b) for a, b in zip(xs_u, xs_f, strict=True))
        assert all(int(a) == int(b) for a, b in zip(ys_u, ys_f, strict=True))
    assert len(folder.datasets["val"]) == 0
    assert folder.batch_size == ucr.batch_size


def test_the_task_follows_from_the_labels(tmp_path) -> None:
    classes = FolderDataModule(write_folder(tmp_path / "c"))
    reals = FolderDataModule(
        write_folder(tmp_path / "r", labels=[f"{0.5 + i * 1.25}" for i in range(30)])
    )
    ids = FolderDataModule(write_folder(tmp_path / "i", labels=[i % 4 for i in range(30)]))
    per_step = FolderDataModule(write_folder(tmp_path / "t", per_step="file"))
    per_step_npz = FolderDataModule(write_folder(tmp_path / "z", per_step="npz"))
    for dm in (classes, reals, ids, per_step, per_step_npz):
        dm.setup()
    assert classes.task == "classification" and classes.class_names == list(CLASSES)
    assert ids.task == "classification" and ids.class_names == ["0", "1", "2", "3"]
    assert reals.task == "regression"
    assert per_step.task == per_step_npz.task == "tagging"
    assert per_step.class_names == ["0", "1"]
    batch = next(iter(per_step.train_dataloader()))
    assert batch["y"].shape == batch["x"].shape[:2]  # a label per (padded) step


def test_class_ids_sort_by_value_not_as_text(tmp_path) -> None:
    dm = FolderDataModule(
        write_folder(tmp_path / "d", labels=[[2, 10, 1][i % 3] for i in range(30)])
    )
    dm.setup()
    assert dm.class_names == ["1", "2", "10"]


def test_regression_targets_are_scaled_by_the_training_split_only(tmp_path) -> None:
    labels = [100.0 + 7.5 * i for i in range(30)]
    dm = FolderDataModule(write_folder(tmp_path / "r", labels=labels), test_fraction=0.3)
    dm.setup()
    train = torch.stack(samples(dm.datasets["train"])[1])
    assert len(train) == 21
    kwargs = dm.model_kwargs()
    assert kwargs["target_mean"] == pytest.approx(float(train.mean()))
    assert kwargs["target_std"] == pytest.approx(float(train.std()))
    assert kwargs["target_mean"] != pytest.approx(float(np.mean(labels)))


def test_a_regressor_starts_at_the_targets_mean_in_their_units(tmp_path) -> None:
    from seqlab.tasks import SequenceRegressor

    dm = FolderDataModule(write_folder(tmp_path / "r", labels=[1000.5 + i for i in range(30)]))
    dm.setup()
    model = SequenceRegressor(
        **dm.model_kwargs(), encoder={"hidden_size": 4, "num_layers": 1}, optimizer={}
    )
    torch.nn.init.zeros_(model.head.net[-1].weight)
    torch.nn.init.zeros_(model.head.net[-1].bias)
    batch = next(iter(dm.train_dataloader()))
    assert torch.allclose(model(batch["x"], batch["lengths"]), torch.tensor(dm.target_mean))


def test_splits_from_the_split_column_win_over_the_fractions(tmp_path) -> None:
    splits = ["train"] * 18 + ["val"] * 6 + ["test"] * 6
    dm = FolderDataModule(write_folder(tmp_path / "s", splits=splits), val_fraction=0.5)
    dm.setup()
    assert {s: len(d) for s, d in dm.datasets.items()} == {"train": 18, "val": 6, "test": 6}


def test_fractions_hold_out_each_class_in_proportion_and_follow_the_seed(tmp_path) -> None:
    root = write_folder(tmp_path / "f", n=60)

    def split_of(seed: int) -> dict[str, list[str]]:
        dm = FolderDataModule(root, val_fraction=0.25, test_fraction=0.2, split_seed=seed)
        dm.setup()
        return {s: [dm.class_names[int(y)] for y in samples(d)[1]] for s, d in dm.datasets.items()}

    first = split_of(0)
    assert {s: len(v) for s, v in first.items()} == {"train": 36, "val": 12, "test": 12}
    for split in ("val", "test"):
        assert sorted(set(first[split])) == list(CLASSES)
        assert all(first[split].count(c) == len(first[split]) // 3 for c in CLASSES)
    assert split_of(0) == first

    def test_inputs(seed: int) -> list[torch.Tensor]:
        dm = FolderDataModule(root, test_fraction=0.2, split_seed=seed, normalize="none")
        dm.setup()
        return samples(dm.datasets["test"])[0]

    assert not all(torch.equal(a, b) for a, b in zip(test_inputs(0), test_inputs(1), strict=True))


def test_channel_statistics_come_from_the_training_split_only(tmp_path) -> None:
    root = write_folder(tmp_path / "n", n=30, channels=3)
    dm = FolderDataModule(root, normalize="channel", test_fraction=0.3)
    raw = FolderDataModule(root, normalize="none", test_fraction=0.3)
    dm.setup()
    raw.setup()
    steps = torch.cat(samples(raw.datasets["train"])[0])
    assert dm.normalizer is not None
    assert torch.allclose(dm.normalizer.mean, steps.mean(0))
    assert torch.allclose(dm.normalizer.std, steps.std(0))
    normalized = torch.cat(samples(dm.datasets["train"])[0])
    assert torch.allclose(normalized.mean(0), torch.zeros(3), atol=1e-5)


def test_channels_by_steps_layout_reads_the_transpose(tmp_path) -> None:
    tc = FolderDataModule(write_folder(tmp_path / "tc"), normalize="none")
    ct = FolderDataModule(write_folder(tmp_path / "ct", layout="CT"), layout="CT", normalize="none")
    tc.setup()
    ct.setup()
    a, b = samples(tc.datasets["train"])[0], samples(ct.datasets["train"])[0]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_pickled_array_is_refused_not_loaded(tmp_path) -> None:
    root = write_folder(tmp_path / "p")
    np.save(root / "walk_000.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"walk_000\.npy: not a readable \.npy file"):
        FolderDataModule(root).setup()


def _rewrite_labels(root: Path, text: str) -> None:
    (root / "labels.csv").write_text(text)


BAD = [
    # (what is broken, the message it must give)
    ("missing_file", r"labels\.csv line 2: .*walk_000\.npy: no such file"),
    ("ragged", r"walk_001\.npy: 3 channels where the first sequence has 2"),
    ("no_label", r"labels\.csv line 3 \(walk_001\.npy\): the label is empty"),
    ("nan", r"walk_002\.npy: NaN or inf at step 4, channel 1"),
    ("empty_file", r"walk_003\.npy: not a readable \.npy file"),
    ("unknown_column", r"labels\.csv: unknown column 'lable'; allowed: file, label"),
    ("no_steps", r"walk_004\.npy: no steps"),
    ("bad_split", r"walk_005\.npy: split 'tset'; allowed: train, val, test"),
    ("twice", r"labels\.csv line 32: walk_000\.npy is listed twice"),
    ("step_count", r"walk_006\.npy: 5 per-step labels for \d+ steps"),
]


def break_folder(root: Path, case: str) -> None:
    """Write a good folder into ``root``, then break it as ``case`` says."""
    write_folder(root, per_step="file" if case == "step_count" else "")
    labels = (root / "labels.csv").read_text().splitlines()
    if case == "missing_file":
        (root / "walk_000.npy").unlink()
    elif case == "ragged":
        np.save(root / "walk_001.npy", np.zeros((10, 3), np.float32))
    elif case == "no_label":
        labels[2] = "walk_001.npy,"
    elif case == "nan":
        x = walks(3)[0][2]
        x[4, 1] = np.nan
        np.save(root / "walk_002.npy", x)
    elif case == "empty_file":
        (root / "walk_003.npy").write_bytes(b"")
    elif case == "unknown_column":
        labels[0] = "file,lable"
    elif case == "no_steps":
        np.save(root / "walk_004.npy", np.zeros((0, 2), np.float32))
    elif case == "bad_split":
        labels = [f"{line},{'split' if i == 0 else ('tset' if i == 6 else 'train')}"
                  for i, line in enumerate(labels)]  # fmt: skip
    elif case == "twice":
        labels.append(labels[1])
    elif case == "step_count":
        np.save(root / "walk_006_steps.npy", np.zeros(5, np.int64))
    _rewrite_labels(root, "\n".join(labels) + "\n")


@pytest.mark.parametrize(("case", "message"), BAD)
def test_each_bad_input_is_named_in_one_line(tmp_path, case, message) -> None:
    root = tmp_path / case
    break_folder(root, case)
    with pytest.raises(DataError, match=message) as error:
        FolderDataModule(root).setup()
    assert "\n" not in str(error.value)


def test_a_missing_folder_or_labels_file_names_the_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"data\.path='.*nowhere': no such folder"):
        FolderDataModule(tmp_path / "nowhere").setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"data\.labels: no labels file .*labels\.csv"):
        FolderDataModule(tmp_path / "empty").setup()
    with pytest.raises(ConfigError, match=r"data\.layout='NTC': allowed: TC, CT"):
        FolderDataModule(tmp_path, layout="NTC")
    with pytest.raises(ConfigError, match=r"data\.task='ranking': allowed: auto, classif"):
        FolderDataModule(tmp_path, task="ranking")


def test_regression_asked_of_class_names_is_refused(tmp_path) -> None:
    with pytest.raises(DataError, match=r"walk_000\.npy: label 'down' is not a number"):
        FolderDataModule(write_folder(tmp_path / "c"), task="regression").setup()


def test_cli_trains_a_bilstm_on_a_folder_with_no_python(tmp_path) -> None:
    root = write_folder(tmp_path / "recordings", n=24)
    result = run_cli("data=folder", f"data.path={root}", "model=bilstm", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "logs").glob("train/runs/*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert set(metrics) >= {"test/acc", "test/loss"}
    assert "classification (data.task=auto)" in result.stderr + result.stdout


@pytest.mark.parametrize("case", ["nan", "unknown_column"])
def test_cli_bad_folder_exits_2_with_one_error_line_and_writes_nothing(tmp_path, case) -> None:
    root = tmp_path / "recordings"
    break_folder(root, case)
    result = run_cli("data=folder", f"data.path={root}", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    errors = [line for line in output.splitlines() if "error: " in line]
    assert len(errors) == 1 and re_search(dict(BAD)[case], errors[0]), output[-3000:]
    assert "Traceback" not in output
    assert not list((tmp_path / "logs").glob("**/*.ckpt"))
    assert not list((tmp_path / "logs").glob("**/metrics.json"))


def re_search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


def test_config_checks_read_the_task_from_data_task(make_cfg, tmp_path) -> None:
    from seqlab.config_checks import data_task
    from seqlab.tasks import SequenceRegressor, SequenceTagger

    path = f"data.path={tmp_path}"
    assert data_task(make_cfg("data=folder", path)) is None  # auto: the labels decide at setup
    assert data_task(make_cfg("data=folder", path, "data.task=regression")) is SequenceRegressor
    assert data_task(make_cfg("data=table", path, "data.task=tagging")) is SequenceTagger
