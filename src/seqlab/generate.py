"""Sample text from a trained language model: ``python scripts/generate.py ckpt_path=...``."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from seqlab.tasks.language_model import LanguageModel
from seqlab.utils.reporting import atomic_write

log = logging.getLogger(__name__)


def load_language_model(ckpt_path: str | Path) -> LanguageModel:
    """A `LanguageModel` rebuilt from its checkpoint alone (the vocabulary is saved in it)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    # Plain tensors and containers only: the hyperparameters are dicts, lists and strings.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "vocabulary" not in checkpoint.get("hyper_parameters", {}):
        raise ValueError(
            f"ckpt_path={ckpt_path}: not a language model's checkpoint (it saved no vocabulary); "
            "train one with data=shakespeare or data=text"
        )
    model = LanguageModel(**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def generate(cfg: DictConfig) -> str:
    """The prompt and ``cfg.length`` sampled characters; also saved as ``sample.txt``."""
    model = load_language_model(cfg.ckpt_path)
    text = model.generate(
        cfg.prompt,
        max_new_chars=cfg.length,
        temperature=cfg.temperature,
        top_k=cfg.get("top_k"),
        seed=cfg.seed,
    )
    path = Path(cfg.paths.output_dir) / "sample.txt"
    atomic_write(path, text)
    log.info("sample saved to %s", path)
    return text


def main(cfg: DictConfig) -> str:
    text = generate(cfg)
    print(text)
    return text
