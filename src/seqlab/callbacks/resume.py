"""Exact resume: what a Lightning checkpoint leaves out, so a resumed run continues exactly.

Lightning saves the model, optimizers, schedulers and loop counters. This callback adds the
random generators' states (Python, NumPy, torch, CUDA), which drive dropout and input noise,
and on resume it restores them just before training continues. The data order needs no saved
state: it is a function of the seed and of the loop counters Lightning restores, so a run
resumed mid-epoch goes on with the very next batch (``seqlab.data.sampler.ResumableSampler``).
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from torch import nn

from seqlab.errors import ConfigError

log = logging.getLogger(__name__)

RNG_KEY = "rng_states"
PER_RANK_KEY = "rng_states_per_rank"
RUN_KEY = "seqlab_run"
# The config keys that say what a run trains: a checkpoint found in a run folder continues
# that folder's run only if they agree (loggers and callbacks may differ; the trainer too,
# except where the model's config reads it, as the default schedule's T_max does).
RUN_KEYS = ("seed", "data", "model")
# Where the data is read from and with how many workers: the same samples either way.
READING_KEYS = ("data.num_workers", "data.data_dir")


def run_identity(cfg: DictConfig) -> str:
    """``RUN_KEYS`` of ``cfg``, resolved, as JSON text (a checkpoint holds plain values)."""
    plain = {}
    for key in RUN_KEYS:
        value = cfg.get(key)
        plain[key] = (
            OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value
        )
    return json.dumps(plain, sort_keys=True, default=str)


def identity_changes(saved: str, current: str) -> list[str]:
    """``key: <saved> there, <current> here`` for each leaf two ``run_identity``s differ in."""

    def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                out |= leaves(item, f"{prefix}{key}.")
            return out
        return {prefix[:-1]: value}

    old, new = leaves(json.loads(saved)), leaves(json.loads(current))
    return [
        f"{key}: {old.get(key)!r} there, {new.get(key)!r} here"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def check_resume(
    ckpt_path: str, checkpoint: dict[str, Any], identity: str, model: nn.Module, fitting: bool
) -> None:
    """Before a checkpoint is resumed (``fitting``) or tested: refuse it where its weights do
    not fit ``model``, and where a run stopped mid-epoch would go on with another seed or
    data (the rest of that epoch would be other samples than it left: some twice, some
    never); warn, naming each, where other settings than its run's go on (results differ from
    an uninterrupted run's, but nothing is lost)."""
    saved = checkpoint.get(RUN_KEY)
    changes = identity_changes(saved, identity) if saved is not None else []
    misfit = weight_misfit(checkpoint["state_dict"], model.state_dict())
    if misfit:
        # The network's settings, not the optimizer's or the schedule's.
        training = ("model.optimizer", "model.scheduler")
        named = [c for c in changes if c.startswith("model.") and not c.startswith(training)][:3]
        raise ConfigError(
            f"ckpt_path={ckpt_path}: its weights do not fit this model "
            f"({'; '.join(named) or misfit}); give the model settings it was trained with, or "
            "start a new run without ckpt_path"
        )
    changes = [change for change in changes if not change.startswith(READING_KEYS)]
    if not fitting or not changes:
        return
    stopped_at = mid_epoch(checkpoint)
    order = [change for change in changes if change.startswith(("seed", "data."))]
    if stopped_at is not None and order:
        epoch, batches = stopped_at
        raise ConfigError(
            f"ckpt_path={ckpt_path}: stopped after batch {batches} of epoch {epoch}, and "
            f"{'; '.join(order[:3])}: the rest of that epoch would train on other samples than "
            "it left; resume with the settings it was saved with"
        )
    log.warning(
        "ckpt_path=%s: resuming with other settings than the run that saved it (%s); the "
        "result will differ from an uninterrupted run's",
        ckpt_path,
        "; ".join(changes),
    )


def weight_misfit(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first weight that ``saved`` lacks, has extra, or holds in another shape, or None."""
    for key in sorted(current.keys() | saved.keys()):
        if key not in saved or key not in current:
            where = "the checkpoint lacks" if key not in saved else "the model has no"
            return f"{where} {key}"
        if tuple(saved[key].shape) != tuple(current[key].shape):
            return f"{key}: {tuple(saved[key].shape)} there, {tuple(current[key].shape)} here"
    return None


def mid_epoch(checkpoint: dict[str, Any]) -> tuple[int, int] | None:
    """``(epoch, batches of it trained)`` for a checkpoint saved within an epoch (as a stop by
    signal saves it), None for one saved at an epoch's end (see ``train_position``)."""
    loops = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs = loops.get("epoch_progress", {}).get("current", {})
    if epochs.get("started", 0) <= epochs.get("processed", 0):
        return None
    batches = loops.get("epoch_loop.batch_progress", {}).get("current", {})
    return int(epochs["processed"]), int(batches.get("completed", 0))


def rng_states() -> dict[str, Any]:
    """The generators' states as tensors, ints and tuples only, so the checkpoint still loads
    with ``torch.load(weights_only=True)``."""
    # The legacy (default) form is a tuple; numpy's stubs also allow the dict form.
    state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    kind, keys, pos, has_gauss, gauss = state
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExactResume(Callback):
    """Saves the generators' states in every checkpoint; restores them when
    ``trainer.fit(..., ckpt_path=...)`` resumes.

    Under DDP every process has its own states (its own dropout masks and noise), and only
    rank 0 writes the checkpoint: the states of all ranks are gathered into it
    (``rng_states_per_rank``), and each rank restores its own.
    """

    def __init__(self, run: str | None = None) -> None:
        #: What the run trains (``run_identity``), saved with every checkpoint.
        self.run = run
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.run is not None:
            checkpoint[RUN_KEY] = self.run
        states = rng_states()
        checkpoint[RNG_KEY] = states
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            # Every rank builds the checkpoint (rank 0 alone writes it): a collective is safe.
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, states)
            checkpoint[PER_RANK_KEY] = gathered

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Restored later, in on_train_start: setting up the run still draws random numbers.
        per_rank = checkpoint.get(PER_RANK_KEY)
        if per_rank is not None and len(per_rank) == trainer.world_size:
            self._pending = per_rank[trainer.global_rank]
        else:  # one process, or another number of them than the checkpoint's run had
            self._pending = checkpoint.get(RNG_KEY)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None
