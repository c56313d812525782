"""Which checkpoint a run goes on from: ``ckpt_path`` (a file, or ``last``), or the one a
re-queued job finds in its own folder; and what resuming it leaves to tidy (the CSV rows past
it). The checks of a checkpoint against the run, and the state a resume restores, are the
``ExactResume`` callback's module, ``seqlab.callbacks.resume``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, open_dict

from seqlab.callbacks.resume import RUN_KEY, identity_changes, run_identity
from seqlab.errors import ConfigError
from seqlab.loggers import CSVLogger
from seqlab.run_folder import lock_run_folder
from seqlab.trained import read_checkpoint

log = logging.getLogger(__name__)


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


def drop_csv_rows_past(ckpt_path: str, loggers: Sequence[Logger]) -> None:
    """The CSV loggers' rows logged at or after the checkpoint's global step are forgotten:
    the run resumed from it logs them again."""
    csv_loggers = [logger for logger in loggers if isinstance(logger, CSVLogger)]
    if csv_loggers:
        step = int(peek_checkpoint(ckpt_path)["global_step"])
        for logger in csv_loggers:
            logger.drop_rows_from(step)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime
