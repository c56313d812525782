"""Search hyperparameters with Optuna: ``python scripts/search.py search=japanese_vowels``."""

import hydra
from omegaconf import DictConfig

import seqlab.search


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return seqlab.search.main(cfg)


if __name__ == "__main__":
    main()
