"""Train: ``python scripts/train.py model=bilstm data=japanese_vowels``."""

import hydra
from omegaconf import DictConfig

import seqlab.train


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return seqlab.train.main(cfg)


if __name__ == "__main__":
    main()
