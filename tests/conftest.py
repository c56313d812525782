"""Shared fixtures: Hydra configs composed in-process, with every output under tmp_path."""

from __future__ import annotations

import os

# One compute thread per process, before torch is imported (test processes started from here
# inherit it): the suite's models are tiny, and on a 2-core machine a second OpenMP thread per
# process costs more than it gives; measured with the other core busy, a tiny language-model run
# took 28.8 s on two threads and 13.6 s on one.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"

# Small enough to train in seconds on 2 CPU cores.
TINY = [
    "model.encoder.hidden_size=16",
    "trainer.max_epochs=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.plots=null",
    "logger=csv",
]


def pytest_configure(config: pytest.Config) -> None:
    # seqlab.tasks.base silences Lightning's note on the tasks' transfer_batch_to_device hook
    # when it is imported, but pytest resets the warning filters around every test.
    config.addinivalue_line(
        "filterwarnings", "ignore:.*overridden `transfer_batch_to_device` in `LightningModule`"
    )


def compose_config(name: str, overrides: Sequence[str], run_dir: Path) -> DictConfig:
    """Compose ``configs/<name>.yaml`` as Hydra would, with the run folder at ``run_dir``."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
        cfg.paths.log_dir = str(run_dir.parent / "logs")
        cfg.paths.data_dir = str(run_dir.parent / "data")
    HydraConfig().set_config(cfg)  # makes ${hydra:runtime.output_dir} resolve
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str, name: str = "train", tiny: bool = True) -> DictConfig:
        return compose_config(name, [*(TINY if tiny else []), *overrides], tmp_path / "run")

    return make


@pytest.fixture(autouse=True)
def _no_wandb_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may reach wandb's servers: no credentials, a throw-away home."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
