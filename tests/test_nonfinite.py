"""A NaN loss stops training with a message, or skips the step; weights never take it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from seqlab.callbacks.nonfinite import NonFiniteLossError
from seqlab.train import train

NAN_AT = "+callbacks.nan._target_=tests.fault_injection.NaNInputsAt"


def finite_checkpoints(run_dir: Path) -> list[str]:
    names = []
    for path in sorted((run_dir / "checkpoints").glob("*.ckpt")):
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
        names.append(path.name)
    return names


def test_skip_policy_skips_the_step_and_counts_it(make_cfg) -> None:
    cfg = make_cfg(
        "trainer.max_epochs=2",
        "callbacks.nonfinite_loss.policy=skip",
        NAN_AT,
        "+callbacks.nan.steps=[1,9]",
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))
    run_dir = Path(cfg.paths.output_dir)
    assert len(finite_checkpoints(run_dir)) == 2  # best and last
    with open(run_dir / "csv" / "metrics.csv") as file:
        counts = [row["train/nonfinite_steps"] for row in csv.DictReader(file)]
    assert [float(c) for c in counts if c] == [1.0, 2.0]  # per epoch, cumulative


def test_stop_policy_stops_with_a_message_and_keeps_the_weights(make_cfg) -> None:
    cfg = make_cfg("trainer.max_epochs=3", NAN_AT, "+callbacks.nan.steps=[9]")
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, step 9: training stopped"):
        train(cfg)
    # Epoch 0's checkpoints are there and finite.
    assert finite_checkpoints(Path(cfg.paths.output_dir))


def test_the_stop_message_names_the_loss_of_a_step_whose_loss_is_not_written(make_cfg) -> None:
    # log_every_n_steps=50: step 7's loss is never written to the loggers, yet it is named.
    cfg = make_cfg("trainer.max_epochs=3", NAN_AT, "+callbacks.nan.steps=[7]")
    with pytest.raises(NonFiniteLossError, match=r"^train loss nan at epoch \d+, step 7:"):
        train(cfg)


def test_too_many_skips_stop(make_cfg) -> None:
    cfg = make_cfg(
        "callbacks.nonfinite_loss.policy=skip",
        "callbacks.nonfinite_loss.max_skips=1",
        NAN_AT,
        "+callbacks.nan.steps=[0,1,2]",
    )
    with pytest.raises(
        NonFiniteLossError, match=r"more than callbacks\.nonfinite_loss\.max_skips=1"
    ):
        train(cfg)


def test_the_skip_count_carries_over_a_resume(make_cfg) -> None:
    """Like the uninterrupted run above: stopped after epoch 0, resumed from its checkpoint."""
    skip = ["callbacks.nonfinite_loss.policy=skip", NAN_AT, "+callbacks.nan.steps=[1,9]"]
    first = make_cfg("trainer.max_epochs=1", *skip)
    train(first)
    run_dir = Path(first.paths.output_dir)
    resumed = make_cfg("trainer.max_epochs=2", *skip, f"ckpt_path={run_dir}/checkpoints/last.ckpt")
    train(resumed)
    with open(run_dir / "csv" / "metrics.csv") as file:
        counts = [row["train/nonfinite_steps"] for row in csv.DictReader(file)]
    assert [float(c) for c in counts if c] == [1.0, 2.0]  # per epoch, cumulative
