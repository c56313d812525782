"""Hyperparameter search: the wandb sweep config drives scripts/train.py with valid overrides of
the search space of scripts/search.py search=japanese_vowels (tested in test_search.py)."""

from __future__ import annotations

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import CONFIG_DIR, ROOT

SEARCH_CONFIG = CONFIG_DIR / "search" / "japanese_vowels.yaml"
WANDB_SWEEP = CONFIG_DIR / "wandb_sweep" / "japanese_vowels.yaml"


def search_space() -> dict[str, dict]:
    return OmegaConf.to_container(OmegaConf.load(SEARCH_CONFIG).search.space)


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


def test_wandb_sweep_and_optuna_search_search_the_same_space() -> None:
    sweep = yaml.safe_load(WANDB_SWEEP.read_text())["parameters"]
    space = search_space()
    assert set(sweep) == set(space)
    for key, spec in space.items():
        if spec["type"] == "categorical":
            assert sweep[key]["values"] == spec["choices"], key
        else:
            assert (sweep[key]["min"], sweep[key]["max"]) == (spec["low"], spec["high"]), key
            log = sweep[key]["distribution"] == "log_uniform_values"
            assert log == spec.get("log", False), key
