"""Train a model from a Hydra config: ``python scripts/train.py model=bilstm``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from seqlab.pipeline import build_datamodule, build_model, build_trainer, test_and_report
from seqlab.utils.loggers import finish_loggers
from seqlab.utils.reporting import atomic_write, print_config_tree

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns the test metrics (also in metrics.json).

    The dict also holds ``<monitor>_best``, the best value of the checkpoint's monitored
    validation metric, for hyperparameter sweeps, and ``time/fit_seconds``, the wall time of
    the fit (in ``timing.json`` too, with the fit's CPU time: metrics.json holds test metrics).
    """
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    trainer, loggers = build_trainer(cfg)
    try:
        fit_seconds = fit_cpu_seconds = 0.0
        if cfg.get("train", True):
            start, start_cpu = time.perf_counter(), time.process_time()
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            fit_seconds = time.perf_counter() - start
            # On a shared machine wall time depends on the neighbours; CPU time much less.
            fit_cpu_seconds = time.process_time() - start_cpu
        metrics: dict[str, float] = {}
        checkpoint = trainer.checkpoint_callback
        if cfg.get("test", True):
            best = getattr(checkpoint, "best_model_path", "") or None
            if best is None:
                log.warning("no best checkpoint (no checkpoint callback?): testing final weights")
            metrics = test_and_report(trainer, model, datamodule, best, cfg.paths.output_dir)
        score = getattr(checkpoint, "best_model_score", None)
        if score is not None:
            metrics[f"{checkpoint.monitor}_best"] = float(score)  # type: ignore[union-attr]
        if cfg.get("train", True):
            metrics["time/fit_seconds"] = fit_seconds
            if trainer.is_global_zero:
                timing = {"fit_seconds": fit_seconds, "fit_cpu_seconds": fit_cpu_seconds}
                atomic_write(Path(cfg.paths.output_dir) / "timing.json", json.dumps(timing) + "\n")
        return metrics
    finally:
        finish_loggers(loggers)


def main(cfg: DictConfig) -> float | None:
    """The Hydra entry point's body: show the config, train, return the optimised metric."""
    print_config_tree(cfg, save_dir=cfg.paths.output_dir)
    metrics = train(cfg)
    return metrics.get(
        f"{cfg.get('optimized_metric')}_best", metrics.get(cfg.get("optimized_metric"))
    )
