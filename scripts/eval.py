"""Evaluate a checkpoint: ``python scripts/eval.py ckpt_path=path/to/last.ckpt``."""

import hydra
from omegaconf import DictConfig

import seqlab.evaluate


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    seqlab.evaluate.main(cfg)


if __name__ == "__main__":
    main()
