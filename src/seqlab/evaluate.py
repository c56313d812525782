"""Test a trained checkpoint: ``python scripts/eval.py ckpt_path=logs/.../last.ckpt``."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from seqlab.callbacks.plots import PlotCallback
from seqlab.config_checks import check_config
from seqlab.errors import exit_on_user_error
from seqlab.loggers import finish_loggers
from seqlab.pipeline import build_trainer, test_and_report
from seqlab.reporting import print_config_tree
from seqlab.trained import load_trained

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Rebuild the model from the checkpoint's saved hyperparameters and test it."""
    datamodule, model = load_trained(cfg)
    # The test-time pictures (a confusion matrix, forecasts, samples) into <run>/plots.
    plots = PlotCallback(dirpath=Path(cfg.paths.output_dir) / "plots")
    trainer, loggers = build_trainer(cfg, with_callbacks=False, extra_callbacks=[plots])
    try:
        return test_and_report(trainer, model, datamodule, None, cfg.paths.output_dir)
    finally:
        finish_loggers(loggers)


@exit_on_user_error
def main(cfg: DictConfig) -> dict[str, float]:
    check_config(cfg)
    print_config_tree(cfg, save_dir=cfg.paths.output_dir)
    return evaluate(cfg)
