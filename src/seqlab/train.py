"""Train a model from a Hydra config: ``python scripts/train.py model=bilstm``."""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from seqlab.callbacks.graceful_stop import GracefulStop, TrainingStopped
from seqlab.callbacks.resume import check_resume, run_identity
from seqlab.config_checks import check_config
from seqlab.cuda_check import cheap_cuda_check
from seqlab.errors import exit_on_user_error
from seqlab.loggers import finish_loggers
from seqlab.pipeline import (
    build_datamodule,
    build_model,
    build_trainer,
    resolve_epochs,
    test_and_report,
)
from seqlab.reporting import atomic_write, print_config_tree
from seqlab.resume import drop_csv_rows_past, peek_checkpoint, resolve_ckpt_path

log = logging.getLogger(__name__)


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns the test metrics (also in metrics.json).
    ``callbacks`` join the config's (a search's trial reporter: see ``seqlab.search``).

    The dict also holds ``<monitor>_best``, the best value of the checkpoint's monitored
    validation metric, for hyperparameter sweeps, and ``time/fit_seconds``, the wall time of
    the fit (in ``timing.json`` too, with the fit's CPU time: metrics.json holds test metrics).
    """
    fitting = cfg.get("train", True)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    # Before the checkpoint is looked for: a re-queued run's identity holds the epochs.
    resolve_epochs(cfg, datamodule)
    # Without a fit, a checkpoint is only read (tested), so the run keeps its own folder.
    ckpt_path = resolve_ckpt_path(cfg, in_place=fitting)
    model = build_model(cfg, datamodule)
    if ckpt_path is not None:  # before anything is written: a file that cannot go on is refused
        check_resume(ckpt_path, peek_checkpoint(ckpt_path), run_identity(cfg), model, fitting)
    trainer, loggers = build_trainer(cfg, extra_callbacks=callbacks)
    if fitting:
        fit_without_validation(trainer, datamodule)
    if fitting and ckpt_path is not None:
        drop_csv_rows_past(ckpt_path, loggers)
    try:
        fit_seconds = fit_cpu_seconds = 0.0
        if fitting:
            start, start_cpu = time.perf_counter(), time.process_time()
            try:
                with cheap_cuda_check():  # an AdamW step no longer tries to load NVML
                    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
            except (SIGTERMException, TrainingStopped) as stop:
                raise stopped(trainer, stop) from None
            fit_seconds = time.perf_counter() - start
            # On a shared machine wall time depends on the neighbours; CPU time much less.
            fit_cpu_seconds = time.process_time() - start_cpu
        metrics: dict[str, float] = {}
        checkpoint = trainer.checkpoint_callback
        if cfg.get("test", True):
            best = getattr(checkpoint, "best_model_path", "") or None
            if not fitting:
                best = ckpt_path
                if best is None:
                    log.warning("train=false and no ckpt_path: testing untrained weights")
            elif best is None:
                log.warning(
                    "no best checkpoint (no checkpoint callback, or its monitored metric was "
                    "never logged, e.g. with data.val_fraction=0): testing the final weights"
                )
            metrics = test_and_report(trainer, model, datamodule, best, cfg.paths.output_dir)
        score = getattr(checkpoint, "best_model_score", None)
        if score is not None:
            metrics[f"{checkpoint.monitor}_best"] = float(score)  # type: ignore[union-attr]
        if fitting:
            metrics["time/fit_seconds"] = fit_seconds
            if trainer.is_global_zero:
                timing = {"fit_seconds": fit_seconds, "fit_cpu_seconds": fit_cpu_seconds}
                atomic_write(Path(cfg.paths.output_dir) / "timing.json", json.dumps(timing) + "\n")
        return metrics
    finally:
        finish_loggers(loggers)


def fit_without_validation(trainer: L.Trainer, datamodule: L.LightningDataModule) -> None:
    """With no validation split (``data.val_fraction=0``, as ``data=ucr`` fits the whole
    training file) the validation loop is switched off, so Lightning never builds the empty
    loader (and warns that it is empty), and a checkpoint that monitors a validation metric
    keeps the newest weights instead: the final weights are the ones tested, and Lightning
    does not warn every epoch that the metric is missing."""
    datasets = getattr(datamodule, "datasets", {})
    if "val" not in datasets or len(datasets["val"]):
        return
    trainer.limit_val_batches = 0
    for callback in trainer.checkpoint_callbacks:
        monitor = getattr(callback, "monitor", None)
        if isinstance(callback, ModelCheckpoint) and monitor and monitor.startswith("val/"):
            log.info("no validation split: the checkpoint keeps the final weights, not %s", monitor)
            callback.monitor = None


def stopped(trainer: L.Trainer, stop: SystemExit) -> TrainingStopped:
    """The exit of a run a signal stopped, naming the checkpoint saved to resume from."""
    signum = stop.signum if isinstance(stop, TrainingStopped) else signal.SIGTERM
    saver = next((cb for cb in trainer.callbacks if isinstance(cb, GracefulStop)), None)  # type: ignore[attr-defined]
    return TrainingStopped(signum, saver.saved if saver else None)


@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    """The Hydra entry point's body: show the config, train, return the optimised metric."""
    check_config(cfg)
    print_config_tree(cfg, save_dir=cfg.paths.output_dir)
    metrics = train(cfg)
    return metrics.get(
        f"{cfg.get('optimized_metric')}_best", metrics.get(cfg.get("optimized_metric"))
    )
