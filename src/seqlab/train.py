"""Train a model from a Hydra config: ``python scripts/train.py model=bilstm``."""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, open_dict

from seqlab.callbacks.graceful_stop import GracefulStop, TrainingStopped
from seqlab.callbacks.resume import RUN_KEY, check_resume, identity_changes, run_identity
from seqlab.config_checks import check_config
from seqlab.errors import ConfigError, exit_on_user_error
from seqlab.loggers import CSVLogger, finish_loggers
from seqlab.pipeline import (
    build_datamodule,
    build_model,
    build_trainer,
    resolve_epochs,
    test_and_report,
)
from seqlab.reporting import atomic_write, print_config_tree
from seqlab.run_folder import lock_run_folder
from seqlab.trained import read_checkpoint

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
        keep_final_weights_without_validation(trainer, datamodule)
    csv_loggers = [logger for logger in loggers if isinstance(logger, CSVLogger)]
    if fitting and ckpt_path is not None and csv_loggers:
        step = int(peek_checkpoint(ckpt_path)["global_step"])
        for logger in csv_loggers:
            logger.drop_rows_from(step)
    try:
        fit_seconds = fit_cpu_seconds = 0.0
        if fitting:
            start, start_cpu = time.perf_counter(), time.process_time()
            try:
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


def keep_final_weights_without_validation(
    trainer: L.Trainer, datamodule: L.LightningDataModule
) -> None:
    """With no validation split (``data.val_fraction=0``, as ``data=ucr`` fits the whole
    training file) a checkpoint that monitors a validation metric keeps the newest weights
    instead: the final weights are the ones tested, and Lightning does not warn every epoch
    that the metric is missing."""
    datasets = getattr(datamodule, "datasets", {})
    if "val" not in datasets or len(datasets["val"]):
        return
    for callback in trainer.checkpoint_callbacks:
        monitor = getattr(callback, "monitor", None)
        if isinstance(callback, ModelCheckpoint) and monitor and monitor.startswith("val/"):
            log.info("no validation split: the checkpoint keeps the final weights, not %s", monitor)
            callback.monitor = None


def resolve_ckpt_path(cfg: DictConfig, in_place: bool = True) -> str | None:
    """The checkpoint to resume from (or, with ``train=false``, to test), or None; ``last`` is
    the newest ``last.ckpt`` of this task's runs. With ``in_place``, a run resumed from a
    checkpoint in a run folder continues in that folder (``paths.output_dir`` is pointed
    there), so its best-checkpoint tracking carries on."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None:
        return requeued_checkpoint(cfg, Path(cfg.paths.output_dir)) if in_place else None
    if ckpt_path == "last":
        task_dir = Path(cfg.paths.log_dir) / cfg.task_name
        candidates = sorted(task_dir.glob("*runs/**/checkpoints/last.ckpt"), key=_mtime)
        if not candidates:
            raise FileNotFoundError(
                f"ckpt_path=last: no checkpoints/last.ckpt in any run under {task_dir}; "
                "give a checkpoint file instead"
            )
        path = candidates[-1]
    else:
        path = Path(ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    if in_place and path.parent.name == "checkpoints" and cfg.get("resume_in_place", True):
        with open_dict(cfg):
            cfg.paths.output_dir = str(path.parent.parent)
        lock_run_folder(cfg.paths.output_dir)  # two resumes of one run would mix its folder
        log.info("resuming %s in its run folder %s", path, cfg.paths.output_dir)
    return str(path)


def peek_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, memory-mapped: its small entries read, the weights not; a
    file that is not a seqlab checkpoint (cut short, pickled objects) is refused, named."""
    return read_checkpoint(path, mmap=True)


def requeued_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """A fresh run's folder is empty; one that already holds a checkpoint is a job started
    again in the same folder (SLURM re-queues a pre-empted job under its job id, see
    ``configs/hydra/default.yaml``): it goes on from its newest checkpoint, ``last.ckpt`` or
    the ``hpc_ckpt_*.ckpt`` that Lightning saves on SLURM's requeue signal. A checkpoint of
    another run (other seed, data or model: several trainings in one SLURM job share its
    folder) is refused rather than continued."""
    found = [*run_dir.glob("checkpoints/last.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
    if not found:
        return None
    newest = max(found, key=_mtime)
    saved = peek_checkpoint(newest).get(RUN_KEY)
    changes = identity_changes(saved, run_identity(cfg)) if saved is not None else []
    if changes:
        raise ConfigError(
            f"{run_dir} already holds {newest.name} of another run ({'; '.join(changes[:3])}"
            f"{'; ...' if len(changes) > 3 else ''}): several trainings in one SLURM job share "
            "its folder. Give each its own (hydra.run.dir=...), or use a job array or -m"
        )
    log.warning("%s already holds %s: resuming from it (a re-queued job)", run_dir, newest.name)
    return str(newest)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


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
