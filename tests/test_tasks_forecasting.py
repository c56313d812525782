"""SequenceForecaster: losses and metrics over real, scored steps; the autoregressive rollout."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from seqlab.data.collate import pad_collate
from seqlab.tasks.forecasting import SequenceForecaster

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")

ENCODER = {"hidden_size": 8, "num_layers": 2, "dropout": 0.0}
OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3}


def forecaster(**kwargs) -> SequenceForecaster:
    torch.manual_seed(0)
    model = SequenceForecaster(input_size=2, encoder=ENCODER, optimizer=OPTIMIZER, **kwargs)
    return model.eval()


def sequences(lengths: list[int], seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    series = [torch.randn(length + 1, 2, generator=generator) for length in lengths]
    return [(s[:-1], s[1:]) for s in series]


def squared_errors(model: SequenceForecaster, samples) -> torch.Tensor:
    """Every real step's squared error, each sequence run alone (no padding anywhere)."""
    with torch.no_grad():
        return torch.cat([(model(x[None], None)[0] - y).pow(2).flatten() for x, y in samples])


def test_padded_batch_loss_is_the_mean_over_real_steps_whatever_the_padding_holds() -> None:
    model = forecaster()
    samples = sequences([7, 2, 4])
    batch = pad_collate(samples, pad_targets=True)
    for row, length in enumerate(batch["lengths"].tolist()):
        batch["x"][row, length:] = 1e3  # garbage that must never count
        batch["y"][row, length:] = -1e3
    with torch.no_grad():
        loss = model.shared_step(batch, "train")
    errors = squared_errors(model, samples)
    torch.testing.assert_close(loss, errors.mean())
    # Not the mean of per-sequence means, which would over-weight the short sequence.
    per_sequence = torch.stack([e.mean() for e in errors.split([14, 4, 8])])
    assert not torch.isclose(loss, per_sequence.mean())


def test_mask_limits_loss_and_metrics_to_scored_steps_persistence_included() -> None:
    model = forecaster()
    samples = sequences([5, 3])
    batch = pad_collate(samples, pad_targets=True)
    batch["mask"] = torch.tensor([[0, 1, 0, 0, 1], [0, 0, 1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        loss = model.shared_step(batch, "val")
        preds = model(batch["x"], batch["lengths"])
    scored = batch["mask"]
    error = preds[scored] - batch["y"][scored]
    torch.testing.assert_close(loss, error.pow(2).mean())
    metrics = model.val_metrics.compute()
    torch.testing.assert_close(metrics["val/mse"], error.pow(2).mean())
    torch.testing.assert_close(metrics["val/mae"], error.abs().mean())
    persistence = model.val_persistence.compute()
    naive = batch["x"][scored] - batch["y"][scored]
    torch.testing.assert_close(persistence["val/persistence_mae"], naive.abs().mean())


def test_a_batch_with_no_scored_step_adds_nothing() -> None:
    batch = pad_collate(sequences([5, 3]), pad_targets=True)
    empty = {**batch, "mask": torch.zeros(2, 5, dtype=torch.bool)}
    model, alone = forecaster(), forecaster()
    with torch.no_grad():
        assert model.shared_step(empty, "val") == 0
        model.shared_step(batch, "val")
        alone.shared_step(batch, "val")
    torch.testing.assert_close(model.val_loss_mean.compute(), alone.val_loss_mean.compute())
    torch.testing.assert_close(model.val_metrics.compute(), alone.val_metrics.compute())


def test_epoch_loss_weights_batches_by_real_steps(tmp_path) -> None:
    model = forecaster()
    samples = sequences([9, 9, 2, 2], seed=1)  # two batches: 18 steps, then 4
    loader = DataLoader(samples, batch_size=2, collate_fn=lambda s: pad_collate(s, True))
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (result,) = trainer.validate(model, loader, verbose=False)
    errors = squared_errors(model, samples)
    assert result["val/loss"] == pytest.approx(float(errors.mean()), rel=1e-5)
    assert result["val/mse"] == pytest.approx(float(errors.mean()), rel=1e-5)
    batch_means = (errors[:36].mean() + errors[36:].mean()) / 2
    assert result["val/loss"] != pytest.approx(float(batch_means), rel=1e-3)


def rollout_by_reencoding(model: SequenceForecaster, x: torch.Tensor, horizon: int):
    """The rollout, done the slow way: re-read the whole history (with forecasts appended)
    for every new forecast, carrying no state."""
    history = x[: len(x) - horizon + 1]
    forecasts = []
    with torch.no_grad():
        for _ in range(horizon):
            forecast = model(history[None], None)[0, -1]
            forecasts.append(forecast)
            history = torch.cat([history, forecast[None]])
    return torch.stack(forecasts)


def test_rollout_carries_state_like_reading_the_forecasts_as_inputs() -> None:
    model = forecaster()
    samples = sequences([8, 5, 6])
    batch = pad_collate(samples, pad_targets=True)
    batch["x"][1, 5:] = 1e3  # padding must not leak into the rollout
    forecasts = model.rollout(batch["x"], batch["lengths"], horizon=4)
    assert forecasts.shape == (3, 4, 2)
    for row, (x, _) in enumerate(samples):
        torch.testing.assert_close(forecasts[row], rollout_by_reencoding(model, x, 4))


def test_rollout_of_one_step_is_the_one_step_forecast_of_the_last_step() -> None:
    model = forecaster(rollout_horizon=1)
    samples = sequences([6, 3])
    batch = pad_collate(samples, pad_targets=True)
    with torch.no_grad():
        model.shared_step(batch, "test")
    last = torch.stack([model(x[None], None)[0, -1] - y[-1] for x, y in samples]).detach()
    torch.testing.assert_close(model.test_rollout.compute()["test/rollout_mse"], last.pow(2).mean())


def test_rollout_scores_only_masked_targets_among_the_last_steps() -> None:
    model = forecaster(rollout_horizon=3)
    samples = sequences([6, 6])
    batch = pad_collate(samples, pad_targets=True)
    batch["mask"] = torch.zeros(2, 6, dtype=torch.bool)
    batch["mask"][:, -1] = True  # as sunspots' test windows: only the last step counts
    with torch.no_grad():
        model.shared_step(batch, "test")
        forecasts = model.rollout(batch["x"], batch["lengths"], 3)
    third_step_ahead = forecasts[:, -1] - batch["y"][:, -1]
    torch.testing.assert_close(
        model.test_rollout.compute()["test/rollout_mse"], third_step_ahead.pow(2).mean()
    )


def test_rollout_longer_than_a_sequence_fails_with_the_lengths() -> None:
    model = forecaster()
    batch = pad_collate(sequences([3, 5]), pad_targets=True)
    with pytest.raises(ValueError, match="rollout_horizon=4 needs sequences of at least 4"):
        model.rollout(batch["x"], batch["lengths"], 4)


def test_bidirectional_encoder_is_rejected_on_a_causal_task() -> None:
    with pytest.raises(ValueError, match="bidirectional=true"):
        SequenceForecaster(2, {**ENCODER, "bidirectional": True}, OPTIMIZER)
