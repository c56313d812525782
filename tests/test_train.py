"""train(cfg) and evaluate(cfg) in-process on tiny configs, and the CLI's run folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seqlab.evaluate import evaluate
from seqlab.train import train
from tests.conftest import ROOT, TINY, compose_config


def test_fast_dev_run_trains_tests_and_writes_metrics(make_cfg) -> None:
    cfg = make_cfg("debug=fdr")
    metrics = train(cfg)
    assert {"test/acc", "test/f1", "test/loss"} <= set(metrics)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert saved == pytest.approx({k: v for k, v in metrics.items() if k.startswith("test/")})


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
