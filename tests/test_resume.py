"""Resume: a run stopped (killed, SIGTERM, Ctrl-C) and resumed ends exactly like one that was
never stopped; checkpoints are written atomically."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqlab.callbacks.graceful_stop import TrainingStopped
from seqlab.checkpoint_io import AtomicCheckpointIO
from seqlab.errors import ConfigError
from seqlab.train import train
from tests.conftest import ROOT, TINY, compose_config

# Three short epochs of the default task, with dropout and input noise: randomness that a
# resume must restore exactly.
RUN = [*TINY, "trainer.max_epochs=3", "model.encoder.dropout=0.3", "data.batch_size=64"]


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def cli(
    tmp_path: Path, *overrides: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SLURM_"))}
    env = base | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"} | (env or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *RUN, *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def full_and_killed_then_resumed(
    tmp_path: Path, common: list[str], kill: list[str], killed_at_epoch: int | None = None
) -> tuple[Path, Path]:
    """An uninterrupted run in ``full/``, and the same run killed (SIGKILL) by the ``kill``
    callback overrides, then resumed with ``ckpt_path=last``, in the killed run's folder.
    Returns both folders."""
    common = [*common, f"paths.log_dir={tmp_path / 'logs'}"]
    full = cli(tmp_path, *common, f"hydra.run.dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-3000:]
    killed_dir = tmp_path / "logs" / "train" / "runs" / "killed"
    killed = cli(tmp_path, *common, f"hydra.run.dir={killed_dir}", *kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (killed_dir / "metrics.json").exists()
    if killed_at_epoch is not None:
        saved = torch.load(killed_dir / "checkpoints" / "last.ckpt", weights_only=True)
        assert saved["epoch"] == killed_at_epoch
    resumed = cli(tmp_path, *common, "ckpt_path=last", f"hydra.run.dir={tmp_path / 'again'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return tmp_path / "full", killed_dir


# workers=2 is slow (~40 s) and kept out of `make test`; workers=0 stays.
@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_sigkill_after_an_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, workers):
    kill = [
        "+callbacks.kill._target_=tests.fault_injection.KillAfterEpoch",
        "+callbacks.kill.epoch=1",
    ]
    full, killed = full_and_killed_then_resumed(
        tmp_path, [f"data.num_workers={workers}"], kill, killed_at_epoch=1
    )
    # Resumed in the killed run's folder, and ending exactly where the full run ended.
    assert metrics_of(killed) == metrics_of(full)
    # Its CSV log goes on from the killed run's epochs instead of starting again.
    assert val_history(killed) == val_history(full)
    assert [epoch for epoch, _ in val_history(killed)] == ["0", "1", "2"]


def test_sigkill_mid_epoch_then_resume_logs_each_step_once(tmp_path) -> None:
    """The rows a killed run logged past its last checkpoint are logged again on resume: the
    CSV keeps the resumed run's, once each, as an uninterrupted run would have them."""
    kill = [
        "+callbacks.kill._target_=tests.fault_injection.SignalAtBatch",
        "+callbacks.kill.epoch=1",
        "+callbacks.kill.batch=1",
        f"+callbacks.kill.signum={int(signal.SIGKILL)}",
    ]
    full, killed = full_and_killed_then_resumed(tmp_path, ["trainer.log_every_n_steps=1"], kill)
    assert step_losses(killed) == step_losses(full)


def step_losses(run_dir: Path) -> list[tuple[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        rows = csv.DictReader(file)
        return [(row["step"], row["train/loss_step"]) for row in rows if row["train/loss_step"]]


def val_history(run_dir: Path) -> list[tuple[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        return [(row["epoch"], row["val/loss"]) for row in csv.DictReader(file) if row["val/loss"]]


# Slow (about a minute): two DDP processes run twice; `make test` keeps DDP's one-run test and
# the single-process resume tests.
@pytest.mark.slow
def test_ddp_resume_gives_each_process_back_its_own_random_state(tmp_path) -> None:
    """Two processes draw different dropout masks: each must get its own generators back (rank
    0 alone writes the checkpoint), or the resumed run drifts from the uninterrupted one."""
    kill = [
        "+callbacks.kill._target_=tests.fault_injection.KillAfterEpoch",
        "+callbacks.kill.epoch=0",
    ]
    common = ["trainer=ddp_cpu", "trainer.max_epochs=2"]
    full, killed = full_and_killed_then_resumed(tmp_path, common, kill, killed_at_epoch=0)
    assert metrics_of(killed) == metrics_of(full)


# Slow (~20 s): DDP again; `make test` keeps Ctrl-C and SIGTERM on one process.
@pytest.mark.slow
def test_ctrl_c_on_one_ddp_process_stops_them_all_with_a_checkpoint(tmp_path) -> None:
    run_dir = tmp_path / "run"
    stopped = cli(
        tmp_path,
        "trainer=ddp_cpu",
        f"hydra.run.dir={run_dir}",
        "+callbacks.stop._target_=tests.fault_injection.SignalAtBatch",
        "+callbacks.stop.epoch=0",
        "+callbacks.stop.batch=1",
        f"+callbacks.stop.signum={int(signal.SIGINT)}",
        "+callbacks.stop.rank=1",
        timeout=120,
    )
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2  # after batches 0 and 1


def in_process(tmp_path: Path, name: str, *overrides: str) -> Path:
    run_dir = tmp_path / "logs" / "train" / "runs" / name
    cfg = compose_config("train", [*RUN, f"paths.log_dir={tmp_path / 'logs'}", *overrides], run_dir)
    cfg.paths.log_dir = str(tmp_path / "logs")
    train(cfg)
    return run_dir


@pytest.mark.parametrize(
    ("signum", "task"),
    [
        (signal.SIGTERM, "ucr"),
        (signal.SIGINT, "ucr"),
        (signal.SIGTERM, "text"),
        (signal.SIGTERM, "bucketed"),
    ],
)
def test_signal_mid_epoch_saves_a_checkpoint_and_resume_matches(tmp_path, signum, task):
    data = ["data.bucketing=true"] if task == "bucketed" else []
    if task == "text":  # stateful BPTT: the carried state and the stream position resume too
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("".join(f"line {i}: the quick brown fox.\n" for i in range(300)))
        data = ["data=text", f"data.path={corpus}", "data.batch_size=4", "data.bptt=16"]
    full = in_process(tmp_path / "a", "full", *data)
    with pytest.raises(TrainingStopped) as stop:
        in_process(
            tmp_path / "b",
            "stopped",
            *data,
            "+callbacks.stop._target_=tests.fault_injection.SignalAtBatch",
            "+callbacks.stop.epoch=1",
            "+callbacks.stop.batch=1",
            f"+callbacks.stop.signum={int(signum)}",
        )
    assert stop.value.code == 128 + signum
    checkpoint = Path(stop.value.checkpoint)
    assert checkpoint.name == "last.ckpt" and checkpoint.is_file()
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["epoch"] == 1 and "rng_states" in saved
    resumed = in_process(tmp_path / "b", "resumed", *data, "ckpt_path=last")
    assert resumed != checkpoint.parent.parent  # resumed in the stopped run's folder instead
    assert metrics_of(checkpoint.parent.parent) == metrics_of(full)


def test_a_run_folder_holding_another_runs_checkpoint_is_refused(make_cfg) -> None:
    """Two trainings in one SLURM job land in one `runs/slurm-<job id>/` folder; the second
    must not pass the first's checkpoint off as its own."""
    train(make_cfg("seed=1"))
    with pytest.raises(
        ConfigError, match=r"holds last\.ckpt of another run \(seed: 1 there, 2 here\)"
    ):
        train(make_cfg("seed=2"))
    train(make_cfg("seed=1", "logger=none"))  # the same run again (a re-queued job): fine


def test_checkpoint_write_that_fails_half_way_leaves_the_previous_one(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    def crash(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left


def test_ckpt_path_last_without_runs_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=last: no checkpoints/last\.ckpt"):
        in_process(tmp_path, "x", "ckpt_path=last")


def test_slurm_requeue_signal_then_sigterm_then_the_requeued_job_resumes(tmp_path) -> None:
    """SLURM pre-emption: SIGUSR1 (Lightning saves an hpc checkpoint and re-queues the job with
    scontrol), SIGTERM (seqlab saves last.ckpt and exits), then the same command again under
    the same job id, which lands in the same run folder and resumes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train",
        "SLURM_NTASKS": "1",
        "SLURM_NODELIST": "localhost",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    logs = tmp_path / "logs"
    full = cli(tmp_path, f"paths.log_dir={logs}", f"hydra.run.dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-3000:]
    signals = [
        "+callbacks.usr1._target_=tests.fault_injection.SignalAtBatch",
        "+callbacks.usr1.epoch=1",
        "+callbacks.usr1.batch=0",
        f"+callbacks.usr1.signum={int(signal.SIGUSR1)}",
        "+callbacks.term._target_=tests.fault_injection.SignalAtBatch",
        "+callbacks.term.epoch=1",
        "+callbacks.term.batch=1",
    ]
    first = cli(tmp_path, f"paths.log_dir={logs}", *signals, env=slurm)
    assert first.returncode == 128 + signal.SIGTERM, first.stderr[-3000:]
    run_dir = logs / "train" / "runs" / "slurm-4242"
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert (
        list(run_dir.glob("hpc_ckpt_*.ckpt")) and (run_dir / "checkpoints" / "last.ckpt").is_file()
    )
    assert not (run_dir / "metrics.json").exists()

    again = cli(tmp_path, f"paths.log_dir={logs}", *signals, env=slurm)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from it (a re-queued job)" in again.stdout + again.stderr
    assert metrics_of(run_dir) == metrics_of(tmp_path / "full")
