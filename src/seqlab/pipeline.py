"""The steps train and evaluate share: data, model, trainer, test and report."""

from __future__ import annotations

import logging
import signal
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from seqlab.callbacks.graceful_stop import GracefulStop, TrainingStopped
from seqlab.callbacks.monitors import MonitorCheck
from seqlab.callbacks.resume import ExactResume, run_identity
from seqlab.checkpoint_io import AtomicCheckpointIO
from seqlab.config_checks import check_precision
from seqlab.errors import ConfigError
from seqlab.loggers import instantiate_callbacks, instantiate_loggers
from seqlab.profilers import NoProfiler
from seqlab.reporting import print_metrics, save_metrics
from seqlab.tasks import TASKS, SequenceTask

log = logging.getLogger(__name__)

# Our data sets are small and in memory: worker processes would cost more than they save.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
# Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates; nothing for users to do.
warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
# A small set has fewer batches an epoch than trainer.log_every_n_steps; step rows are still
# written (the count runs across epochs) and epoch metrics always are.
warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")


class _NoLightningAdverts(logging.Filter):
    """Drops the "Tip: try installing litlogger" line Lightning prints on every run's start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoLightningAdverts())


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """Instantiate and set up the data module, so the model can be sized from it."""
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def epoch_budget(
    batches_per_epoch: int,
    steps: int,
    min_epochs: int,
    max_epochs: int,
    *,
    input_steps_per_epoch: int = 0,
    max_input_steps: int | None = None,
) -> int:
    """Whole epochs that take about ``steps`` optimizer steps, within ``[min_epochs, max_epochs]``,
    and, with ``max_input_steps``, no more than feed the model that many time steps in all
    (``input_steps_per_epoch`` an epoch; at least one epoch).

    A fixed number of updates fits a model about as well on 20 samples as on 20,000, where a
    fixed number of epochs gives the small set a hundredth of the updates; the bounds keep a
    large set from stopping before it has seen its data a few times, and a tiny one from
    looping for hours. The cap on time steps bounds what a run costs: a convolution's or an
    LSTM's work is proportional to the steps it reads, padding included, so long series in
    large batches, or many series, would otherwise take hours on a CPU. It wins over
    ``min_epochs``.
    """
    wanted = -(-steps // max(1, batches_per_epoch))
    epochs = min(max_epochs, max(min_epochs, wanted))
    if max_input_steps is not None and input_steps_per_epoch > 0:
        epochs = max(1, min(epochs, max_input_steps // input_steps_per_epoch))
    return epochs


def resolve_epochs(cfg: DictConfig, datamodule: L.LightningDataModule) -> None:
    """``trainer.max_epochs=auto`` set from the training split's size and ``cfg.budget``
    (counted in a single process's batches, so a run means the same on any number of GPUs).
    Everything that interpolates ``${trainer.max_epochs}`` (a cosine schedule) follows."""
    if OmegaConf.select(cfg, "trainer.max_epochs") != "auto":
        return
    batches = len(datamodule.train_dataloader())
    budget = cfg.budget
    cap = budget.get("max_input_steps")
    per_epoch = 0
    if cap is not None:
        count = getattr(datamodule, "input_steps_per_epoch", None)
        if count is None:
            raise ConfigError(
                f"budget.max_input_steps={cap}: {type(datamodule).__name__} cannot count the "
                "time steps of its training epoch (no input_steps_per_epoch()); set "
                "budget.max_input_steps=null"
            )
        per_epoch = count()
    uncapped = epoch_budget(batches, budget.steps, budget.min_epochs, budget.max_epochs)
    epochs = epoch_budget(
        batches,
        budget.steps,
        budget.min_epochs,
        budget.max_epochs,
        input_steps_per_epoch=per_epoch,
        max_input_steps=cap,
    )
    with open_dict(cfg):
        cfg.trainer.max_epochs = epochs
    if epochs < uncapped:
        log.info(
            "trainer.max_epochs=auto: %d epochs of %d batches, not the %d of budget.steps=%d: "
            "an epoch feeds the model %d time steps (padding included) and "
            "budget.max_input_steps=%d caps the run (raise it, or null, where compute allows)",
            epochs,
            batches,
            uncapped,
            budget.steps,
            per_epoch,
            cap,
        )
    else:
        log.info(
            "trainer.max_epochs=auto: %d epochs of %d batches (budget.steps=%d)",
            epochs,
            batches,
            budget.steps,
        )


def task_class(datamodule: L.LightningDataModule) -> type[SequenceTask]:
    task = getattr(datamodule, "task", None)
    if task not in TASKS:
        raise ConfigError(
            f"data: {type(datamodule).__name__}.task={task!r}; known tasks: {', '.join(TASKS)}"
        )
    return TASKS[task]


def build_model(cfg: DictConfig, datamodule: L.LightningDataModule) -> SequenceTask:
    """The task module the data asks for, sized by the data (input size, classes, ...)."""
    model_cfg = cast(dict[str, Any], OmegaConf.to_container(cfg.model, resolve=True))
    assert isinstance(model_cfg, dict)
    return task_class(datamodule)(**model_cfg, **datamodule.model_kwargs())  # type: ignore[attr-defined]


def check_multirun_strategy(trainer: L.Trainer) -> None:
    """Lightning's DDP launcher re-runs the script's command line in each extra process; in a
    Hydra multirun that command is the whole sweep, so every process would start it again."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    strategy = trainer.strategy
    if (
        isinstance(strategy, DDPStrategy)
        and trainer.world_size > 1
        and getattr(strategy, "_start_method", "popen") == "popen"
        and not strategy.cluster_environment.creates_processes_externally  # type: ignore[union-attr]
    ):
        raise ConfigError(
            "trainer.strategy=ddp in a Hydra multirun (-m): use trainer.strategy=ddp_spawn, "
            "or launch the processes outside (torchrun, SLURM / the submitit launcher)"
        )


def profiler_default(trainer_cfg: DictConfig) -> dict[str, Any]:
    """``{"profiler": NoProfiler()}`` where the trainer config names no profiler (Lightning's
    default profiles nothing, at a cost per hook call), else nothing."""
    return {} if trainer_cfg.get("profiler") else {"profiler": NoProfiler()}


def build_trainer(
    cfg: DictConfig, with_callbacks: bool = True, extra_callbacks: Sequence[Callback] = ()
) -> tuple[L.Trainer, list[Logger]]:
    """The trainer of ``cfg.trainer`` with the ``callbacks`` group (unless ``with_callbacks`` is
    false), seqlab's resume and stop callbacks, ``extra_callbacks`` and the loggers."""
    check_precision(cfg.trainer)
    loggers = instantiate_loggers(cfg.get("logger"))
    callbacks = list(extra_callbacks)
    if with_callbacks:
        monitors = {
            node.monitor: f"callbacks.{name}.monitor"
            for name, node in (cfg.get("callbacks") or {}).items()
            if isinstance(node, DictConfig) and node.get("monitor")
        }
        # First: it must look before the callbacks that read the metrics.
        callbacks.insert(0, MonitorCheck(monitors))
        callbacks += instantiate_callbacks(cfg.get("callbacks"), bool(loggers))
        # Not optional: what makes a stopped run resumable, and a resumed one exact.
        callbacks += [ExactResume(run_identity(cfg)), GracefulStop()]
    # `auto` epochs are resolved before a fit (resolve_epochs); a test never reads them.
    epochs = {"max_epochs": None} if cfg.trainer.get("max_epochs") == "auto" else {}
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        **epochs,
        **profiler_default(cfg.trainer),
    )
    check_multirun_strategy(trainer)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    return trainer, loggers


def test_and_report(
    trainer: L.Trainer,
    model: SequenceTask,
    datamodule: L.LightningDataModule,
    ckpt_path: str | None,
    run_dir: str | Path,
) -> dict[str, float]:
    """Run the test stage, then write ``metrics.json`` in the run folder and print a table.

    A SIGTERM during the test ends the run with 128 + 15, as one during the fit does: Lightning
    would raise a ``SystemExit`` without a status, and a run that wrote no metrics would exit 0.
    """
    try:
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    except SIGTERMException:
        again = f"python scripts/eval.py ckpt_path={ckpt_path}" if ckpt_path else "the run again"
        log.error(
            "error: SIGTERM during the test: the test did not finish and no metrics.json was "
            "written (the checkpoints are intact); test with %s",
            again,
        )
        raise TrainingStopped(signal.SIGTERM) from None
    metrics = {
        key: float(value)
        for key, value in trainer.callback_metrics.items()
        if key.startswith("test/")
    }
    if trainer.is_global_zero:
        path = save_metrics(metrics, run_dir)
        print_metrics(metrics, title=f"test metrics ({path})")
    return metrics
