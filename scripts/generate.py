"""Sample text: ``python scripts/generate.py ckpt_path=path/to/last.ckpt prompt="ROMEO:"``."""

import hydra
from omegaconf import DictConfig

import seqlab.generate


@hydra.main(version_base="1.3", config_path="../configs", config_name="generate")
def main(cfg: DictConfig) -> None:
    seqlab.generate.main(cfg)


if __name__ == "__main__":
    main()
