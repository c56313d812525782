"""Load a trained task module from its checkpoint, for eval, predict, export and generate.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers
only, so opening a checkpoint never runs code from it. seqlab writes nothing else into them
(hyperparameters are dicts of plain values, generator states are tensors and tuples). A file
that is not a PyTorch checkpoint, not a seqlab one, or not one for this data gets an error
that says which, naming the file. The settings saved in it name classes to build (the
encoder's, the optimizer's): those are checked against ``seqlab.targets``' lists when the file is
read, before anything is imported or built from them.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from seqlab.errors import DataError
from seqlab.pipeline import build_datamodule, task_class
from seqlab.targets import check_targets
from seqlab.tasks import SequenceTask

log = logging.getLogger(__name__)


def read_checkpoint(ckpt_path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint's contents, after checking it is a seqlab checkpoint; with ``mmap`` its
    tensors are memory-mapped, not read (what a resume peeks at is small)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    with path.open("rb") as file:
        magic = file.read(4)
    # torch.save writes a zip archive; files from torch < 1.6 are a bare pickle.
    if magic != b"PK\x03\x04" and not magic.startswith(b"\x80"):
        raise DataError(f"ckpt_path={ckpt_path}: not a PyTorch checkpoint (no torch.save format)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        what = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        raise DataError(
            f"ckpt_path={ckpt_path}: holds Python objects besides tensors and plain containers"
            f"{f' ({what[1]})' if what else ''}, so it is not loaded (weights-only loading); "
            "seqlab checkpoints never do"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise DataError(
            f"ckpt_path={ckpt_path}: not a readable PyTorch checkpoint, cut short or damaged "
            f"({type(error).__name__}: {str(error).strip()[:200]}); give another one, e.g. the "
            "run's checkpoints/last.ckpt"
        ) from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or "state_dict" not in checkpoint or "encoder" not in hparams:
        raise DataError(
            f"ckpt_path={ckpt_path}: a PyTorch file but not a seqlab checkpoint (it lacks the "
            "model's state_dict or hyper_parameters); give one that scripts/train.py wrote, "
            "e.g. logs/train/runs/<time>/checkpoints/last.ckpt"
        )
    check_targets(hparams, f"ckpt_path={ckpt_path}: ")
    return checkpoint


def checkpoint_hparams(ckpt_path: str | Path) -> dict[str, Any]:
    """The hyperparameters a checkpoint saved, read without building anything."""
    return dict(read_checkpoint(ckpt_path)["hyper_parameters"])


def is_language_model_checkpoint(ckpt_path: str | Path) -> bool:
    return "vocabulary" in checkpoint_hparams(ckpt_path)


def load_task(ckpt_path: str | Path, task: type[SequenceTask]) -> SequenceTask:
    """The checkpoint as a ``task`` module, on the CPU and in eval mode."""
    checkpoint = read_checkpoint(ckpt_path)
    try:
        model = task(**checkpoint["hyper_parameters"])
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, RuntimeError) as error:
        raise DataError(
            f"ckpt_path={ckpt_path}: a seqlab checkpoint, but not of a {task.__name__} "
            f"({str(error).splitlines()[0][:200]}); pass the data= it was trained on"
        ) from None
    return model.eval()


def load_trained(cfg: DictConfig) -> tuple[L.LightningDataModule, SequenceTask]:
    """The data module of ``cfg.data`` (set up) and the checkpoint ``cfg.ckpt_path`` as the task
    module that data asks for, on the CPU and in eval mode; sizes must agree with the data."""
    checkpoint = read_checkpoint(cfg.ckpt_path)  # fails readably before the data is read
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    warn_of_other_data(cfg.ckpt_path, checkpoint, datamodule)
    model = load_task(cfg.ckpt_path, task_class(datamodule))
    for key, value in datamodule.model_kwargs().items():  # type: ignore[attr-defined]
        trained = model.hparams.get(key)
        if trained is not None and trained != value:
            raise DataError(
                f"ckpt_path={cfg.ckpt_path}: trained with {key}={trained}, but "
                f"data={type(datamodule).__name__} has {key}={value}; pass the data= it was "
                "trained on"
            )
    return datamodule, model


# Data options that change how the data is read, never which samples or values it holds.
LOADING_OPTIONS = ("batch_size", "num_workers", "data_dir")


def warn_of_other_data(
    ckpt_path: str, checkpoint: dict[str, Any], datamodule: L.LightningDataModule
) -> None:
    """Warn, naming each option, where the data module's options differ from those the
    checkpoint was trained with: a test on other data gives other numbers than the training
    run's test, with nothing else to say so."""
    trained = checkpoint.get("datamodule_hyper_parameters") or {}
    current = dict(datamodule.hparams)
    changed = [
        f"data.{key}={current[key]!r} (trained with {trained[key]!r})"
        for key in trained
        if key in current and key not in LOADING_OPTIONS and current[key] != trained[key]
    ]
    if changed:
        log.warning(
            "ckpt_path=%s: this data differs from the data it was trained on: %s; its numbers "
            "can differ from the training run's (pass those options to evaluate on the same data)",
            ckpt_path,
            ", ".join(changed),
        )
