"""wandb: resolved configs, names and groups from the run, one run per multirun job, and a
wandb that cannot start never stops training."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest
import wandb
from wandb.proto import wandb_internal_pb2 as pb

from seqlab.loggers import finish_loggers, instantiate_loggers
from seqlab.train import train
from tests.test_train import run_cli


# Slow (~15-20 s): a multirun through the CLI; test_train's multirun test stays in `make test`.
@pytest.mark.slow
def test_multirun_jobs_are_separate_offline_runs_with_resolved_configs(tmp_path) -> None:
    # log_model=true asks for checkpoint artifacts: offline that is skipped, not an error.
    result = run_cli("-m", "seed=1,2", "logger=wandb", "logger.wandb.log_model=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    runs = sorted(sweep.glob("*/wandb/offline-run-*/run-*.wandb"))
    assert [run.parents[2].name for run in runs] == ["0", "1"]
    assert runs[0].name != runs[1].name  # two runs, two ids
    for job, run in enumerate(runs):
        records = read_records(run)
        names = {record.run.display_name for record in records if record.HasField("run")}
        assert names == {f"train/{sweep.name}/{job}"}
        config = {}
        for record in records:
            config |= {item.key: json.loads(item.value_json) for item in record.config.update}
        assert config["seed"] == job + 1
        assert config["trainer"]["default_root_dir"] == str(run.parents[2])
        assert "hidden_size" in config["model"]["encoder"]
        unresolved = [key for key, value in config.items() if "${" in json.dumps(value)]
        assert not unresolved, unresolved


def read_records(path: Path) -> list[pb.Record]:
    """Every record of an offline run file (LevelDB's log format, as wandb writes it): a
    7-byte file header, then 32 KiB blocks of chunks, each chunk a 7-byte header (crc32,
    length, kind) and data; a record is one FULL chunk or FIRST, MIDDLE..., LAST."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    block, header = 32 * 1024, 7
    records, chunks, pos = [], [], header
    while pos + header <= len(data):
        if block - pos % block < header:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + header])
        chunks.append(data[pos + header : pos + header + length])
        pos += header + length
        if kind in (1, 4):  # FULL or LAST
            records.append(pb.Record.FromString(b"".join(chunks)))
            chunks = []
    assert not chunks, f"{path} ends inside a record"
    return records


def test_name_group_and_tags_come_from_the_experiment(make_cfg) -> None:
    cfg = make_cfg("experiment=japanese_vowels", "logger=wandb")
    (logger,) = instantiate_loggers(cfg.logger)
    try:
        run = logger.experiment
        assert run.name.startswith("japanese_vowels/")
        assert run.group == "japanese_vowels"
        assert {"japanese_vowels", "data=ucr_base", "model=lstm_fcn"} <= set(run.tags)
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


def test_wandb_init_is_not_handed_the_anonymous_setting_it_warns_about(
    make_cfg, monkeypatch
) -> None:
    """Lightning passes `anonymous=None`, which makes wandb warn on every run's first lines."""
    received: dict = {}
    real_init = wandb.init

    def recording_init(*args, **kwargs):
        received.update(kwargs)
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", recording_init)
    monkeypatch.setenv("WANDB_MODE", "offline")
    (logger,) = instantiate_loggers(make_cfg("logger=wandb").logger)
    finish_loggers([logger])
    assert received["project"] == "seqlab"
    assert "anonymous" not in received


def test_an_online_start_that_gets_no_answer_falls_back_to_offline_in_the_run_folder(
    make_cfg, monkeypatch, caplog
) -> None:
    """A key set up but no server (here a port nothing listens on): after init_timeout the
    run is logged offline into its folder, for `wandb sync`, and training goes on."""
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = make_cfg("logger=wandb", "logger.wandb.init_timeout=3")
    with caplog.at_level(logging.WARNING):
        (logger,) = instantiate_loggers(cfg.logger)
    try:
        assert "wandb could not start online" in caplog.text
        assert "upload it later with `wandb sync`" in caplog.text
        assert logger.experiment.settings.mode in ("offline", "dryrun")  # wandb's two names
    finally:
        finish_loggers([logger])
    assert list(Path(cfg.paths.output_dir).glob("wandb/offline-run-*/run-*.wandb"))


def test_init_timeout_must_be_a_positive_number(make_cfg) -> None:
    from seqlab.config_checks import check_config
    from seqlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"logger\.wandb\.init_timeout=-1: must be a positive"):
        check_config(make_cfg("logger=wandb", "logger.wandb.init_timeout=-1"))
