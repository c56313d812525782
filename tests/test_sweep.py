"""Hyperparameter search: the Optuna sweep runs and reports its best value; the wandb sweep
config drives scripts/train.py with valid overrides of the same search space."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import CONFIG_DIR, ROOT, TINY

OPTUNA_CONFIG = CONFIG_DIR / "hparams_search" / "japanese_vowels_optuna.yaml"
WANDB_SWEEP = CONFIG_DIR / "wandb_sweep" / "japanese_vowels.yaml"


def optuna_params() -> dict[str, str]:
    return yaml.safe_load(OPTUNA_CONFIG.read_text())["hydra"]["sweeper"]["params"]


def test_optuna_search_of_three_trials_reports_its_best_value(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install 'seqlab[sweep]'")
    sweep_dir = tmp_path / "sweep"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            "hparams_search=japanese_vowels_optuna",
            "hydra.sweeper.n_trials=3",
            f"hydra.sweep.dir={sweep_dir}",
            # The search space's own hidden sizes: a size given here would be fixed instead.
            *(o for o in TINY if not o.startswith("model.encoder.hidden_size")),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
        timeout=600,
        env={**os.environ, "SEQLAB_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"},
    )
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert set(results["best_params"]) == set(optuna_params())
    assert math.isfinite(results["best_value"]) and results["best_value"] > 0
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1", "2"]
    assert all((sweep_dir / job / "metrics.json").is_file() for job in jobs)


def sample_value(spec: dict) -> object:
    return spec["values"][0] if "values" in spec else spec["min"]


def test_wandb_sweep_drives_train_py_with_hydra_overrides() -> None:
    sweep = yaml.safe_load(WANDB_SWEEP.read_text())
    assert (ROOT / sweep["program"]).is_file()
    assert sweep["method"] in ("grid", "random", "bayes")
    assert sweep["metric"] == {"name": "val/loss", "goal": "minimize"}
    assert sweep["command"][:3] == ["${env}", "${interpreter}", "${program}"]
    assert sweep["command"][-1] == "${args_no_hyphens}"


def test_wandb_sweep_parameters_are_override_keys_of_the_train_config() -> None:
    sweep = yaml.safe_load(WANDB_SWEEP.read_text())
    fixed = [arg for arg in sweep["command"] if not arg.startswith("${")]
    points = {key: sample_value(spec) for key, spec in sweep["parameters"].items()}
    overrides = [*fixed, *(f"{key}={value}" for key, value in points.items())]
    # No `+key=`: composing fails on a key the train config does not have.
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    for key, value in points.items():
        assert OmegaConf.select(cfg, key) == value, key


def test_wandb_and_optuna_sweeps_search_the_same_space() -> None:
    sweep = yaml.safe_load(WANDB_SWEEP.read_text())
    assert set(sweep["parameters"]) == set(optuna_params())
