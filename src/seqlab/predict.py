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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader

from seqlab.config_checks import check_config
from seqlab.data.base import SPLITS
from seqlab.errors import UserError, exit_on_user_error
from seqlab.reporting import atomic_write, print_config_tree
from seqlab.tasks import (
    SequenceClassifier,
    SequenceForecaster,
    SequenceRegressor,
    SequenceTagger,
    SequenceTask,
)
from seqlab.tasks.tagging import IGNORE_INDEX
from seqlab.trained import is_language_model_checkpoint, load_trained

log = logging.getLogger(__name__)

Row = list[Any]
Batch = dict[str, Tensor]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _channels(prefix: str, n: int) -> list[str]:
    return [prefix] if n == 1 else [f"{prefix}_{k}" for k in range(n)]


RowsOf = Callable[[int, int, Tensor, Batch], list[Row]]


def _layout(model: SequenceTask, class_names: Sequence[str]) -> tuple[list[str], RowsOf]:
    """The CSV header for ``model``'s task, and how sample ``i`` of a batch becomes rows
    ``rows_of(index, i, output_i, batch)``."""
    if isinstance(model, SequenceClassifier):
        names = list(class_names) or [str(c) for c in range(model.hparams["num_classes"])]

        def classification(index: int, i: int, output: Tensor, batch: Batch) -> list[Row]:
            probs = output.softmax(-1)
            target, pred = names[int(batch["y"][i])], names[int(probs.argmax())]
            return [[index, int(batch["lengths"][i]), target, pred, *probs.tolist()]]

        header = ["index", "length", "target", "pred", *(f"prob_{name}" for name in names)]
        return header, classification

    if isinstance(model, SequenceRegressor):

        def regression(index: int, i: int, output: Tensor, batch: Batch) -> list[Row]:
            values = batch["y"][i].float().reshape(-1).tolist() + output.reshape(-1).tolist()
            return [[index, int(batch["lengths"][i]), *values]]

        outputs = model.output_size
        header = ["index", "length", *_channels("target", outputs), *_channels("pred", outputs)]
        return header, regression

    if isinstance(model, SequenceTagger):

        def tagging(index: int, i: int, output: Tensor, batch: Batch) -> list[Row]:
            rows: list[Row] = []
            for t in range(int(batch["lengths"][i])):
                target = int(batch["y"][i, t])
                scored = target != IGNORE_INDEX
                pred = int(output[t].argmax())
                rows.append([index, t, int(scored), target if scored else "", pred])
            return rows

        return ["index", "step", "scored", "target", "pred"], tagging

    if isinstance(model, SequenceForecaster):

        def forecasting(index: int, i: int, output: Tensor, batch: Batch) -> list[Row]:
            scored = SequenceForecaster.scored_steps(batch)[i]
            rows: list[Row] = []
            for t in range(int(batch["lengths"][i])):
                values = batch["y"][i, t].float().reshape(-1).tolist() + output[t].tolist()
                rows.append([index, t, int(scored[t]), *values])
            return rows

        channels = model.hparams["input_size"]
        header = ["index", "step", "scored", *_channels("target", channels)]
        return header + _channels("pred", channels), forecasting

    raise UserError(
        f"{type(model).__name__}: no prediction table for this task; language models sample "
        "text with scripts/generate.py"
    )


@torch.no_grad()
def prediction_table(
    model: SequenceTask, batches: Iterable[Batch], class_names: Sequence[str] = ()
) -> tuple[list[str], list[Row]]:
    """``(header, rows)`` of ``model``'s predictions on ``batches``, in order; ``index`` counts
    samples from 0. Classes are named by ``class_names`` where given, by index otherwise."""
    header, rows_of = _layout(model, class_names)
    rows: list[Row] = []
    index = 0
    for batch in batches:
        output = model(batch["x"], batch["lengths"]).float().cpu()
        batch = {key: value.cpu() for key, value in batch.items()}
        for i in range(len(batch["lengths"])):
            rows += rows_of(index, i, output[i], batch)
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
    batches = ({k: v.to(device) for k, v in batch.items()} for batch in loader)
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
