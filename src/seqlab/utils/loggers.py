"""Build callbacks and loggers from their config groups; pick wandb's mode."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

log = logging.getLogger(__name__)

WANDB_TARGET = "lightning.pytorch.loggers.WandbLogger"


def wandb_has_credentials() -> bool:
    """True when an API key is set up (WANDB_API_KEY, or a netrc entry from `wandb login`)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.is_file() and netrc.netrc(path).authenticators(host or "") is not None
    except (netrc.NetrcParseError, OSError):
        return False


def wandb_offline(requested: bool | None) -> bool:
    """Offline unless asked otherwise or credentials exist; WANDB_MODE (if set) decides in
    wandb itself, so we then leave the choice to it."""
    if requested is not None:
        return requested
    if os.environ.get("WANDB_MODE"):
        return False
    return not wandb_has_credentials()


def instantiate_loggers(config: DictConfig | None) -> list[Logger]:
    """One logger per non-null entry of the ``logger`` group."""
    loggers: list[Logger] = []
    for name, entry in (config or {}).items():
        if entry is None:
            continue
        if "_target_" not in entry:
            raise ValueError(f"logger.{name}: no _target_ (got keys {sorted(entry)})")
        kwargs: dict[str, Any] = {}
        if entry["_target_"] == WANDB_TARGET:
            kwargs["offline"] = wandb_offline(entry.get("offline"))
            if kwargs["offline"]:
                # Nothing in offline mode may touch the network (no version checks either).
                os.environ.setdefault("WANDB_DISABLE_GIT", "true")
            Path(entry["save_dir"]).mkdir(parents=True, exist_ok=True)
        loggers.append(instantiate(entry, **kwargs))
    return loggers


def instantiate_callbacks(config: DictConfig | None, has_logger: bool) -> list[Callback]:
    """One callback per non-null entry of the ``callbacks`` group."""
    callbacks: list[Callback] = []
    for name, entry in (config or {}).items():
        if entry is None:
            continue
        if "_target_" not in entry:
            raise ValueError(f"callbacks.{name}: no _target_ (got keys {sorted(entry)})")
        callback = instantiate(entry)
        if isinstance(callback, LearningRateMonitor) and not has_logger:
            log.info("logger=none: dropping the learning-rate monitor, it needs a logger")
            continue
        callbacks.append(callback)
    return callbacks


def finish_loggers(loggers: list[Logger]) -> None:
    """Close the wandb run, so that every run (each job of a multirun too) is complete on disk;
    an offline run then prints the `wandb sync` command that uploads it."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()
