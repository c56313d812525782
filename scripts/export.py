"""Export: ``python scripts/export.py ckpt_path=path/to/last.ckpt format=torch_export``."""

import hydra
from omegaconf import DictConfig

import seqlab.export


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    seqlab.export.main(cfg)


if __name__ == "__main__":
    main()
