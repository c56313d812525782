"""Pictures of a run, as PNG files in ``<run>/plots/`` and, with a WandbLogger, in wandb.

- ``learning_curves.png`` at the end of every fit: the loss and each metric per epoch, train
  and validation, from what the task logged (``trainer.callback_metrics``), so it works with
  any logger or none.
- after testing, the task's own pictures, which its ``test_pictures`` hook collects and draws
  (`seqlab.tasks.pictures`; drawn here, from the test split):

  - ``confusion_matrix.png`` for a classifier;
  - ``forecast_vs_truth.png`` for a forecaster: a few test series with their one-step
    forecasts (and the rollout, if the task has one); for data that scores one step per series
    (sunspots: one year each), every scored step of the test split in order, and the numbers
    behind it in ``forecast_vs_truth.csv``;
  - ``samples.png`` / ``samples.txt`` for a language model: text sampled from prompts taken
    from the test text (a ``wandb.Table`` too).

Only rank 0 writes. Matplotlib draws on its Agg canvas directly (no pyplot, no GUI backend, no
global state). Test-time plots run the model once more on the test batches they need; the
test metrics are the task's own and are not touched.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from seqlab.reporting import atomic_write
from seqlab.tasks import SequenceTask
from seqlab.tasks.pictures import Picture, PictureOptions, TestPictures

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
        # What the task under test collects for its pictures (its test_pictures hook).
        self._pictures: TestPictures | None = None

    @property
    def options(self) -> PictureOptions:
        """The settings a task's test pictures read."""
        return PictureOptions(
            num_series=self.num_series,
            num_samples=self.num_samples,
            sample_length=self.sample_length,
            sample_temperature=self.sample_temperature,
            prompt_length=self.prompt_length,
        )

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

    # ---- test-time plots: the task's own (its ``test_pictures`` hook)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pictures = None
        if isinstance(pl_module, SequenceTask):  # a seqlab task: the ones with pictures
            self._pictures = pl_module.test_pictures(self.options)

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
        if self._pictures is not None:
            self._pictures.update(trainer, batch)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pictures is not None:
            for picture in self._pictures.epoch_end(trainer):  # every rank: syncs go here
                if trainer.is_global_zero:
                    self._publish_picture(trainer, picture)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pictures, self._pictures = self._pictures, None
        if pictures is not None and trainer.is_global_zero:
            for picture in pictures.test_end(trainer):
                self._publish_picture(trainer, picture)

    def _publish_picture(self, trainer: L.Trainer, picture: Picture) -> None:
        """The picture's PNG, the text files beside it and its wandb table, if any."""
        self._publish(trainer, picture.figure, picture.name)
        for name, text in picture.files.items():
            atomic_write(self._dir(trainer) / name, text)
        if picture.table is not None:
            columns, rows = picture.table
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_table(key=picture.name, columns=columns, data=rows)
