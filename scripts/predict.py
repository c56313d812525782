"""Predict: ``python scripts/predict.py ckpt_path=path/to/last.ckpt split=test``."""

import hydra
from omegaconf import DictConfig

import seqlab.predict


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    seqlab.predict.main(cfg)


if __name__ == "__main__":
    main()
