"""seqlab's Optuna search (scripts/search.py): a killed sqlite study resumes to exactly its
n_trials, the pruner stops hopeless trials mid-fit, and a bad search config exits 2 naming
its key. Tiny adding-problem runs, a second or less a trial."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from tests.conftest import CONFIG_DIR, ROOT

optuna = pytest.importorskip("optuna", minversion="4", reason="pip install 'seqlab[sweep]'")
search_module = pytest.importorskip("seqlab.search")
TrialState = optuna.trial.TrialState

# Each trial: an LSTM of 8 units on 200 sequences of 20 steps, no test stage, no logger.
TINY_TRIAL = [
    "data=adding",
    "data.seq_len=20",
    "data.train_size=200",
    "data.val_size=50",
    "data.test_size=50",
    "model.encoder.hidden_size=8",
    "logger=none",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.plots=null",
    "test=false",
]
# A learning rate over four decades: the smallest ones barely move in a few epochs.
SEARCH = {
    "study_name": "tiny",
    "n_trials": 6,
    "metric": "val/loss",
    "direction": "minimize",
    "storage": None,
    "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 4},
    "pruner": {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 1},
    "space": {"model.optimizer.lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True}},
}


def write_search(tmp_path: Path, name: str = "tiny", **changes: object) -> list[str]:
    """A search config ``configs/search/<name>.yaml`` under tmp_path, and the overrides that
    choose it (the folder joins Hydra's search path, as a fork's own config folder would)."""
    folder = tmp_path / "configs" / "search"
    folder.mkdir(parents=True, exist_ok=True)
    settings = {**SEARCH, **changes}
    (folder / f"{name}.yaml").write_text(
        "# @package _global_\n" + yaml.safe_dump({"task_name": "tiny", "search": settings})
    )
    return [f"hydra.searchpath=[file://{tmp_path / 'configs'}]", f"search={name}"]


def study_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "tiny" / "search" / "tiny"


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{study_dir(tmp_path)}/study.db"


def compose_search(*overrides: str) -> DictConfig:
    """Compose the search's train config as scripts/search.py's Hydra would (its overrides in
    hydra.overrides); to be called inside an initialize_config_dir block."""
    cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path(cfg.paths.log_dir) / "runs" / "search")
        cfg.hydra.job.name = "search"
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every path of the runs (logs/, data/) under tmp_path."""
    monkeypatch.setenv("SEQLAB_ROOT", str(tmp_path))
    return tmp_path


def search_command(*overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "search.py"), *overrides]


def run_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SEQLAB_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}


def states(db: Path) -> list[tuple[int, str]]:
    """(number, state) of the study's trials, read without creating the file or its tables."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            return connection.execute("SELECT number, state FROM trials").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


def test_a_killed_sqlite_study_resumes_to_exactly_its_trials(root: Path) -> None:
    # All three kinds of parameter, one of them a config group.
    space = {
        **SEARCH["space"],
        "model.encoder.num_layers": {"type": "int", "low": 1, "high": 2},
        "model": {"type": "categorical", "choices": ["lstm", "bilstm"]},
    }
    overrides = [
        *write_search(root, storage=sqlite_url(root), space=space),
        *TINY_TRIAL,
        "trainer.max_epochs=3",
    ]
    db = study_dir(root) / "study.db"
    # SIGKILL once three trials have finished and the fourth is running: nothing of the
    # search's own runs after that, as when a machine goes away.
    search = subprocess.Popen(
        search_command(*overrides),
        cwd=root,
        env=run_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    try:
        while True:
            seen = dict(states(db))
            finished = [n for n, state in seen.items() if state in ("COMPLETE", "PRUNED")]
            if len(finished) == 3 and "RUNNING" in seen.values():
                break
            assert len(finished) <= 3, seen
            assert search.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
        search.send_signal(signal.SIGKILL)
        search.wait(timeout=30)
    finally:
        search.kill()
    killed = dict(states(db))
    assert len(killed) == 4 and list(killed.values()).count("RUNNING") == 1, killed
    [running] = [n for n, state in killed.items() if state == "RUNNING"]

    resumed = subprocess.run(
        search_command(*overrides),
        cwd=root,
        env=run_env(root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert f"trial {running} was left running by a search that was killed: marked FAIL" in output
    assert "3 of 6 trials finished, 3 to run" in output

    study = optuna.load_study(study_name="tiny", storage=sqlite_url(root))
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    numbers = [trial.number for trial in finished]
    assert len(finished) == 6
    assert len(set(numbers)) == 6
    assert [t.number for t in study.get_trials(states=(TrialState.FAIL,))] == [running]
    assert len(study.trials) == 7
    # The resumed sampler goes on from a moved seed, not drawing the first trials' points again.
    lrs = [trial.params["model.optimizer.lr"] for trial in finished]
    assert len(set(lrs)) == 6, lrs
    for trial in finished:
        # The trial trained what it sampled.
        cfg = yaml.safe_load(
            (study_dir(root) / f"trial_{trial.number}" / "config.yaml").read_text()
        )
        assert cfg["model"]["optimizer"]["lr"] == trial.params["model.optimizer.lr"]
        assert cfg["model"]["encoder"]["num_layers"] == trial.params["model.encoder.num_layers"]
        assert cfg["model"]["encoder"]["bidirectional"] == (trial.params["model"] == "bilstm")
    best = yaml.safe_load((study_dir(root) / "best.yaml").read_text())
    assert best["best_value"] == study.best_value
    assert best["best_params"] == study.best_params
    assert sum(best["trials"].get(state, 0) for state in ("complete", "pruned")) == 6
    assert best["trials"]["fail"] == 1


# Slow (~10-15 s): a whole study; `make test` keeps the resumed sqlite study.
@pytest.mark.slow
def test_the_median_pruner_stops_hopeless_trials_mid_fit(root: Path) -> None:
    overrides = [
        *write_search(root, n_trials=12),
        *TINY_TRIAL,
        "trainer.max_epochs=4",
    ]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        study = search_module.run_search(compose_search(*overrides))
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(pruned) + len(complete) == len(study.trials) == 12
    assert len(pruned) >= 1
    for trial in pruned:
        # Stopped after the warm-up epoch, before the last: the fit itself was cut short.
        assert 2 <= len(trial.intermediate_values) < 4, trial.intermediate_values
        assert not (study_dir(root) / f"trial_{trial.number}" / "timing.json").exists()
    for trial in complete:
        assert sorted(trial.intermediate_values) == [0, 1, 2, 3]
        # A trial's value is its best epoch, as the checkpoint keeps the best.
        assert trial.value == min(trial.intermediate_values.values())
    print(f"pruned {len(pruned)} of 12: {[t.number for t in pruned]}")


BAD = {
    "unknown pruner": ({}, ["search.pruner.name=bogus"], "search.pruner.name='bogus': allowed:"),
    "unknown sampler": ({}, ["search.sampler.name=cmaes"], "search.sampler.name='cmaes': allowed:"),
    "pruner argument": ({}, ["+search.pruner.n_warmup=2"], "search.pruner: median:"),
    "no trials": ({}, ["search.n_trials=0"], "search.n_trials=0: must be a whole number >= 1"),
    "storage": ({}, ["search.storage=postgresql://db/x"], "search.storage='postgresql://db/x':"),
    "unknown key": ({}, ["+search.n_trial=3"], "search.n_trial: unknown key"),
    "direction": ({}, ["search.direction=down"], "search.direction='down': minimize or maximize"),
    "unknown type": (
        {"space": {"model.optimizer.lr": {"type": "gaussian", "low": 0.0, "high": 1.0}}},
        [],
        "search.space.model.optimizer.lr: type='gaussian': allowed: float, int, categorical",
    ),
    "low above high": (
        {"space": {"model.optimizer.lr": {"type": "float", "low": 0.1, "high": 0.01}}},
        [],
        "search.space.model.optimizer.lr: `low <= high` must hold",
    ),
    "log from zero": (
        {"space": {"model.optimizer.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}},
        [],
        "search.space.model.optimizer.lr: `low > 0` must hold for `log=True`",
    ),
    "int of floats": (
        {"space": {"model.encoder.num_layers": {"type": "int", "low": 1.5, "high": 3}}},
        [],
        "search.space.model.encoder.num_layers: low=1.5: must be a whole number",
    ),
    "no choices": (
        {"space": {"model.encoder.num_layers": {"type": "categorical"}}},
        [],
        "search.space.model.encoder.num_layers: choices=None:",
    ),
    "not a key": (
        {"space": {"model.optimiser.lr": {"type": "float", "low": 1e-4, "high": 1e-2}}},
        [],
        "search.space.model.optimiser.lr: not a key of the train config",
    ),
    "also on the command line": (
        {},
        ["model.optimizer.lr=0.01"],
        "search.space.model.optimizer.lr: also set on the command line",
    ),
    "empty space": ({"space": {}}, [], "search.space: give one or more train-config keys"),
    "ddp": (
        {},
        ["trainer=ddp_cpu"],
        "trainer.devices=2: a search trains its trials in one process",
    ),
}


def refused(overrides: list[str], caplog: pytest.LogCaptureFixture) -> list[str]:
    """The ``error:`` lines of a search that ``overrides`` make exit with status 2."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose_search(*overrides)
        with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
            search_module.main(cfg)
    assert stop.value.code == 2
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("error:")]


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_search_config_is_refused_before_anything_is_written(
    root: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    changes, extra, expected = BAD[case]
    overrides = [
        *write_search(root, storage=sqlite_url(root), **changes),
        *TINY_TRIAL,
        *extra,
    ]
    errors = refused(overrides, caplog)
    assert len(errors) == 1 and expected in errors[0], errors
    assert not study_dir(root).exists()


def test_a_metric_the_run_does_not_log_is_named_after_the_first_epoch(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = [
        *write_search(root, storage=sqlite_url(root)),
        *TINY_TRIAL,
        "trainer.max_epochs=3",
        "search.metric=val/acc",  # a regression: val/loss, val/mae, val/mse
    ]
    errors = refused(overrides, caplog)
    assert len(errors) == 1
    assert errors[0].startswith("error: search.metric=val/acc: the run does not log it")
    assert "val/mse" in errors[0]
    study = optuna.load_study(study_name="tiny", storage=sqlite_url(root))
    assert [t.state for t in study.trials] == [TrialState.FAIL]


def test_the_command_line_exits_2_with_one_error_line(tmp_path: Path) -> None:
    done = subprocess.run(
        search_command(*write_search(tmp_path), *TINY_TRIAL, "search.pruner.name=mediam"),
        cwd=tmp_path,
        env=run_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 2
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and "search.pruner.name='mediam': allowed: median," in errors[0]
    assert not any("Traceback" in line for line in lines)
    assert not (tmp_path / "logs" / "tiny" / "search").exists()


def test_no_search_chosen_is_named(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose_search(*TINY_TRIAL)
        with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
            search_module.main(cfg)
    assert "error: search: no search chosen" in caplog.text


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIG_DIR / "search").glob("*.yaml")))
def test_every_shipped_search_config_reads_and_keeps_its_study_in_sqlite(
    root: Path, name: str
) -> None:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose_search(f"search={name}")
        search = search_module.read_search(cfg)
    study_folder = Path(cfg.paths.log_dir) / cfg.task_name / "search" / search.study_name
    assert search.storage == f"sqlite:///{study_folder}/study.db"
    # The search's own log and .hydra/ land in the study folder too.
    assert cfg.hydra.run.dir == str(study_folder)
    assert search.sampler(0) is not None
    assert search.space


def test_the_japanese_vowels_search_prunes_with_a_seeded_tpe(root: Path) -> None:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        search = search_module.read_search(compose_search("search=japanese_vowels"))
    # What the README says of it.
    assert isinstance(search.pruner, optuna.pruners.MedianPruner)
    assert isinstance(search.sampler(0), optuna.samplers.TPESampler)
    assert (search.n_trials, search.metric, search.direction) == (20, "val/loss", "minimize")
