"""Many-to-many next-step forecasting, with an autoregressive rollout at validation and test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from seqlab.nn.masking import lengths_on, lengths_to_mask
from seqlab.tasks.base import Row, SequenceTask, channel_columns
from seqlab.tasks.pictures import (
    Picture,
    PictureOptions,
    TestPictures,
    forecast_series_figure,
    forecast_split_figure,
    interleave,
)


class SequenceForecaster(SequenceTask):
    """``x (B, T, C), lengths (B,) -> (B, T, C)``: at each step t, a forecast of step t + 1.

    Batches hold ``y (B, T, C)`` (``y[:, t] = x[:, t + 1]``, the series' next value) and may hold
    ``mask (B, T)``, the steps that are scored (all real steps without it). The loss is the mean
    squared error over scored steps; epoch values weight batches by their scored steps.

    Logged per stage: ``loss``, ``mse``, ``mae``; at val and test also ``persistence_mse`` /
    ``persistence_mae`` (forecasting ``x[t + 1] = x[t]``, on the same steps) and, with
    ``rollout_horizon`` H > 0, ``rollout_mse`` / ``rollout_mae``: each sequence's last H targets
    forecast from its own predictions, fed back as inputs, given only the steps before them
    (those of the H that are scored count).
    """

    causal = True
    per_step = True

    def __init__(
        self,
        input_size: int,
        encoder: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        head: dict[str, Any] | None = None,
        rollout_horizon: int = 0,
    ) -> None:
        super().__init__(encoder, optimizer, scheduler)
        if rollout_horizon < 0:
            raise ValueError(f"rollout_horizon={rollout_horizon}: must be >= 0 (0: no rollout)")
        self.save_hyperparameters()
        self.rollout_horizon = rollout_horizon
        # The forecast has the input's channels, so it can be fed back in the rollout.
        self.build_network(input_size, input_size, encoder, head)
        metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})
        self.set_metrics(metrics)
        self.val_persistence = metrics.clone(prefix="val/persistence_")
        self.test_persistence = metrics.clone(prefix="test/persistence_")
        self.val_rollout = metrics.clone(prefix="val/rollout_")
        self.test_rollout = metrics.clone(prefix="test/rollout_")

    def forward(
        self, x: Tensor, lengths: Tensor | None, state: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        return self.head(self.encoder(x, lengths, state).outputs)

    def shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        x, lengths, target = batch["x"], batch["lengths"], batch["y"]
        encoded = self.encoder(x, lengths)
        preds = self.head(encoded.outputs)
        scored = self.scored_steps(batch, self.real_steps(encoded, lengths))
        # Each boolean index is a pass over the batch (and a host sync on a GPU): taken once.
        scored_preds, scored_target = preds[scored], target[scored]
        # Mean over scored values; a batch with none scores 0 (see SequenceTagger).
        loss = F.mse_loss(scored_preds.float(), scored_target.float(), reduction="sum")
        loss = loss / max(scored_preds.numel(), 1)
        loss = self.reduce_loss(stage, loss, weight=len(scored_target))
        self._update(stage, "metrics", scored_preds.detach(), scored_target)
        if stage != "train":
            # The persistence forecast of step t + 1 is step t itself.
            self._update(stage, "persistence", x[scored], target[scored])
            if self.rollout_horizon:
                self._log_rollout(stage, x, lengths, target, scored)
        return loss

    @staticmethod
    def scored_steps(batch: dict[str, Tensor], real: Tensor | None = None) -> Tensor:
        """(B, T) bool on the targets' device: real (unpadded) steps that the batch's ``mask``
        (if any) scores. ``real``: the real steps, if at hand (the encoder's mask), else they
        are made from the batch's lengths."""
        target = batch["y"]
        scored = real
        if scored is None:
            scored = lengths_to_mask(lengths_on(batch["lengths"], target.device), target.size(1))
        if "mask" in batch:
            scored = scored & batch["mask"].bool()
        return scored

    @torch.no_grad()
    def rollout(self, x: Tensor, lengths: Tensor, horizon: int) -> Tensor:
        """(B, T, C), (B,) -> (B, horizon, C): forecasts of each sequence's last ``horizon``
        targets, i.e. of ``y[:, L - horizon:L]`` (L = its length), each from the steps before
        it and the forecasts in between."""
        if int(lengths.min()) < horizon:
            raise ValueError(
                f"rollout_horizon={horizon} needs sequences of at least {horizon} steps; the "
                f"shortest here has {int(lengths.min())}"
            )
        # The first forecast reads x up to step L - horizon, whose next value is y[L - horizon].
        context = lengths - horizon + 1
        encoded = self.encoder(x[:, : int(context.max())], context)
        last_step = lengths_on(context - 1, x.device)
        last = encoded.outputs[torch.arange(x.size(0), device=x.device), last_step]
        forecast, state = self.head(last), encoded.state
        forecasts = [forecast]
        for _ in range(horizon - 1):
            encoded = self.encoder(forecast.unsqueeze(1), None, state)
            forecast, state = self.head(encoded.outputs[:, 0]), encoded.state
            forecasts.append(forecast)
        return torch.stack(forecasts, dim=1)

    def _log_rollout(
        self, stage: str, x: Tensor, lengths: Tensor, target: Tensor, scored: Tensor
    ) -> None:
        horizon = self.rollout_horizon
        forecasts = self.rollout(x, lengths, horizon)
        first = lengths_on(lengths - horizon, x.device)
        steps = first.unsqueeze(1) + torch.arange(horizon, device=x.device)
        rows = torch.arange(x.size(0), device=x.device).unsqueeze(1)
        keep = scored[rows, steps]
        self._update(stage, "rollout", forecasts[keep], target[rows, steps][keep])

    def _update(self, stage: str, kind: str, preds: Tensor, target: Tensor) -> None:
        """Update and log ``<stage>_<kind>`` (kind: metrics, persistence or rollout)."""
        metrics = getattr(self, f"{stage}_{kind}")
        metrics.update(preds.float().flatten(), target.float().flatten())
        self.log_epoch(stage, f"{stage}_{kind}", metrics, prog_bar=kind == "metrics")

    def prediction_columns(self, class_names: Sequence[str] = ()) -> list[str]:
        channels = self.hparams["input_size"]
        values = [*channel_columns("target", channels), *channel_columns("pred", channels)]
        return ["step", "scored", *values]

    def prediction_rows(
        self, batch: dict[str, Tensor], output: Tensor, i: int, class_names: Sequence[str] = ()
    ) -> list[Row]:
        """One row per real step: whether it is scored, the target's values, the forecast's."""
        scored = self.scored_steps(batch)[i]
        rows: list[Row] = []
        for t in range(int(batch["lengths"][i])):
            values = batch["y"][i, t].float().reshape(-1).tolist() + output[i, t].tolist()
            rows.append([t, int(scored[t]), *values])
        return rows

    def test_pictures(self, options: PictureOptions) -> TestPictures | None:
        return ForecastPictures(self, options.num_series)


class ForecastPictures(TestPictures):
    """``forecast_vs_truth``: a few test series with their one-step forecasts (and the rollout,
    if the task has one); for data that scores one step per series (sunspots: one year each),
    every scored step of the test split in order instead, with the numbers behind the picture
    in ``forecast_vs_truth.csv`` (in the data's normalised units)."""

    def __init__(self, model: SequenceForecaster, num_series: int) -> None:
        self.model = model
        self.num_series = num_series
        self.series: list[dict[str, np.ndarray]] = []
        self.scored: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.one_step_per_series = True

    def update(self, trainer: L.Trainer, batch: dict[str, Tensor]) -> None:
        """The batch's scored steps (every rank: its share of the split); on rank 0 whole
        series too, up to ``num_series``."""
        model = self.model
        x, lengths, target = batch["x"], batch["lengths"], batch["y"]
        forecast = model(x, lengths)
        scored = model.scored_steps(batch)
        per_series = scored.sum(1)
        self.one_step_per_series &= bool((per_series == 1).all())
        if self.one_step_per_series:
            self.scored.append(
                (
                    target[scored][:, 0].float().cpu().numpy(),
                    forecast[scored][:, 0].float().cpu().numpy(),
                    x[scored][:, 0].float().cpu().numpy(),
                )
            )
        whole = trainer.is_global_zero
        take = min(self.num_series - len(self.series), x.size(0)) if whole else 0
        if take <= 0:
            return
        rollout = None
        if model.rollout_horizon and int(lengths[:take].min()) >= model.rollout_horizon:
            rollout = model.rollout(x[:take], lengths[:take], model.rollout_horizon)
        for i in range(take):
            n = int(lengths[i])
            series = {
                "target": target[i, :n, 0].float().cpu().numpy(),
                "forecast": forecast[i, :n, 0].float().cpu().numpy(),
                "scored": scored[i, :n].cpu().numpy(),
            }
            if rollout is not None:
                series["rollout"] = rollout[i, :, 0].float().cpu().numpy()
            self.series.append(series)

    def epoch_end(self, trainer: L.Trainer) -> list[Picture]:
        """Under DDP each process forecast its own share of the test split, rank r the samples
        r, r + W, r + 2W, ... (seqlab's evaluation sampler): rank 0 gets every share and puts
        the scored steps back in the split's order."""
        if trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return []
        local = [np.concatenate(a) for a in zip(*self.scored, strict=True)] or [np.empty(0)] * 3
        shares: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(shares, (self.one_step_per_series, local))
        self.one_step_per_series = all(one for one, _ in shares)
        self.scored = []
        if trainer.is_global_zero and self.one_step_per_series:
            target, forecast, persistence = (
                interleave([share[k] for _, share in shares]) for k in range(3)
            )
            self.scored = [(target, forecast, persistence)]
        return []

    def test_end(self, trainer: L.Trainer) -> list[Picture]:
        if self.scored and self.one_step_per_series:
            target, forecast, persistence = (
                np.concatenate(a) for a in zip(*self.scored, strict=True)
            )
            rows = ["test_sample,target,forecast,persistence"] + [
                f"{i},{t:.6g},{f:.6g},{p:.6g}"
                for i, (t, f, p) in enumerate(zip(target, forecast, persistence, strict=True))
            ]
            figure = forecast_split_figure(target, forecast, persistence)
            csv = {"forecast_vs_truth.csv": "\n".join(rows) + "\n"}
            return [Picture("forecast_vs_truth", figure, files=csv)]
        if self.series:
            return [Picture("forecast_vs_truth", forecast_series_figure(self.series))]
        return []
