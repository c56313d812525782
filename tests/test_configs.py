"""Every option of every config group composes, and its objects instantiate."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from hydra.utils import instantiate

from seqlab.pipeline import build_datamodule, build_model, build_trainer
from tests.conftest import CONFIG_DIR
from tests.own_data import write_folder, write_table

# All of it in `make test-quick`: a fork's new config that does not compose fails first here.
pytestmark = pytest.mark.quick


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def required_overrides(data: str, tmp_path: Path) -> list[str]:
    """Values a data option cannot default (``???`` in its config)."""
    if data == "text":
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("To be, or not to be, that is the question.\n" * 200, encoding="utf-8")
        return [f"data.path={corpus}"]
    if data == "folder":
        return [f"data.path={write_folder(tmp_path / 'recordings')}"]
    if data == "table":
        return [f"data.path={write_table(tmp_path / 'steps.csv')}"]
    return []


def test_every_group_of_the_design_card_exists() -> None:
    for group in (
        "data",
        "model",
        "trainer",
        "logger",
        "callbacks",
        "experiment",
        "debug",
        "hparams_search",
        "paths",
        "hydra",
    ):
        assert (CONFIG_DIR / group).is_dir(), group


@pytest.mark.parametrize("model", options("model"))
def test_model_options_build_a_model(make_cfg, model: str) -> None:
    cfg = make_cfg(f"model={model}")
    model_ = build_model(cfg, build_datamodule(cfg))
    assert isinstance(model_, L.LightningModule)


@pytest.mark.parametrize("data", options("data"))
def test_data_options_build_a_datamodule(make_cfg, data: str, tmp_path: Path) -> None:
    datamodule = build_datamodule(make_cfg(f"data={data}", *required_overrides(data, tmp_path)))
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["x"].shape[0] == batch["lengths"].shape[0] == batch["y"].shape[0]


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_options_instantiate(make_cfg, logger: str) -> None:
    cfg = make_cfg(f"logger={logger}")
    trainer, loggers = build_trainer(cfg)
    assert isinstance(trainer, L.Trainer)
    assert len(loggers) == len([v for v in (cfg.get("logger") or {}).values() if v])
    from seqlab.loggers import finish_loggers

    finish_loggers(loggers)


@pytest.mark.parametrize("callbacks", options("callbacks"))
def test_callback_options_instantiate(make_cfg, callbacks: str) -> None:
    trainer, _ = build_trainer(make_cfg(f"callbacks={callbacks}", "logger=csv", tiny=False))
    assert isinstance(trainer, L.Trainer)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_options_compose(make_cfg, trainer: str) -> None:
    cfg = make_cfg(f"trainer={trainer}")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if cfg.trainer.accelerator == "cpu":
        assert isinstance(instantiate(cfg.trainer), L.Trainer)


@pytest.mark.parametrize("debug", options("debug"))
def test_debug_options_compose(make_cfg, debug: str) -> None:
    assert make_cfg(f"debug={debug}").task_name == "debug"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_options_build(make_cfg, experiment: str) -> None:
    cfg = make_cfg(f"experiment={experiment}")
    build_model(cfg, build_datamodule(cfg))


def test_eval_config_requires_a_checkpoint(make_cfg) -> None:
    from omegaconf.errors import MissingMandatoryValue

    cfg = make_cfg(name="eval", tiny=False)
    with pytest.raises(MissingMandatoryValue):
        _ = cfg.ckpt_path


def test_run_folder_is_under_logs_task_name(make_cfg) -> None:
    cfg = make_cfg()
    assert cfg.hydra.run.dir.startswith(f"{cfg.paths.log_dir}/train/runs/")
    assert cfg.hydra.sweep.dir.startswith(f"{cfg.paths.log_dir}/train/multiruns/")
    assert Path(cfg.paths.output_dir).name == "run"


@pytest.mark.parametrize("hydra_option", options("hydra"))
def test_hydra_options_compose(make_cfg, hydra_option: str) -> None:
    cfg = make_cfg(f"hydra={hydra_option}", "trainer=ddp_cpu")
    assert cfg.hydra.sweep.dir.startswith(f"{cfg.paths.log_dir}/train/multiruns/")


@pytest.mark.parametrize("search", options("hparams_search"))
def test_hparams_search_options_compose_into_a_sweep(make_cfg, search: str) -> None:
    cfg = make_cfg(f"hparams_search={search}")
    assert cfg.hydra.sweeper.params
    assert cfg.optimized_metric


@pytest.mark.parametrize(
    ("overrides", "profiler"),
    [
        ((), "NoProfiler"),
        (("debug=profiler",), "SimpleProfiler"),
        (("+trainer.profiler=simple",), "SimpleProfiler"),
    ],
)
def test_trainer_profiles_only_when_asked(make_cfg, overrides, profiler: str) -> None:
    """No profiler named: seqlab's, which profiles nothing as Lightning's default does, without
    a generator per hook call. A named one is Lightning's, as named."""
    trainer, _ = build_trainer(make_cfg(*overrides, "logger=none"))
    assert type(trainer.profiler).__name__ == profiler
    with trainer.profiler.profile("[LightningModule]Task.training_step"):
        pass
