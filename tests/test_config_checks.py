"""Bad configs are refused before any work, one line per problem naming key, value and what
is allowed; every shipped config passes."""

from __future__ import annotations

import re

import pytest

from seqlab.config_checks import check_config, data_task
from seqlab.errors import ConfigError
from tests.conftest import CONFIG_DIR
from tests.test_train import run_cli

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))


@pytest.mark.quick
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_passes(make_cfg, experiment) -> None:
    check_config(make_cfg(f"experiment={experiment}", tiny=False))


@pytest.mark.quick
@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", ["lstm", "bilstm"])
def test_every_data_and_model_pair_passes_where_the_task_allows(make_cfg, data, model) -> None:
    cfg = make_cfg(f"data={data}", f"model={model}")
    task = data_task(cfg)  # None where the labels decide it (data.task=auto)
    if task is not None and task.causal and model == "bilstm":
        with pytest.raises(ConfigError, match="would see the future"):
            check_config(cfg)
    else:
        check_config(cfg)


@pytest.mark.quick
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.encoder.hidden_size=0"], "model.encoder.hidden_size=0: must be >= 1"),
        (["model.encoder.num_layers=1.5"], "model.encoder.num_layers=1.5: must be an integer"),
        (["model.encoder.dropout=1.0"], "model.encoder.dropout=1.0: must be in [0, 1)"),
        (["model.encoder.dropout=-0.1"], "model.encoder.dropout=-0.1: must be in [0, 1)"),
        (["model.encoder.impl=cudnn"], "model.encoder.impl='cudnn': allowed: auto, fused, loop"),
        (["model.encoder.init_state=random"], "model.encoder.init_state='random': allowed:"),
        (["model.encoder.pooling=avg"], "model.encoder.pooling='avg': allowed: last, mean"),
        (["model.encoder.proj_size=16"], "proj_size=16: must be smaller than hidden_size (16)"),
        (["model.encoder.noise_std=-0.1"], "model.encoder.noise_std=-0.1: must be >= 0"),
        (
            ["model.encoder.impl=fused", "model.encoder.recurrent_dropout=0.2"],
            "recurrent_dropout=0.2: only the loop impl has it, and impl=fused; use "
            "model.encoder.impl=loop",
        ),
        (
            ["model.encoder.impl=fused", "model.encoder.forget_bias=1.0"],
            "forget_bias=1.0: only the loop impl",
        ),
        (["model.head.dropout=2"], "model.head.dropout=2: must be in [0, 1)"),
        (["model.optimizer.lr=0"], "model.optimizer.lr=0: must be > 0"),
        (["trainer.precision=fp8"], "trainer.precision='fp8': allowed: 32-true, bf16-mixed"),
        (["trainer.precision=16-mixed"], "trainer.precision=16-mixed: fp16 needs a GPU"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0: must be a positive integer"),
        (["data=text", "model=bilstm"], "model.encoder.bidirectional=true: the data's task"),
        (["data=text", "model.encoder.conv_channels=[8]"], "conv_channels=[8]: the data's task"),
        (["data=sine", "model.encoder.conv_channels=[8]"], "the convolutions look ahead"),
        (["model.encoder.conv_channels=[8,0]"], "conv_channels=[8, 0]: must be a list of positive"),
        (["model.encoder.conv_channels=8"], "conv_channels=8: must be a list of positive"),
        (["model.encoder.conv_mode=side"], "conv_mode='side': allowed: serial, parallel, both"),
        (
            ["data=text", "model.encoder.conv_channels=[8]", "model.encoder.conv_mode=parallel"],
            "conv_channels=[8]: the data's task",
        ),
        (
            ["model.encoder.conv_channels=[8]", "model.encoder.conv_kernel_size=4"],
            "model.encoder.conv_kernel_size=4: kernel sizes must be odd",
        ),
        (
            ["model.encoder.conv_channels=[8,8,8]", "model.encoder.conv_kernel_size=[3,5]"],
            "conv_kernel_size=[3, 5]: give one size, or one per layer (3 for conv_channels=[8, 8, 8])",
        ),
        # Unknown keys, as `+key=` or a user's YAML brings them in.
        (["+model.encoder.hiden_size=8"], "model.encoder.hiden_size: unknown key (did you mean"),
        (["+data.batchsize=8"], "data.batchsize: unknown key (did you mean batch_size?)"),
        (["+trainer.max_epoch=3"], "trainer.max_epoch: unknown key (did you mean max_epochs?)"),
        (["+model.optimzer.lr=1"], "model.optimzer: unknown key (did you mean optimizer?)"),
        (["+model.head.width=3"], "model.head.width: unknown key"),
        (["+model.num_classes=3"], "model.num_classes=3: set by the data module"),
        (["+callbacks.x._target_=no.such.Thing"], "callbacks.x._target_='no.such.Thing'"),
        # What steers training must be able to run past the first epoch.
        (["model.encoder.pooling=null"], "model.encoder.pooling=null: the data's task reads one"),
        (["trainer.max_epochs=-1"], "model.scheduler.T_max=-1: must be a positive number of"),
        (
            ["data.val_fraction=0", "callbacks=early_stopping"],
            "callbacks.early_stopping: it stops on val/loss, but this run never validates "
            "(data.val_fraction=0)",
        ),
        (
            ["experiment=adding", "+trainer.limit_val_batches=0"],  # ReduceLROnPlateau
            "ReduceLROnPlateau: it steps on val/loss, but this run never validates "
            "(trainer.limit_val_batches=0)",
        ),
        (
            ["trainer=ddp_cpu", "trainer.strategy=ddp_spawn", "logger=csv"],
            "logger.csv: the CSV logger cannot carry its file across the fit's and the test's "
            "processes with trainer.strategy=ddp_spawn; use logger=tensorboard",
        ),
        (
            ["optimized_metric=val/acc"],
            "optimized_metric=val/acc: a sweep can get the best value of the checkpoint's metric, "
            "callbacks.model_checkpoint.monitor=val/loss",
        ),
    ],
)
def test_bad_values_are_named_with_what_is_allowed(make_cfg, overrides, message) -> None:
    with pytest.raises(ConfigError) as error:
        check_config(make_cfg(*overrides))
    assert message in str(error.value)
    assert all("\n" not in problem for problem in error.value.problems)


@pytest.mark.quick
def test_all_problems_are_reported_at_once(make_cfg) -> None:
    cfg = make_cfg("model.encoder.hidden_size=0", "model.encoder.dropout=3", "data.batch_size=8")
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert len(error.value.problems) == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # One case in `make test-quick`: each starts a process (5 s).
        pytest.param(
            "model.encoder.dropout=1.5",
            "error: model.encoder.dropout=1.5: must be in [0, 1)",
            marks=pytest.mark.quick,
        ),
        # Raised inside a constructor that Hydra instantiates, and unwrapped.
        ("data.batch_size=0", "error: data.batch_size=0: must be a positive integer"),
        ("data.name=NoSuchSet", "error: data.name='NoSuchSet': no such UCR/UEA data set"),
    ],
)
def test_cli_refuses_a_bad_config_in_one_line_without_traceback(tmp_path, override, message):
    result = run_cli(override, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert message in output
    assert "Traceback" not in output
    # Refused before any training: no checkpoint, no metrics.
    assert not list(tmp_path.glob("logs/**/*.ckpt"))
    assert not list(tmp_path.glob("logs/**/metrics.json"))
    assert re.search(r"error: .*\n", output)
