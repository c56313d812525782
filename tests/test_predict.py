"""predict writes one CSV row per sample (or per real step) whose numbers are the test metrics'."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from seqlab.errors import UserError
from seqlab.predict import predict, prediction_table
from seqlab.train import train
from tests.conftest import ROOT
from tests.test_language_model import make_model

SMALL_SYNTHETIC = ["data.train_size=64", "data.val_size=16", "data.test_size=24"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def train_then_predict(make_cfg, data: list[str], split: str = "test") -> tuple[DictConfig, Path]:
    cfg = make_cfg(*data)
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    predict_cfg = make_cfg(*data, f"ckpt_path={ckpt}", f"split={split}", name="predict", tiny=False)
    return cfg, predict(predict_cfg)


def test_classification_rows_are_the_test_set_and_score_its_accuracy(make_cfg) -> None:
    cfg, path = train_then_predict(make_cfg, [])
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    rows = read_csv(path)
    assert path.name == "predictions_test.csv"
    assert len(rows) == 370  # JapaneseVowels' test split
    assert [int(r["index"]) for r in rows] == list(range(370))
    probs = np.array([[float(v) for k, v in r.items() if k.startswith("prob_")] for r in rows])
    assert probs.shape == (370, 9)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    names = [k.removeprefix("prob_") for k in rows[0] if k.startswith("prob_")]
    assert [r["pred"] for r in rows] == [names[i] for i in probs.argmax(1)]
    # Trained for one epoch, so last.ckpt is the checkpoint that was tested.
    accuracy = np.mean([r["pred"] == r["target"] for r in rows])
    assert accuracy == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_train_split_is_read_in_dataset_order(make_cfg) -> None:
    _, path = train_then_predict(make_cfg, [], split="train")
    rows = read_csv(path)
    assert len(rows) == 216  # 270 training utterances less 20% validation
    lengths = [int(r["length"]) for r in rows]
    assert len(set(lengths)) > 1 and min(lengths) >= 7


def test_forecasting_rows_are_real_steps_and_scored_ones_give_the_test_mae(make_cfg) -> None:
    cfg, path = train_then_predict(make_cfg, ["data=sunspots"])
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    rows = read_csv(path)
    scored = [r for r in rows if r["scored"] == "1"]
    assert len({r["index"] for r in rows}) == len(scored)  # one scored year per sample
    mae = np.mean([abs(float(r["pred"]) - float(r["target"])) for r in scored])
    assert mae == pytest.approx(metrics["test/mae"], rel=1e-5)


def test_regression_rows_give_the_test_mse(make_cfg) -> None:
    data = ["data=adding", "data.seq_len=20", *SMALL_SYNTHETIC]
    cfg, path = train_then_predict(make_cfg, data)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    rows = read_csv(path)
    assert list(rows[0]) == ["index", "length", "target", "pred"]
    mse = np.mean([(float(r["pred"]) - float(r["target"])) ** 2 for r in rows])
    assert mse == pytest.approx(metrics["test/mse"], rel=1e-5)


def test_tagging_rows_score_only_the_recalled_symbols(make_cfg) -> None:
    data = ["data=copy", "data.delay=3", "data.n_symbols=4", *SMALL_SYNTHETIC]
    cfg, path = train_then_predict(make_cfg, data)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    rows = read_csv(path)
    scored = [r for r in rows if r["scored"] == "1"]
    assert len(scored) == 24 * 4
    accuracy = np.mean([r["pred"] == r["target"] for r in scored])
    assert accuracy == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_language_model_checkpoint_is_refused_with_a_pointer_to_generate(
    make_cfg, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 100, encoding="utf-8")
    data = ["data=text", f"data.path={corpus}", "data.batch_size=4", "data.bptt=32"]
    with pytest.raises(ValueError, match=r"language model.*scripts/generate\.py"):
        train_then_predict(make_cfg, data)


def test_a_task_without_prediction_hooks_has_no_table() -> None:
    """A task that overrides neither ``prediction_columns`` nor ``prediction_rows``."""
    with pytest.raises(UserError, match=r"^LanguageModel: no prediction table for this task"):
        prediction_table(make_model(), [])


def test_unknown_split_is_refused(make_cfg) -> None:
    cfg = make_cfg("ckpt_path=x.ckpt", "split=dev", name="predict", tiny=False)
    with pytest.raises(ValueError, match="split='dev': allowed: train, val, test"):
        predict(cfg)


def test_predict_script_writes_the_csv(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg()
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    out = tmp_path / "predict_run"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "predict.py"), f"ckpt_path={ckpt}",
         "split=val", f"hydra.run.dir={out}"],
        check=True, capture_output=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert len(read_csv(out / "predictions_val.csv")) == 54
