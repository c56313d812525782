"""Pictures of a run, as PNG files in ``<run>/plots/`` and, with a WandbLogger, in wandb.

- ``learning_curves.png`` at the end of every fit: the loss and each metric per epoch, train
  and validation, from what the task logged (``trainer.callback_metrics``), so it works with
  any logger or none.
- ``confusion_matrix.png`` after testing a classifier (test split).
- ``forecast_vs_truth.png`` after testing a forecaster: a few test series with their one-step
  forecasts (and the rollout, if the task has one); for data that scores one step per series
  (sunspots: one year each), every scored step of the test split in order.
- ``samples.png`` / ``samples.txt`` after testing a language model: text sampled from prompts
  taken from the test text (a ``wandb.Table`` too).

Only rank 0 writes. Matplotlib draws on its Agg canvas directly (no pyplot, no GUI backend, no
global state). Test-time plots run the model once more on the test batches they need; the
test metrics are the task's own and are not touched.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from seqlab.nn.masking import lengths_to_mask
from seqlab.reporting import atomic_write
from seqlab.tasks import LanguageModel, SequenceClassifier, SequenceForecaster

log = logging.getLogger(__name__)

#: epoch -> {"train/loss": 0.5, "val/acc": 0.9, ...}
History = dict[int, dict[str, float]]


# ----------------------------------------------------------------------------------- drawing


def save_figure(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)
    return path


def learning_curves_figure(history: History) -> Figure:
    """One panel per quantity the model logs for training (loss first), train and val lines;
    validation-only variants of a quantity (``val/persistence_mse``) join its panel dashed."""
    epochs = sorted(history)
    keys = sorted({key for values in history.values() for key in values})
    names = sorted({k.split("/", 1)[1] for k in keys if k.startswith("train/")})
    names = sorted(names, key=lambda name: name != "loss")
    val_only = [k.split("/", 1)[1] for k in keys if k.startswith("val/")]
    val_only = [name for name in val_only if name not in names]
    panels: dict[str, list[str]] = {name: [f"train/{name}", f"val/{name}"] for name in names}
    for name in val_only:
        base = name.split("_", 1)[-1]
        panels.setdefault(base if base in panels else name, []).append(f"val/{name}")

    columns = min(3, max(1, len(panels)))
    rows = math.ceil(len(panels) / columns) if panels else 1
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows))
    for i, (name, panel_keys) in enumerate(panels.items()):
        ax = figure.add_subplot(rows, columns, i + 1)
        for key in panel_keys:
            points = [(e, history[e][key]) for e in epochs if key in history[e]]
            if not points:
                continue
            x, y = zip(*points, strict=True)
            dashed = key.startswith("val/") and key != f"val/{name}"
            ax.plot(x, y, "--" if dashed else "-", marker="." if len(x) < 30 else None, label=key)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    figure.suptitle("learning curves")
    figure.tight_layout()
    return figure


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Counts in the cells, colour by the share of the true class (each row sums to 1)."""
    n = len(matrix)
    rows = matrix.sum(1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    size = min(12.0, 2.5 + 0.5 * n)
    figure = Figure(figsize=(size + 1, size))
    ax = figure.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                color = "white" if shares[i, j] > 0.5 else "black"
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=color)
        ax.set_xticks(range(n), class_names, rotation=45 if n > 10 else 0)
        ax.set_yticks(range(n), class_names)
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"confusion matrix (test), accuracy {accuracy:.4f}")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    figure.tight_layout()
    return figure


def forecast_series_figure(series: list[dict[str, np.ndarray]]) -> Figure:
    """One panel per series: target and one-step forecast over the real steps (first channel),
    scored steps marked, the rollout (if any) over its last steps."""
    figure = Figure(figsize=(9, 2.4 * len(series)))
    for i, s in enumerate(series):
        ax = figure.add_subplot(len(series), 1, i + 1)
        steps = np.arange(len(s["target"]))
        ax.plot(steps, s["target"], color="black", lw=1.2, label="truth")
        ax.plot(steps, s["forecast"], color="tab:blue", lw=1.0, label="one-step forecast")
        if not s["scored"].all():
            ax.scatter(steps[s["scored"]], s["forecast"][s["scored"]], s=12, label="scored")
        if "rollout" in s:
            start = len(steps) - len(s["rollout"])
            ax.plot(steps[start:], s["rollout"], color="tab:red", lw=1.0, label="rollout")
        ax.set_ylabel(f"series {i}")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize="small", ncol=4)
    figure.axes[-1].set_xlabel("step (target index)")
    figure.suptitle("forecast vs truth (test)")
    figure.tight_layout()
    return figure


def forecast_split_figure(
    target: np.ndarray, forecast: np.ndarray, persistence: np.ndarray
) -> Figure:
    """Every scored step of the split in order, for data that scores one step per series."""
    figure = Figure(figsize=(9, 3.2))
    ax = figure.add_subplot()
    ax.plot(target, color="black", lw=1.2, marker=".", label="truth")
    ax.plot(forecast, color="tab:blue", lw=1.0, marker=".", label="forecast")
    ax.plot(persistence, color="gray", lw=0.8, ls="--", label="persistence")
    mae = float(np.abs(forecast - target).mean()) if len(target) else float("nan")
    ax.set_title(f"forecast vs truth, every scored test step in order (MAE {mae:.4f})")
    ax.set_xlabel("test sample")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.tight_layout()
    return figure


def interleave(shares: list[np.ndarray]) -> np.ndarray:
    """Strided shares back in order: share r holds items r, r + W, r + 2W, ... of W shares."""
    out = np.empty(sum(len(share) for share in shares))
    for rank, share in enumerate(shares):
        out[rank :: len(shares)] = share
    return out


def samples_figure(rows: list[tuple[str, str]], width: int = 100) -> Figure:
    """A two-column table, prompt and sampled text, wrapped, in a monospace font."""
    blocks = [
        (textwrap.fill(prompt, 24), textwrap.fill(sample, width, replace_whitespace=True))
        for prompt, sample in rows
    ]
    heights = [max(p.count("\n"), s.count("\n")) + 2 for p, s in blocks]
    figure = Figure(figsize=(12, 0.5 + 0.17 * sum(heights)))
    ax = figure.add_subplot()
    ax.axis("off")
    total = sum(heights) + 1
    y = 1.0 - 1.0 / total
    ax.text(0.0, y, "prompt", weight="bold", va="top", transform=ax.transAxes)
    ax.text(0.22, y, "sample", weight="bold", va="top", transform=ax.transAxes)
    for (prompt, sample), height in zip(blocks, heights, strict=True):
        y -= 1.0 / total
        for left, text in ((0.0, prompt), (0.22, sample)):
            ax.text(
                left,
                y,
                text,
                family="monospace",
                fontsize=8,
                va="top",
                transform=ax.transAxes,
                parse_math=False,
            )
        y -= (height - 1) / total
    figure.suptitle("generated samples")
    return figure


# ---------------------------------------------------------------------------------- callback


class PlotCallback(Callback):
    """Writes the run's plots into ``dirpath`` (``<run>/plots`` in ``configs/callbacks``).

    ``num_series``: forecast series shown; ``num_samples``, ``sample_length``,
    ``sample_temperature``, ``prompt_length``: the language model's sample table.
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        num_series: int = 4,
        num_samples: int = 3,
        sample_length: int = 200,
        sample_temperature: float = 0.8,
        prompt_length: int = 40,
    ) -> None:
        super().__init__()
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.num_series = num_series
        self.num_samples = num_samples
        self.sample_length = sample_length
        self.sample_temperature = sample_temperature
        self.prompt_length = prompt_length
        self.history: History = {}
        self._confusion: MulticlassConfusionMatrix | None = None
        self._series: list[dict[str, np.ndarray]] = []
        self._scored: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._one_step_per_series = True
        self._prompts: list[str] = []

    # Saved in checkpoints, so a resumed run draws its curves from the first epoch.
    def state_dict(self) -> dict[str, Any]:
        return {"history": {e: dict(v) for e, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {int(e): dict(v) for e, v in state_dict.get("history", {}).items()}

    def _dir(self, trainer: L.Trainer) -> Path:
        return (
            self.dirpath if self.dirpath is not None else Path(trainer.default_root_dir) / "plots"
        )

    def _publish(self, trainer: L.Trainer, figure: Figure, name: str) -> Path:
        path = save_figure(figure, self._dir(trainer) / f"{name}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"plots/{name}", images=[str(path)])
        log.info("plot saved to %s", path)
        return path

    # ---- learning curves

    def _record(self, trainer: L.Trainer, prefix: str) -> None:
        values = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith(prefix) and not key.endswith("_step") and value.numel() == 1
        }
        if values:
            self.history.setdefault(trainer.current_epoch, {}).update(values)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, "val/")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, "train/")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.history:
            self._publish(trainer, learning_curves_figure(self.history), "learning_curves")

    # ---- test-time plots

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._series, self._scored, self._prompts = [], [], []
        self._one_step_per_series = True
        self._confusion = None
        if isinstance(pl_module, SequenceClassifier):
            num_classes = int(pl_module.hparams["num_classes"])
            self._confusion = MulticlassConfusionMatrix(num_classes).to(pl_module.device)

    @torch.no_grad()
    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._confusion is not None:
            logits = pl_module(batch["x"], batch["lengths"])
            self._confusion.update(logits.argmax(-1), batch["y"])
        elif isinstance(pl_module, SequenceForecaster):  # every rank: its share of the split
            self._collect_forecasts(pl_module, batch, whole=trainer.is_global_zero)
        elif isinstance(pl_module, LanguageModel) and trainer.is_global_zero:
            missing = self.num_samples - len(self._prompts)
            for ids in batch["x"][: max(missing, 0)]:
                self._prompts.append(pl_module.vocabulary.decode(ids[: self.prompt_length]))

    def _collect_forecasts(
        self, model: SequenceForecaster, batch: dict[str, Tensor], whole: bool
    ) -> None:
        """The batch's scored steps; with ``whole``, whole series too, up to ``num_series``."""
        x, lengths, target = batch["x"], batch["lengths"], batch["y"]
        forecast = model(x, lengths)
        scored = model.scored_steps(batch)
        per_series = scored.sum(1)
        self._one_step_per_series &= bool((per_series == 1).all())
        if self._one_step_per_series:
            self._scored.append(
                (
                    target[scored][:, 0].float().cpu().numpy(),
                    forecast[scored][:, 0].float().cpu().numpy(),
                    x[scored][:, 0].float().cpu().numpy(),
                )
            )
        take = min(self.num_series - len(self._series), x.size(0)) if whole else 0
        if take <= 0:
            return
        rollout = None
        if model.rollout_horizon and int(lengths[:take].min()) >= model.rollout_horizon:
            rollout = model.rollout(x[:take], lengths[:take], model.rollout_horizon)
        real = lengths_to_mask(lengths, x.size(1))
        for i in range(take):
            n = int(lengths[i])
            series = {
                "target": target[i, :n, 0].float().cpu().numpy(),
                "forecast": forecast[i, :n, 0].float().cpu().numpy(),
                "scored": (scored[i] & real[i])[:n].cpu().numpy(),
            }
            if rollout is not None:
                series["rollout"] = rollout[i, :, 0].float().cpu().numpy()
            self._series.append(series)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if isinstance(pl_module, SequenceForecaster):
            self._gather_scored(trainer)
        if self._confusion is None:
            return
        matrix = self._confusion.compute().cpu().numpy()  # every rank: it syncs under DDP
        self._confusion = None
        if trainer.is_global_zero:
            names = list(getattr(getattr(trainer, "datamodule", None), "class_names", None) or [])
            if len(names) != len(matrix):
                names = [str(i) for i in range(len(matrix))]
            self._publish(trainer, confusion_matrix_figure(matrix, names), "confusion_matrix")

    def _gather_scored(self, trainer: L.Trainer) -> None:
        """Under DDP each process forecast its own share of the test split, rank r the samples
        r, r + W, r + 2W, ... (seqlab's evaluation sampler): rank 0 gets every share and puts
        the scored steps back in the split's order."""
        if trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return
        local = [np.concatenate(a) for a in zip(*self._scored, strict=True)] or [np.empty(0)] * 3
        shares: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(shares, (self._one_step_per_series, local))
        self._one_step_per_series = all(one for one, _ in shares)
        self._scored = []
        if trainer.is_global_zero and self._one_step_per_series:
            target, forecast, persistence = (
                interleave([share[k] for _, share in shares]) for k in range(3)
            )
            self._scored = [(target, forecast, persistence)]

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if self._scored and self._one_step_per_series:
            target, forecast, persistence = (
                np.concatenate(a) for a in zip(*self._scored, strict=True)
            )
            self._publish(
                trainer, forecast_split_figure(target, forecast, persistence), "forecast_vs_truth"
            )
            # The numbers behind the picture (in the data's normalised units).
            rows = ["test_sample,target,forecast,persistence"] + [
                f"{i},{t:.6g},{f:.6g},{p:.6g}"
                for i, (t, f, p) in enumerate(zip(target, forecast, persistence, strict=True))
            ]
            atomic_write(self._dir(trainer) / "forecast_vs_truth.csv", "\n".join(rows) + "\n")
        elif self._series:
            self._publish(trainer, forecast_series_figure(self._series), "forecast_vs_truth")
        if isinstance(pl_module, LanguageModel) and self._prompts:
            self._publish_samples(trainer, pl_module)
        self._series, self._scored = [], []

    def _publish_samples(self, trainer: L.Trainer, model: LanguageModel) -> None:
        rows = []
        for seed, prompt in enumerate(self._prompts):
            text = model.generate(
                prompt, self.sample_length, temperature=self.sample_temperature, seed=seed
            )
            rows.append((prompt, text[len(prompt) :]))
        self._publish(trainer, samples_figure(rows), "samples")
        lines = [f"# temperature {self.sample_temperature}, {self.sample_length} characters"]
        for prompt, sample in rows:
            lines += ["", f"## prompt: {prompt!r}", prompt + sample]
        path = self._dir(trainer) / "samples.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(
                    key="samples", columns=["prompt", "sample"], data=[list(r) for r in rows]
                )
