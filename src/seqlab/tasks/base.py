"""What every seqlab task shares: the encoder built from config, optimisers, logging."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, ClassVar, Literal, cast

import lightning as L
import torch
from lightning.fabric.utilities.types import _MAP_LOCATION_TYPE, _PATH
from lightning.pytorch.utilities.model_helpers import _restricted_classmethod
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MeanMetric, Metric, MetricCollection

from seqlab.errors import ConfigError, UserError
from seqlab.nn.encoder import EncoderOutput
from seqlab.nn.heads import MLPHead
from seqlab.nn.masking import lengths_on, lengths_to_mask
from seqlab.nn.pooling import POOLING_KINDS
from seqlab.targets import build, target_problems
from seqlab.tasks.pictures import PictureOptions, TestPictures

if TYPE_CHECKING:
    from typing_extensions import Self

DEFAULT_ENCODER = "seqlab.nn.LSTMEncoder"

# Lightning notes that SequenceTask.transfer_batch_to_device is used beside a data module:
# it is meant to be (tests/conftest.py silences the note in tests too).
warnings.filterwarnings("ignore", ".*overridden `transfer_batch_to_device` in `LightningModule`")

#: One row of ``scripts/predict.py``'s CSV.
Row = list[Any]


def channel_columns(prefix: str, n: int) -> list[str]:
    """CSV column names of ``n`` values: ``prefix`` alone for one, else ``prefix_0``, ..."""
    return [prefix] if n == 1 else [f"{prefix}_{k}" for k in range(n)]


def build_encoder(config: dict[str, Any], input_size: int) -> nn.Module:
    """The encoder of ``config`` (``_target_``: one of ``seqlab.nn.ENCODERS``, by default
    seqlab's LSTM encoder; nothing nested is built), given ``input_size``."""
    config = {"_target_": DEFAULT_ENCODER, **config}
    return cast(nn.Module, build(config, "model.encoder", input_size=input_size))


def lookahead_problems(encoder: Mapping[str, Any], task: str) -> Iterator[str]:
    """Encoder options that read later steps, which a next-step (causal) ``task`` forbids."""
    if encoder.get("bidirectional"):
        yield (
            f"model.encoder.bidirectional=true: {task} predicts the next step and a "
            "bidirectional encoder would see the future; use model=lstm"
        )
    if encoder.get("conv_channels"):
        yield (
            f"model.encoder.conv_channels={list(encoder['conv_channels'])}: {task} predicts the "
            "next step and the convolutions look ahead; use model.encoder.conv_channels=[]"
        )


def pooling_problems(encoder: Mapping[str, Any], task: str) -> Iterator[str]:
    """A task that reads one vector per sequence needs the encoder to pool one."""
    if encoder.get("pooling", "last") in (None, "none"):
        yield (
            f"model.encoder.pooling=null: {task} reads one vector per sequence; allowed: "
            f"{', '.join(POOLING_KINDS)}"
        )


class SequenceTask(L.LightningModule):
    """Base LightningModule: an encoder, a head, a loss, and metrics per stage.

    Hyperparameters are plain dicts from the Hydra config, saved in every checkpoint, so
    ``Task.load_from_checkpoint(path)`` rebuilds the model with no config at hand.
    Subclasses implement ``forward`` and ``shared_step(batch, stage) -> loss``.
    """

    #: True for tasks where step t may only see steps <= t (e.g. next-character prediction).
    causal: bool = False
    #: True for many-to-many tasks: the head reads every step's output, nothing is pooled.
    per_step: bool = False
    #: What the task's exported model takes (`seqlab.export`): "padded", a padded batch
    #: ``x (B, T, D)`` and ``lengths (B,)``, and returns ``forward(x, lengths)``; "ids", token
    #: ids ``x (B, T)`` alone, and returns the first output of ``forward(x)``.
    export_kind: ClassVar[Literal["padded", "ids"]] = "padded"

    # Set by build_network and set_metrics.
    encoder: nn.Module
    head: MLPHead
    train_metrics: MetricCollection
    val_metrics: MetricCollection
    test_metrics: MetricCollection

    def __init__(
        self,
        encoder: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Per-stage running means of the loss, weighted by items and synced across processes.
        self.train_loss_mean = MeanMetric()
        self.val_loss_mean = MeanMetric()
        self.test_loss_mean = MeanMetric()
        #: This training step's loss (detached), for ``train/loss_step`` and callbacks that
        #: report it (the non-finite loss guard); None before the first step.
        self.step_loss: Tensor | None = None
        # Settings may come from a checkpoint: what they name is checked before anything is built.
        settings = {"encoder": encoder, "optimizer": optimizer, "scheduler": scheduler}
        problems = list(target_problems(settings))
        problems += self.encoder_problems(encoder, "this task")
        if problems:
            raise ConfigError(*problems)

    #: Attributes set at every training step that are never parameters, modules or buffers:
    #: Lightning sets ``_current_fx_name`` around each hook it calls (about 44 times a step),
    #: the task sets ``step_loss``. `__setattr__` stores them without nn.Module's checks.
    _PLAIN_ATTRIBUTES: ClassVar[frozenset[str]] = frozenset({"_current_fx_name", "step_loss"})

    def __setattr__(self, name: str, value: Any) -> None:
        """nn.Module's, except for `_PLAIN_ATTRIBUTES`, which go straight to the instance's
        dict: nn.Module's checks (is it a Parameter, a Module, a buffer?) cost about 3 us a
        call, some 0.13 ms of every training step (`docs/speed.md`)."""
        if name in self._PLAIN_ATTRIBUTES:
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)

    @classmethod
    def encoder_problems(cls, encoder: Mapping[str, Any], task: str) -> list[str]:
        """What this task needs of an encoder's settings that they do not give, one line each
        (``task``: how the lines name it). Asked before training by the config checks and again
        when the task is built."""
        problems: list[str] = []
        if cls.causal:
            problems += lookahead_problems(encoder, task)
        if not cls.per_step:
            problems += pooling_problems(encoder, task)
        return problems

    @_restricted_classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: _PATH | IO,
        map_location: _MAP_LOCATION_TYPE = None,
        hparams_file: _PATH | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> Self:
        """Lightning's, with settings that name a class not allowed (``seqlab.targets``)
        refused before anything is built, naming the file they came from."""
        try:
            return super().load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs
            )
        except ConfigError as error:
            source = (
                f"hparams_file={hparams_file}"
                if hparams_file
                else f"checkpoint_path={checkpoint_path}"
            )
            raise ConfigError(*(f"{source}: {problem}" for problem in error.problems)) from None

    def build_network(
        self,
        input_size: int,
        output_size: int,
        encoder: dict[str, Any],
        head: dict[str, Any] | None,
    ) -> None:
        """``self.encoder`` from its config and ``self.head`` on top of it (on every step's
        output for ``per_step`` tasks, whose encoder then pools nothing)."""
        problems = list(target_problems({"head": head}))
        if problems:
            raise ConfigError(*problems)
        if self.per_step:
            encoder = {**encoder, "pooling": None}
        self.encoder = build_encoder(encoder, input_size)
        encoder_size = cast(int, self.encoder.output_size)
        self.head = MLPHead(encoder_size, output_size, **(head or {}))

    def set_metrics(self, metrics: MetricCollection) -> None:
        """One clone of ``metrics`` per stage (``train/acc``, ``val/acc``, ...), registered as
        ``<stage>_metrics`` so it moves with the module and syncs under DDP; states never mix."""
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_metrics", metrics.clone(prefix=f"{stage}/"))

    def log_metrics(self, stage: str, preds: Tensor, target: Tensor) -> None:
        """Update ``stage``'s metric collection and log it per epoch (in the bar for val/test)."""
        if not target.numel():  # nothing scored in this batch (torchmetrics refuses empty input)
            return
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(preds.detach(), target)
        self.log_epoch(stage, f"{stage}_metrics", metrics, prog_bar=stage != "train")

    def log_epoch(
        self, stage: str, name: str, metric: Metric | MetricCollection, prog_bar: bool = False
    ) -> None:
        """Log a metric object's value for the epoch (a collection logs each of its metrics).

        Validation and test log it at every step. Training logs it at the epoch's last batch
        only: each ``self.log`` call costs Lightning 2.6 about half a millisecond of Python,
        which a training step should not pay for a value read once an epoch. The metric is
        updated at every step all the same, so the epoch's value is the same, and callbacks
        see it at ``on_train_epoch_end`` as before.
        """
        if stage == "train" and self._trainer is not None and not self._last_train_batch():
            return
        if isinstance(metric, MetricCollection):
            self.log_dict(metric, on_step=False, on_epoch=True, prog_bar=prog_bar)
        else:
            self.log(name, metric, on_step=False, on_epoch=True, prog_bar=prog_bar)

    def _last_train_batch(self) -> bool:
        return bool(self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)

    def configure_optimizers(self) -> Any:
        optimizer = build(self.hparams["optimizer"], "model.optimizer", params=self.parameters())
        if not self.hparams.get("scheduler"):
            return optimizer
        scheduler = build(self.hparams["scheduler"], "model.scheduler", optimizer=optimizer)
        config = {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"}
        if isinstance(scheduler, ReduceLROnPlateau) and self._trainer is not None:
            # It reads val/loss, which exists only after the epochs that validate.
            config["frequency"] = self.trainer.check_val_every_n_epoch or 1
        return {"optimizer": optimizer, "lr_scheduler": config}

    def reduce_loss(self, stage: str, loss: Tensor, weight: int) -> Tensor:
        """Log ``loss``, the mean over this batch's ``weight`` items (samples, steps or tokens),
        and return what to optimise.

        ``stage/loss`` per epoch is the mean over every item of the epoch on every process,
        not a mean of batch means, so short batches count for what they hold. Under DDP the
        returned training loss is rescaled by ``weight * world_size / total weight``: DDP
        averages gradients over processes, and this makes that average the gradient of the
        global per-item mean, whatever share of the items each process holds.
        """
        mean = getattr(self, f"{stage}_loss_mean", None)
        if mean is None:  # predict or a custom stage: nothing to aggregate
            return loss
        mean.update(loss.detach().float(), weight)
        self.log_epoch(stage, f"{stage}/loss", mean, prog_bar=True)
        if stage != "train":
            return loss
        self.step_loss = loss.detach()
        if self._trainer is not None and self.trainer.world_size > 1:
            local = torch.tensor(float(weight), device=loss.device)
            total = self.trainer.strategy.reduce(local.clone(), reduce_op="sum")
            loss = loss * (local * self.trainer.world_size / total)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Log ``train/loss_step`` on the steps Lightning writes to the loggers, not on every
        step: a ``self.log`` call costs Lightning about 0.4 ms of Python, and a value logged on
        another step is never written (it would only be overwritten). Callbacks that stop
        training have run by now, so a stop's last step is written too."""
        if self.step_loss is not None and self._writes_step_logs():
            self.log("train/loss_step", self.step_loss, on_step=True, on_epoch=False)

    def _writes_step_logs(self) -> bool:
        """Whether Lightning writes this training step's logged values (every
        ``trainer.log_every_n_steps`` steps, at a stop, in a ``fast_dev_run``). Where its
        private test of that is missing (another Lightning version), every step is logged."""
        trainer = self.trainer
        connector = getattr(trainer, "_logger_connector", None)
        writes = getattr(connector, "should_update_logs", True)
        return bool(writes or getattr(trainer, "fast_dev_run", False))

    if TYPE_CHECKING:
        # Each task's own: its loss, metrics and logging (declared here for the type checker).
        def shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor: ...

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Lightning's, except that a batch's ``lengths`` stay where the collate made them, on
        the CPU. The LSTM reads them there (packing, the loop's per-step batch sizes) and the
        encoder copies them to the device for its padding mask without waiting for it; moved
        with the rest, they would be copied back to the host at every step, a host sync."""
        if not isinstance(batch, dict) or "lengths" not in batch:
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        rest = {key: value for key, value in batch.items() if key != "lengths"}
        moved = super().transfer_batch_to_device(rest, device, dataloader_idx)
        return {key: batch[key] if key == "lengths" else moved[key] for key in batch}

    @staticmethod
    def real_steps(encoded: EncoderOutput, lengths: Tensor) -> Tensor:
        """(B, T) bool on the encoder outputs' device, True at real steps: the encoder's mask
        (`EncoderOutput.mask`), or one made from ``lengths`` for an encoder that returns none."""
        if encoded.mask is not None:
            return encoded.mask
        outputs = encoded.outputs
        return lengths_to_mask(lengths_on(lengths, outputs.device), outputs.size(1))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self(batch["x"], batch["lengths"])

    # ---- hooks of the entry points and callbacks: each task says what it has to show

    def prediction_columns(self, class_names: Sequence[str] = ()) -> list[str]:
        """The columns of ``scripts/predict.py``'s CSV after ``index`` (the sample's index in
        its split), for classes named ``class_names`` (the data's; none: their indices).
        A task without a prediction table, as here, raises a `UserError`."""
        raise self._no_prediction_table()

    def prediction_rows(
        self, batch: dict[str, Tensor], output: Tensor, i: int, class_names: Sequence[str] = ()
    ) -> list[Row]:
        """The CSV rows of sample ``i`` of ``batch`` (on the CPU), without the index:
        ``output`` is ``forward``'s for the whole batch, in float32 on the CPU."""
        raise self._no_prediction_table()

    def _no_prediction_table(self) -> UserError:
        return UserError(
            f"{type(self).__name__}: no prediction table for this task; language models sample "
            "text with scripts/generate.py"
        )

    def test_pictures(self, options: PictureOptions) -> TestPictures | None:
        """What `seqlab.callbacks.plots.PlotCallback` draws after testing this task (see
        `seqlab.tasks.pictures`), built anew for each test; None, as here: nothing."""
        return None
