"""Sample text from a trained language model: ``python scripts/generate.py ckpt_path=...``."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from seqlab.errors import ConfigError, DataError, exit_on_user_error, is_int
from seqlab.reporting import atomic_write
from seqlab.tasks.language_model import LanguageModel
from seqlab.trained import is_language_model_checkpoint, load_task

log = logging.getLogger(__name__)


def load_language_model(ckpt_path: str | Path) -> LanguageModel:
    """A `LanguageModel` rebuilt from its checkpoint alone (the vocabulary is saved in it)."""
    if not is_language_model_checkpoint(ckpt_path):
        raise DataError(
            f"ckpt_path={ckpt_path}: not a language model's checkpoint (it saved no vocabulary); "
            "train one with data=shakespeare or data=text"
        )
    return load_task(ckpt_path, LanguageModel)  # type: ignore[return-value]


def generate(cfg: DictConfig) -> str:
    """The prompt and ``cfg.length`` sampled characters; also saved as ``sample.txt``."""
    check_sampling(cfg)
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


def check_sampling(cfg: DictConfig) -> None:
    """The sampling options, checked before the checkpoint is read."""
    problems = []
    if not isinstance(cfg.prompt, str) or not cfg.prompt:
        problems.append(f"prompt={cfg.prompt!r}: give at least one character to start from")
    if not (is_int(cfg.length) and cfg.length >= 0):
        problems.append(f"length={cfg.length!r}: must be an integer >= 0")
    temperature = cfg.temperature
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature < 0:
        problems.append(f"temperature={temperature!r}: must be a number >= 0 (0: greedy)")
    top_k = cfg.get("top_k")
    if top_k is not None and not (is_int(top_k) and top_k >= 1):
        problems.append(f"top_k={top_k!r}: must be a positive integer, or null (all)")
    if problems:
        raise ConfigError(*problems)


@exit_on_user_error
def main(cfg: DictConfig) -> str:
    text = generate(cfg)
    print(text)
    return text
