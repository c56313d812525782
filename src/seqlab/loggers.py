"""Build callbacks and loggers from their config groups; pick wandb's mode."""

from __future__ import annotations

import csv
import logging
import netrc
import os
import socket
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch import loggers as pl_loggers
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

WANDB_TARGET = "lightning.pytorch.loggers.WandbLogger"


class CSVLogger(pl_loggers.CSVLogger):
    """Lightning's CSV logger, except that a ``metrics.csv`` already in its folder (a run
    resumed in its run folder) is continued: Lightning's would delete it, and with it the
    epochs before the resume."""

    @property
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        keys, rows = read_rows(path) if path.is_file() else ([], [])
        with warnings.catch_warnings():  # "... will be deleted": not for long
            warnings.filterwarnings("ignore", "Experiment logs directory")
            experiment = super().experiment  # deletes the file
        if keys and isinstance(experiment, ExperimentWriter):  # rank 0 writes, as Lightning's
            write_rows(path, keys, rows)
            experiment.metrics_keys = keys  # new columns rewrite the file with the old rows
        return experiment

    def drop_rows_from(self, step: int) -> None:
        """Forget rows logged at global step ``step`` or later: a run resumed from a checkpoint
        saved at that step logs them again (a kill leaves the rows it wrote past its last
        checkpoint; rows carry the step of the batch they follow, so an epoch's last ones carry
        the checkpoint's step minus one)."""
        experiment = self.experiment
        if not isinstance(experiment, ExperimentWriter):  # not rank 0
            return
        path = Path(experiment.metrics_file_path)
        if not path.is_file():
            return
        keys, rows = read_rows(path)
        kept = [row for row in rows if not row.get("step") or int(float(row["step"])) < step]
        if len(kept) < len(rows):
            write_rows(path, keys, kept)


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A CSV file's header and rows."""
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def write_rows(path: Path, keys: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


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
    """One logger per non-null entry of the ``logger`` group.

    wandb is started here: if it cannot start (a broken install, a full disk, a server that
    refuses the key) the run goes on with the other loggers and a warning, instead of failing.
    """
    loggers: list[Logger] = []
    entries = cast("Mapping[str, Any]", config or {})  # a YAML mapping: string keys
    for name, entry in entries.items():
        if entry is None:
            continue
        if "_target_" not in entry:
            raise ValueError(f"logger.{name}: no _target_ (got keys {sorted(entry)})")
        if entry["_target_"] != WANDB_TARGET:
            loggers.append(instantiate(entry))
            continue
        try:
            loggers.append(start_wandb(entry))
        except Exception as error:  # whatever wandb raises, training goes on
            others = ", ".join(n for n, e in entries.items() if e is not None and n != name)
            log.warning(
                "wandb did not start (%s: %s); going on without it%s",
                type(error).__name__,
                error,
                f", logging to {others}" if others else "",
            )
    return loggers


def start_wandb(entry: DictConfig) -> WandbLogger:
    """A WandbLogger with its run started: offline unless credentials exist, named, grouped
    and tagged after the run (see ``wandb_names``) where the config leaves those open.

    Online, the start waits at most ``init_timeout`` seconds for the server; a server that does
    not answer or refuses the key then gets the run offline in the run folder, so nothing is
    lost and ``wandb sync`` uploads it later.
    """
    entry = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(entry, resolve=True)))
    timeout = entry.pop("init_timeout", None)
    offline = wandb_offline(entry.get("offline"))
    try:
        if not offline and os.environ.get("WANDB_MODE") not in ("offline", "disabled", "dryrun"):
            wandb_server_answers(float(timeout or 15))
        return _start_wandb(entry, offline, timeout)
    except Exception as error:
        if offline:
            raise
        _finish_wandb()
        log.warning(
            "wandb could not start online (%s: %s); logging offline into %s instead, "
            "upload it later with `wandb sync`",
            type(error).__name__,
            str(error).splitlines()[0] if str(error) else "",
            Path(entry["save_dir"]) / "wandb",
        )
        with _wandb_mode("offline"):
            return _start_wandb(entry, True, timeout)


def _start_wandb(entry: DictConfig, offline: bool, timeout: float | None) -> WandbLogger:
    kwargs: dict[str, Any] = {"offline": offline, **wandb_names(entry)}
    if offline:
        # Nothing in offline mode may touch the network (no version checks either).
        os.environ.setdefault("WANDB_DISABLE_GIT", "true")
        if entry.get("log_model"):
            log.info("wandb is offline: checkpoints are not uploaded as artifacts")
            kwargs["log_model"] = False
    elif timeout is not None:
        import wandb

        kwargs["settings"] = wandb.Settings(init_timeout=float(timeout))
    Path(entry["save_dir"]).mkdir(parents=True, exist_ok=True)
    logger = instantiate(entry, **kwargs)
    # Lightning hands wandb.init an `anonymous` it left as None; wandb no longer has that
    # setting and warns about it on every run's first lines (wandb/wandb#10909). Unless a
    # config asked for it, it is not passed.
    init_kwargs = getattr(logger, "_wandb_init", {})
    if "anonymous" in init_kwargs and init_kwargs["anonymous"] is None:
        del init_kwargs["anonymous"]
    run = logger.experiment  # starts the run (on rank 0; a no-op elsewhere)
    if hasattr(run, "define_metric"):
        # The run's summary (and a wandb sweep's objective) is the best val/loss, not the last.
        run.define_metric("val/loss", summary="min")
    return logger


def wandb_server_answers(timeout: float) -> None:
    """Raise ConnectionError unless wandb's server takes a TCP connection within ``timeout``
    seconds, name lookup included (wandb itself would retry for longer)."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(error)

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    if not outcome:
        raise ConnectionError(f"{host}:{port} did not answer within {timeout:g} s")
    if outcome[0] is not None:
        raise ConnectionError(f"{host}:{port}: {outcome[0]}")


@contextmanager
def _wandb_mode(mode: str) -> Iterator[None]:
    """WANDB_MODE set for a block (it wins over the logger's ``offline``), then restored."""
    before = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = mode
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = before


def _finish_wandb() -> None:
    """Close whatever a failed start left open (a half-started run), ignoring its errors."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1)
        wandb.teardown()  # the next start reads its mode afresh
    except Exception:  # a broken wandb cannot be closed either; the retry starts afresh
        pass


def wandb_names(entry: DictConfig) -> dict[str, Any]:
    """Run name, group and tags from the Hydra run, for the ones the config leaves empty.

    name: ``<task_name>/<run folder>``, or in a multirun ``<task_name>/<sweep>/<job number>``
    (the job's own values are in its config); group: the experiment, or in a multirun the sweep (so a sweep's runs sit
    together); tags: the config's tags plus the data, model and experiment chosen.
    """
    if not HydraConfig.initialized():
        return {}
    hydra = HydraConfig.get()
    choices = hydra.runtime.choices
    run_dir = Path(hydra.runtime.output_dir)
    task = OmegaConf.select(entry, "job_type", default=None) or hydra.job.name
    names: dict[str, Any] = {}
    experiment = choices.get("experiment")
    if hydra.mode == RunMode.MULTIRUN:
        sweep = f"{task}/{run_dir.parent.name}"
        name, group = f"{sweep}/{run_dir.name}", sweep
    else:
        name, group = f"{task}/{run_dir.name}", experiment or ""
    if not entry.get("name"):
        names["name"] = name
    if not entry.get("group") and group:
        names["group"] = group
    tags = list(entry.get("tags") or [])
    for key in ("data", "model", "experiment"):
        if choices.get(key) and f"{key}={choices[key]}" not in tags:
            tags.append(f"{key}={choices[key]}")
    names["tags"] = tags
    return names


def instantiate_callbacks(config: DictConfig | None, has_logger: bool) -> list[Callback]:
    """One callback per non-null entry of the ``callbacks`` group."""
    callbacks: list[Callback] = []
    for name, entry in (config or {}).items():
        if entry is None:
            continue
        if "_target_" not in entry:
            raise ValueError(f"callbacks.{name!s}: no _target_ (got keys {sorted(entry)})")
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
