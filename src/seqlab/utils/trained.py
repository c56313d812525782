"""Load a trained task module and the data it was trained on, for predict and export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from seqlab.pipeline import build_datamodule, task_class
from seqlab.tasks import SequenceTask


def checkpoint_hparams(ckpt_path: str | Path) -> dict[str, Any]:
    """The hyperparameters a checkpoint saved, read without building anything."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    # Plain tensors and containers only: the hyperparameters are dicts, lists and strings.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return dict(checkpoint.get("hyper_parameters", {}))


def is_language_model_checkpoint(ckpt_path: str | Path) -> bool:
    return "vocabulary" in checkpoint_hparams(ckpt_path)


def load_trained(cfg: DictConfig) -> tuple[L.LightningDataModule, SequenceTask]:
    """The data module of ``cfg.data`` (set up) and the checkpoint ``cfg.ckpt_path`` as the task
    module that data asks for, on the CPU and in eval mode."""
    checkpoint_hparams(cfg.ckpt_path)  # fails readably on a missing file
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    model = task_class(datamodule).load_from_checkpoint(cfg.ckpt_path, map_location="cpu")
    return datamodule, model.eval()
