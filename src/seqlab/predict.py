"""Write a checkpoint's predictions for one split to CSV:
``python scripts/predict.py ckpt_path=logs/.../last.ckpt split=test``.

One row per sample for many-to-one tasks (classification: the class and every class's
probability; regression: the predicted values), one row per real step for per-step tasks
(tagging, forecasting), each with the sample's index in its split. Language models have no
per-sample prediction to tabulate: ``scripts/generate.py`` samples text from them.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader

from seqlab.config_checks import check_config
from seqlab.data.base import SPLITS
from seqlab.errors import UserError, exit_on_user_error
from seqlab.reporting import atomic_write, print_config_tree
from seqlab.tasks import SequenceTask
from seqlab.tasks.base import Row
from seqlab.trained import is_language_model_checkpoint, load_trained

log = logging.getLogger(__name__)

Batch = dict[str, Tensor]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def prediction_table(
    model: SequenceTask, batches: Iterable[Batch], class_names: Sequence[str] = ()
) -> tuple[list[str], list[Row]]:
    """``(header, rows)`` of ``model``'s predictions on ``batches``, in order; ``index`` counts
    samples from 0. Classes are named by ``class_names`` where given, by index otherwise.
    The task's hooks say what its rows hold (``prediction_columns``, ``prediction_rows``)."""
    header = ["index", *model.prediction_columns(class_names)]
    rows: list[Row] = []
    index = 0
    for batch in batches:
        output = model(batch["x"], batch["lengths"]).float().cpu()
        batch = {key: value.cpu() for key, value in batch.items()}
        for i in range(len(batch["lengths"])):
            rows += [[index, *row] for row in model.prediction_rows(batch, output, i, class_names)]
            index += 1
    return header, rows


def to_csv(header: Sequence[str], rows: Iterable[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def predict(cfg: DictConfig) -> Path:
    """Write ``predictions_<split>.csv`` in the run folder; returns its path."""
    if cfg.split not in SPLITS:
        raise UserError(f"split={cfg.split!r}: allowed: {', '.join(SPLITS)}")
    if is_language_model_checkpoint(cfg.ckpt_path):
        raise UserError(
            f"ckpt_path={cfg.ckpt_path} is a language model: it has no per-sample predictions "
            "to tabulate. Sample text from it with `python scripts/generate.py "
            f"ckpt_path={cfg.ckpt_path} prompt=...`"
        )
    datamodule, model = load_trained(cfg)
    device = pick_device(cfg.get("device", "auto"))
    model.to(device)
    loader = DataLoader(
        datamodule.datasets[cfg.split],  # type: ignore[attr-defined]
        batch_size=cfg.get("batch_size") or datamodule.batch_size,  # type: ignore[attr-defined]
        shuffle=False,
        collate_fn=datamodule.collate,  # type: ignore[attr-defined]
    )
    # As in training: everything on the device but the lengths, which stay on the CPU.
    batches = (model.transfer_batch_to_device(batch, device, 0) for batch in loader)
    class_names = getattr(datamodule, "class_names", None) or []
    header, rows = prediction_table(model, batches, class_names)
    path = Path(cfg.paths.output_dir) / f"predictions_{cfg.split}.csv"
    atomic_write(path, to_csv(header, rows))
    log.info("%d rows of %s predictions saved to %s", len(rows), cfg.split, path)
    return path


@exit_on_user_error
def main(cfg: DictConfig) -> Path:
    check_config(cfg)
    print_config_tree(cfg, save_dir=cfg.paths.output_dir)
    path = predict(cfg)
    print(f"predictions: {path}")
    return path
