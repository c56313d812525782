"""wandb: resolved configs, names and groups from the run, one run per multirun job, and a
wandb that cannot start never stops training."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import wandb

from seqlab.train import train
from seqlab.utils.loggers import finish_loggers, instantiate_loggers
from tests.test_train import run_cli


def test_multirun_jobs_are_separate_offline_runs_with_resolved_configs(tmp_path) -> None:
    # log_model=true asks for checkpoint artifacts: offline that is skipped, not an error.
    result = run_cli("-m", "seed=1,2", "logger=wandb", "logger.wandb.log_model=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    runs = sorted(sweep.glob("*/wandb/offline-run-*/run-*.wandb"))
    assert [run.parents[2].name for run in runs] == ["0", "1"]
    assert runs[0].name != runs[1].name  # two runs, two ids
    for job, run in enumerate(runs):
        record = run.read_bytes()  # wandb's protobuf log: config values are stored as JSON text
        assert b"max_epochs" in record and b"hidden_size" in record
        assert b"${" not in record
        assert f"train/{sweep.name}/{job}".encode() in record  # the run's name


def test_name_group_and_tags_come_from_the_experiment(make_cfg) -> None:
    cfg = make_cfg("experiment=japanese_vowels", "logger=wandb")
    (logger,) = instantiate_loggers(cfg.logger)
    try:
        run = logger.experiment
        assert run.name.startswith("japanese_vowels/")
        assert run.group == "japanese_vowels"
        assert {"japanese_vowels", "data=japanese_vowels", "model=bilstm"} <= set(run.tags)
        assert "experiment=japanese_vowels" in run.tags
    finally:
        finish_loggers([logger])


def test_wandb_that_cannot_start_leaves_training_to_the_other_loggers(
    make_cfg, monkeypatch, caplog
) -> None:
    def broken_init(*args, **kwargs):
        raise wandb.errors.UsageError("wandb is broken here")

    monkeypatch.setattr(wandb, "init", broken_init)
    cfg = make_cfg("logger=many")
    with caplog.at_level(logging.WARNING):
        metrics = train(cfg)
    assert "test/acc" in metrics
    assert "wandb did not start (UsageError: wandb is broken here)" in caplog.text
    assert "logging to csv, tensorboard" in caplog.text
    assert list(Path(cfg.paths.output_dir).glob("csv/*.csv"))


@pytest.fixture(autouse=True)
def _no_run_left_open():
    yield
    wandb.finish()
