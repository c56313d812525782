"""train(cfg) end to end on every new data option, and the errors that stop a run early."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException, MissingConfigException

from seqlab.pipeline import build_datamodule
from seqlab.tasks import SequenceTask
from seqlab.train import train

SMALL = ["data.train_size=64", "data.val_size=32", "data.test_size=32"]
DATA = {
    "adding": ([*SMALL, "data.seq_len=20"], {"test/mse", "test/mae"}),
    "copy": ([*SMALL, "data.delay=5", "data.n_symbols=3"], {"test/acc"}),
    "sine": (
        [*SMALL, "data.seq_len=30", "data.min_len=10", "data.rollout_horizon=4"],
        {"test/mse", "test/rollout_mse", "test/persistence_mse"},
    ),
    "sunspots": (["data.window=10"], {"test/mae", "test/persistence_mae", "test/rollout_mae"}),
    "spoken_digits": ([], {"test/acc", "test/f1"}),
}
CAUSAL = {"sine", "sunspots"}
CASES = [(data, model) for data in DATA for model in ("lstm", "bilstm")]


@pytest.mark.quick
@pytest.mark.parametrize(
    ("data", "model"), [case for case in CASES if not (case[0] in CAUSAL and case[1] == "bilstm")]
)
def test_one_batch_of_each_stage_trains_tests_and_reports(make_cfg, data: str, model: str) -> None:
    overrides, expected = DATA[data]
    cfg = make_cfg(f"data={data}", f"model={model}", "debug=fdr", *overrides)
    metrics = train(cfg)
    assert expected | {"test/loss", "time/fit_seconds"} <= set(metrics)
    assert all(v == v for v in metrics.values())  # no NaN
    run_dir = Path(cfg.paths.output_dir)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert expected <= set(saved)
    timing = json.loads((run_dir / "timing.json").read_text())
    assert timing["fit_seconds"] == pytest.approx(metrics["time/fit_seconds"])
    assert timing["fit_cpu_seconds"] > 0


@pytest.mark.parametrize("data", sorted(CAUSAL))
def test_bidirectional_model_on_a_causal_task_fails_before_training(make_cfg, data: str) -> None:
    cfg = make_cfg(f"data={data}", "model=bilstm", "debug=fdr", *DATA[data][0])
    with pytest.raises(ValueError, match=r"model\.encoder\.bidirectional=true.*model=lstm"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_unknown_data_option_lists_the_available_ones(make_cfg) -> None:
    with pytest.raises(MissingConfigException, match=r"(?s)Available options.*adding.*sunspots"):
        make_cfg("data=no_such_data")


def test_unknown_ucr_name_fails_naming_the_key(make_cfg) -> None:
    cfg = make_cfg("data=ucr", "data.name=NoSuchSet")
    with pytest.raises(ValueError, match=r"data\.name='NoSuchSet'.*Available: .*ItalyPowerDemand"):
        build_datamodule(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=adding", "data.seq_len=1"], "data.seq_len=1: must be an integer >= 2"),
        (["data=sine", "data.rollout_horizon=100"], "data.rollout_horizon=100"),
        (["data=sunspots", "data.window=0"], "data.window=0"),
    ],
)
def test_bad_data_values_fail_before_training_naming_the_key(make_cfg, overrides, message) -> None:
    # Hydra wraps the data module's ValueError, keeping its message.
    with pytest.raises(InstantiationException, match=message):
        train(make_cfg(*overrides, "debug=fdr"))


def test_the_step_loss_is_logged_only_on_the_steps_lightning_writes(make_cfg, monkeypatch) -> None:
    """``train/loss_step`` costs a ``self.log`` call only where Lightning writes it (every
    ``trainer.log_every_n_steps`` steps), and each written row holds its own step's loss."""
    logged: list[float] = []
    log = SequenceTask.log

    def counting_log(self, name, value, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "train/loss_step":
            logged.append(float(value))
        return log(self, name, value, *args, **kwargs)

    monkeypatch.setattr(SequenceTask, "log", counting_log)
    cfg = make_cfg("trainer.max_epochs=2", "trainer.log_every_n_steps=3")
    train(cfg)
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv", newline="") as file:
        rows = [float(r["train/loss_step"]) for r in csv.DictReader(file) if r["train/loss_step"]]
    assert len(rows) >= 2
    assert rows == pytest.approx(logged, rel=1e-6)


def test_per_step_attributes_skip_module_checks_and_stay_plain(make_cfg, monkeypatch) -> None:
    """Lightning sets ``_current_fx_name`` around every hook and the task sets ``step_loss``
    every step: neither goes through nn.Module's ``__setattr__`` checks, and neither is ever
    registered as a parameter, buffer or module; anything else still is."""
    nn = torch.nn
    through_module: list[str] = []
    module_setattr = nn.Module.__setattr__

    def counting_setattr(self, name, value):  # type: ignore[no-untyped-def]
        if isinstance(self, SequenceTask):
            through_module.append(name)
        module_setattr(self, name, value)

    monkeypatch.setattr(nn.Module, "__setattr__", counting_setattr)
    cfg = make_cfg("debug=fdr")
    train(cfg)
    assert not set(through_module) & SequenceTask._PLAIN_ATTRIBUTES
    assert through_module  # the test saw the task's other attributes go through

    task = SequenceTask.__new__(SequenceTask)
    nn.Module.__init__(task)
    task.step_loss = torch.zeros(1)
    task._current_fx_name = "training_step"
    task.weight = nn.Parameter(torch.zeros(1))
    assert "weight" in task._parameters
    assert task.step_loss is task.__dict__["step_loss"]
    assert not {"step_loss", "_current_fx_name"} & (
        set(task._parameters) | set(task._buffers) | set(task._modules)
    )
