"""Many-to-many next-step forecasting, with an autoregressive rollout at validation and test."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from seqlab.nn.masking import lengths_to_mask
from seqlab.tasks.base import SequenceTask


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
        scored = self.scored_steps(batch)
        preds = self(x, lengths)
        scored_preds = preds[scored].float()
        # Mean over scored values; a batch with none scores 0 (see SequenceTagger).
        loss = F.mse_loss(scored_preds, target[scored].float(), reduction="sum")
        loss = loss / max(scored_preds.numel(), 1)
        loss = self.reduce_loss(stage, loss, weight=int(scored.sum()))
        self._update(stage, "metrics", preds[scored].detach(), target[scored])
        if stage != "train":
            # The persistence forecast of step t + 1 is step t itself.
            self._update(stage, "persistence", x[scored], target[scored])
            if self.rollout_horizon:
                self._log_rollout(stage, x, lengths, target, scored)
        return loss

    @staticmethod
    def scored_steps(batch: dict[str, Tensor]) -> Tensor:
        """(B, T) bool: real (unpadded) steps that the batch's ``mask`` (if any) scores."""
        scored = lengths_to_mask(batch["lengths"], batch["y"].size(1))
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
        last = encoded.outputs[torch.arange(x.size(0), device=x.device), context - 1]
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
        steps = (lengths - horizon).unsqueeze(1) + torch.arange(horizon, device=x.device)
        rows = torch.arange(x.size(0), device=x.device).unsqueeze(1)
        keep = scored[rows, steps]
        self._update(stage, "rollout", forecasts[keep], target[rows, steps][keep])

    def _update(self, stage: str, kind: str, preds: Tensor, target: Tensor) -> None:
        """Update and log ``<stage>_<kind>`` (kind: metrics, persistence or rollout)."""
        metrics = getattr(self, f"{stage}_{kind}")
        metrics.update(preds.float().flatten(), target.float().flatten())
        self.log_epoch(stage, f"{stage}_{kind}", metrics, prog_bar=kind == "metrics")
