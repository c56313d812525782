"""train(cfg) and evaluate(cfg) in-process on tiny configs, and the CLI's run folders."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seqlab.evaluate import evaluate
from seqlab.train import train
from tests.conftest import ROOT, TINY, compose_config


@pytest.mark.quick
def test_fast_dev_run_trains_tests_and_writes_metrics(make_cfg) -> None:
    cfg = make_cfg("debug=fdr")
    metrics = train(cfg)
    assert {"test/acc", "test/f1", "test/loss"} <= set(metrics)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert saved == pytest.approx({k: v for k, v in metrics.items() if k.startswith("test/")})


def test_a_run_starts_without_lightning_notes_a_user_can_do_nothing_about(make_cfg, caplog):
    """The run's summary is the rich callback's; Lightning's note that it adds none of its own,
    and its advert for another logger, are not printed."""
    with_summary = [o for o in TINY if not o.startswith("callbacks.model_summary")]
    cfg = make_cfg(*with_summary, "debug=fdr", tiny=False)
    assert cfg.callbacks.model_summary is not None
    with caplog.at_level(logging.INFO):
        train(cfg)
    assert "Skipping setting a default `ModelSummary`" not in caplog.text
    assert "litlogger" not in caplog.text
    assert "GPU available" in caplog.text  # Lightning's own INFO lines are still captured


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """A short real run on the default task (JapaneseVowels), shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("short") / "run"
    cfg = compose_config(
        "train",
        [*TINY, "model.encoder.hidden_size=32", "trainer.max_epochs=12", "model.optimizer.lr=0.01"],
        run_dir,
    )
    return run_dir, train(cfg)


def test_short_run_on_the_default_task_learns(short_run) -> None:
    _, metrics = short_run
    # 9 balanced-ish classes: chance is about 0.11.
    assert metrics["test/acc"] > 0.75


def test_eval_of_the_saved_checkpoint_reproduces_the_test_metrics(short_run, tmp_path) -> None:
    run_dir, metrics = short_run
    best = sorted((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    assert len(best) == 1
    cfg = compose_config("eval", [f"ckpt_path={best[0]}", "logger=csv"], tmp_path / "eval")
    again = evaluate(cfg)
    test_metrics = {k: v for k, v in metrics.items() if k.startswith("test/")}
    assert again == pytest.approx(test_metrics, abs=1e-6)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == pytest.approx(again)
    assert (tmp_path / "eval" / "plots" / "confusion_matrix.png").is_file()


def test_eval_on_other_data_options_says_which(short_run, tmp_path, caplog) -> None:
    run_dir, _ = short_run
    last = run_dir / "checkpoints" / "last.ckpt"
    with caplog.at_level(logging.WARNING):
        evaluate(compose_config("eval", [f"ckpt_path={last}", "logger=csv"], tmp_path / "same"))
        assert "differs from the data it was trained on" not in caplog.text
        overrides = [f"ckpt_path={last}", "logger=csv", "data.resize_length=29"]
        evaluate(compose_config("eval", overrides, tmp_path / "other"))
    expected = "differs from the data it was trained on: data.resize_length=29 (trained with None)"
    assert expected in caplog.text


def test_train_false_tests_the_given_checkpoint_in_a_new_folder(short_run, tmp_path) -> None:
    run_dir, metrics = short_run
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    before = (run_dir / "metrics.json").read_bytes()
    overrides = [*TINY, "model.encoder.hidden_size=32", "train=false", f"ckpt_path={best}"]
    again = train(compose_config("train", overrides, tmp_path / "test-only"))
    test_metrics = {k: v for k, v in metrics.items() if k.startswith("test/")}
    assert again == pytest.approx(test_metrics, abs=1e-6)
    assert json.loads((tmp_path / "test-only" / "metrics.json").read_text()) == pytest.approx(again)
    assert (run_dir / "metrics.json").read_bytes() == before  # the trained run is untouched


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"NETRC": str(cwd / "no-netrc"), "WANDB_CONFIG_DIR": str(cwd / ".wandb-config")}
    return subprocess.run(
        # Flags (-m) first: Hydra's parser takes no flag after the overrides.
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            *[a for a in args if a.startswith("-")],
            *TINY,
            *[a for a in args if not a.startswith("-")],
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_run_writes_only_into_its_run_folder(tmp_path) -> None:
    result = run_cli("trainer.max_epochs=1", "logger=wandb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".wandb")) == ["logs"]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    names = {p.name for p in run_dir.iterdir()}
    assert {".hydra", "config.yaml", "train.log", "metrics.json", "checkpoints", "wandb"} <= names
    assert "test/acc" in json.loads((run_dir / "metrics.json").read_text())
    # No credentials: wandb ran offline, into the run folder.
    assert list((run_dir / "wandb").glob("offline-run-*"))


def test_multirun_gives_one_folder_per_job(tmp_path) -> None:
    result = run_cli("-m", "debug=fdr", "seed=1,2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "debug" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1"]
    for job in jobs:
        assert (sweep_dir / job / "metrics.json").is_file()


def test_build_trainer_keeps_extra_callbacks_next_to_the_configured_ones(make_cfg) -> None:
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    from seqlab.pipeline import build_trainer

    extra = Callback()
    trainer, _ = build_trainer(make_cfg(), extra_callbacks=[extra])
    assert extra in trainer.callbacks
    assert any(isinstance(cb, ModelCheckpoint) for cb in trainer.callbacks)


def test_plateau_schedule_steps_only_after_epochs_that_validate(make_cfg) -> None:
    """ReduceLROnPlateau reads val/loss; with validation every 2nd epoch it must wait for it
    (Lightning would stop after the first epoch: "val/loss ... is not available")."""
    cfg = make_cfg(
        "experiment=adding",
        "data.seq_len=10",
        "data.train_size=64",
        "data.val_size=16",
        "data.test_size=16",
        "trainer.max_epochs=4",
        "trainer.check_val_every_n_epoch=2",
        "lr_schedule.patience=0",
    )
    metrics = train(cfg)
    assert "test/mse" in metrics
    with (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert sorted(int(row["epoch"]) for row in rows if row["val/loss"]) == [1, 3]


def test_debug_limit_runs_on_the_default_data(make_cfg) -> None:
    # JapaneseVowels has 2 validation batches: a fraction such as 0.2 would leave none.
    metrics = train(make_cfg("debug=limit"))
    assert "test/acc" in metrics
