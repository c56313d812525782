"""Bad inputs and injected faults (issue 17): each is refused in one line naming the key, file
or cause and what to do, before training where it can be known then; none is silently taken.

In-process where the config checks, a data module or ``train`` can be called directly; the
few that need the real entry point (Hydra's own steps before ``main``) run it as a process.
"""

from __future__ import annotations

import errno
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict

from seqlab.callbacks.graceful_stop import TrainingStopped
from seqlab.callbacks.resume import check_resume, run_identity
from seqlab.checkpoint_io import AtomicCheckpointIO
from seqlab.config_checks import check_config
from seqlab.data.ucr import UCRDataModule
from seqlab.errors import ConfigError, DataError, WriteError, user_error
from seqlab.pipeline import build_datamodule, build_model
from seqlab.run_folder import LOCK_NAME, lock_run_folder, release_run_folders
from seqlab.train import train
from tests.conftest import CONFIG_DIR, TINY, compose_config
from tests.test_data_validation import GOOD, write_ts
from tests.test_train import run_cli

# With TINY (make_cfg adds it), two batches of each stage: a run takes a few seconds.
SHORT = [
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
]


def problems_of(tmp_path: Path, *overrides: str) -> list[str]:
    """``check_config``'s problems, composed as the entry point composes (inside Hydra, so
    the config groups' options can be listed)."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, *overrides], return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        HydraConfig().set_config(cfg)
        try:
            check_config(cfg)
        except ConfigError as error:
            return error.problems
    return []


@pytest.mark.quick
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # Optional groups: Hydra drops an option that does not exist without a word.
        (["experiment=nosuch"], "experiment=nosuch: no such option in the config group "),
        (["debug=fdrr"], "debug=fdrr: no such option in the config group debug; available: fdr"),
        # `true` is no count (and T_max, which follows it, is not named a second time).
        (["trainer.max_epochs=true"], "trainer.max_epochs=True: must be a positive integer"),
        (["seed=-1"], "seed=-1: must be an integer in [0, 2**32 - 1]"),
        (["seed=abc"], "seed='abc': must be an integer"),
        (["data.val_fraction=abc"], "data.val_fraction='abc': must be a number"),
        (["model.encoder.bidirectional=maybe"], "bidirectional='maybe': must be true or false"),
        (["+trainer.accumulate_grad_batches=0"], "accumulate_grad_batches=0: must be a positive"),
        (["trainer.check_val_every_n_epoch=0"], "check_val_every_n_epoch=0: must be a positive"),
        (["+trainer.limit_val_batches=-1"], "limit_val_batches=-1: must be a number of batches"),
        (["callbacks.model_checkpoint.save_top_k=x"], "save_top_k='x': must be an integer"),
    ],
)
def test_bad_values_are_refused_by_the_config_checks(tmp_path, overrides, message) -> None:
    problems = problems_of(tmp_path, *overrides)
    assert len(problems) == 1, problems
    assert message in problems[0]


@pytest.mark.quick
def test_gpu_accelerator_without_a_gpu(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (problem,) = problems_of(tmp_path, "trainer.accelerator=gpu")
    assert problem.startswith("trainer.accelerator=gpu: torch finds no CUDA GPU here")
    assert "use trainer=default" in problem


@pytest.mark.parametrize(
    ("train_rows", "message"),
    [
        (
            [*GOOD, "1.0,2.0:z"],
            r"Bad_TRAIN\.ts: sample 4 has class label 'z', which the header does not declare "
            r"\(@classLabel true a b c\)",
        ),
        (["1.0,2.0,3.0:a"], r"Bad_TRAIN\.ts: its 1 sample\(s\) are all of class 'a'; a classifier"),
    ],
)
def test_bad_training_files(tmp_path, train_rows, message) -> None:
    write_ts(tmp_path, "Bad", "TRAIN", train_rows)
    write_ts(tmp_path, "Bad", "TEST", ["1.0,2.0:a"])
    with pytest.raises(DataError, match=message):
        UCRDataModule("Bad", data_dir=tmp_path).setup()


def test_a_ts_path_that_is_a_folder(tmp_path) -> None:
    (tmp_path / "Bad_TRAIN.ts").mkdir()
    write_ts(tmp_path, "Bad", "TEST", GOOD)
    with pytest.raises(DataError, match=r"Bad_TRAIN\.ts: a folder, not a \.ts file"):
        UCRDataModule("Bad", data_dir=tmp_path).setup()


def test_a_text_too_short_for_its_batches(make_cfg, tmp_path) -> None:
    text = tmp_path / "short.txt"
    text.write_text("hello\n")
    with pytest.raises(DataError, match=r"short\.txt: the train split has 5 characters, too few"):
        build_datamodule(make_cfg("data=text", f"data.path={text}"))


class Opaque:
    """Any class: a checkpoint that pickles one is refused unopened."""


@pytest.mark.parametrize("kind", ["truncated", "pickled"])
def test_a_damaged_checkpoint_given_to_train(trained, make_cfg, tmp_path, kind) -> None:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        path.write_bytes(trained.read_bytes()[:20000])
        message = r"truncated\.ckpt: not a readable PyTorch checkpoint, cut short or damaged"
    else:
        torch.save({"state_dict": {}, "thing": Opaque()}, path)
        message = r"pickled\.ckpt: holds Python objects besides tensors .*Opaque"
    with pytest.raises(DataError, match=message):
        train(make_cfg(*SHORT, f"ckpt_path={path}"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The last.ckpt of one short epoch of the default task."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train(compose_config("train", [*TINY, *SHORT], run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


def test_resume_with_another_model_size_is_refused_before_training(trained, make_cfg) -> None:
    cfg = make_cfg(*SHORT, f"ckpt_path={trained}", "model.encoder.hidden_size=32")
    try:
        with pytest.raises(ConfigError, match=r"its weights do not fit this model \(model\.enc"):
            train(cfg)
    finally:
        release_run_folders()  # the lock of the run folder it would have resumed in


def resume_check(trained: Path, make_cfg, *overrides: str, mid_epoch: bool = False) -> None:
    """``check_resume`` of ``trained`` for a run of ``overrides``; ``mid_epoch`` makes the
    checkpoint one that a signal saved after a batch of its second epoch."""
    checkpoint = torch.load(trained, weights_only=True)
    if mid_epoch:
        progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]
        progress["started"] = progress["processed"] + 1
    cfg = make_cfg(*SHORT, *overrides)
    model = build_model(cfg, build_datamodule(cfg))
    check_resume(str(trained), checkpoint, run_identity(cfg), model, fitting=True)


def test_resume_with_another_batch_size(trained, make_cfg, caplog) -> None:
    # At an epoch's end: it goes on, saying what differs.
    with caplog.at_level(logging.WARNING):
        resume_check(trained, make_cfg, "data.batch_size=16")
    assert (
        "resuming with other settings than the run that saved it (data.batch_size: 32 there, 16 here"
        in caplog.text
    )
    # Mid-epoch the rest of the epoch would be other samples: refused.
    with pytest.raises(ConfigError, match=r"stopped after batch 2 of epoch 1, and data\.batch_"):
        resume_check(trained, make_cfg, "data.batch_size=16", mid_epoch=True)
    resume_check(trained, make_cfg, mid_epoch=True)  # the same settings: fine


class KeepsLast(Callback):
    """Holds last.ckpt's bytes as the test starts, to see that nothing overwrites them."""

    def on_test_start(self, trainer, pl_module) -> None:
        self.path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        self.before = self.path.read_bytes()


def test_sigterm_during_the_test_exits_nonzero_saying_so(make_cfg, caplog) -> None:
    cfg = make_cfg(
        *SHORT,
        "+callbacks.stop._target_=tests.fault_injection.SignalAtTestBatch",
        "+callbacks.stop.batch=0",
    )
    keeps = KeepsLast()
    with caplog.at_level(logging.WARNING), pytest.raises(TrainingStopped) as stop:
        train(cfg, callbacks=[keeps])
    assert stop.value.code == 128 + signal.SIGTERM
    assert "error: SIGTERM during the test: the test did not finish" in caplog.text
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()
    assert keeps.path.read_bytes() == keeps.before  # the fit's last.ckpt, not the test's


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (
            ["callbacks.model_checkpoint.monitor=val/nosuch", "optimized_metric=val/nosuch"],
            "callbacks.model_checkpoint.monitor",
        ),
        (
            ["callbacks=early_stopping", "callbacks.early_stopping.monitor=val/nosuch"],
            "callbacks.early_stopping.monitor",
        ),
    ],
)
def test_a_monitored_metric_the_run_never_logs(make_cfg, overrides, key) -> None:
    cfg = make_cfg(*SHORT, *overrides)
    with pytest.raises(ConfigError) as error:
        train(cfg)
    assert error.value.problems == [
        f"{key}=val/nosuch: this run logs no such metric; it logs val/acc, val/f1, val/loss"
    ]
    # Found in the sanity check, before any training step.
    assert not list(Path(cfg.paths.output_dir).glob("checkpoints/*.ckpt"))


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
    ],
)
def test_a_full_disk_while_a_checkpoint_is_written(tmp_path, monkeypatch, failure) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(1)}, path)

    def full(obj, file, *args, **kwargs):
        file.write(b"part of a checkpoint")
        raise failure

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(WriteError, match=r"last\.ckpt: the checkpoint could not be written, disk"):
        AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_full_disk_during_training_is_a_user_error(make_cfg, monkeypatch) -> None:
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(Exception) as error:
        train(make_cfg(*SHORT))
    assert isinstance(user_error(error.value), WriteError)
    assert "disk full (No space left on device)" in str(user_error(error.value))


HOLD = """
import fcntl, sys, time
file = open(sys.argv[1], "a+")
fcntl.flock(file, fcntl.LOCK_EX)
file.write("pid 4242 on elsewhere\\n"); file.flush()
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
def held_folder(tmp_path):
    """A run folder whose lock another process holds (as a run in progress does)."""
    folder = tmp_path / "busy"
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder / LOCK_NAME)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    yield folder
    holder.kill()
    holder.wait()


def test_a_run_folder_in_use_is_refused_and_a_stale_lock_taken(held_folder, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"busy is in use by another run \(pid 4242 on elsewhere"):
        lock_run_folder(held_folder)
    # A lock file that no process holds (its run was killed) is taken, and removed at exit.
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / LOCK_NAME).write_text("pid 1 on gone\n")
    lock_run_folder(stale)
    assert "pid 1 " not in (stale / LOCK_NAME).read_text()
    release_run_folders()
    assert not (stale / LOCK_NAME).exists()


def assert_refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    errors = [line for line in output.splitlines() if "error: " in line]
    assert len(errors) == 1 and message in errors[0], errors
    assert "Traceback" not in output


def test_cli_refuses_an_unknown_option_of_an_optional_group(tmp_path) -> None:
    result = run_cli("experiment=nosuch", cwd=tmp_path)
    assert_refused(result, "experiment=nosuch: no such option in the config group experiment")


def test_cli_refuses_a_run_folder_under_a_file(tmp_path) -> None:
    (tmp_path / "afile").write_text("")
    result = run_cli(f"hydra.run.dir={tmp_path / 'afile' / 'run'}", cwd=tmp_path)
    assert_refused(result, f"cannot be the run folder, {tmp_path / 'afile'} is a file")


def test_cli_refuses_a_second_run_in_a_folder_before_writing_there(held_folder, tmp_path):
    result = run_cli(f"hydra.run.dir={held_folder}", cwd=tmp_path)
    assert_refused(result, f"{held_folder} is in use by another run (pid 4242 on elsewhere")
    assert sorted(p.name for p in held_folder.iterdir()) == [LOCK_NAME]  # no .hydra, no log
