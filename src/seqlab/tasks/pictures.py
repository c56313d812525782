"""Test-time pictures: what a task draws once it is tested, and the drawing helpers they use.

A task's ``test_pictures(options)`` hook (`SequenceTask.test_pictures`) returns a `TestPictures`
that collects what it needs from the test batches and draws `Picture` s from it;
`seqlab.callbacks.plots.PlotCallback` calls it and publishes what it draws (PNG files in the run's
``plots/`` folder, and images in wandb). A task without a test-time picture returns None.

Matplotlib draws on its Agg canvas directly (no pyplot, no GUI backend, no global state).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor


@dataclass
class Picture:
    """``<name>.png`` of ``figure``; ``files``: text files written beside it (file name ->
    text); ``table``: a wandb table logged under ``name`` (columns, rows), if any."""

    name: str
    figure: Figure
    files: dict[str, str] = field(default_factory=dict)
    table: tuple[list[str], list[list[Any]]] | None = None


@dataclass
class PictureOptions:
    """The plot callback's settings: ``num_series``: forecast series shown; ``num_samples``,
    ``sample_length``, ``sample_temperature``, ``prompt_length``: a language model's samples."""

    num_series: int = 4
    num_samples: int = 3
    sample_length: int = 200
    sample_temperature: float = 0.8
    prompt_length: int = 40


class TestPictures:
    """What one test run of a task collects and draws. The plot callback calls, in turn:

    - `update` after every test batch, on every process (under ``torch.no_grad``);
    - `epoch_end` once the test epoch ends, on every process, so that what needs all of them
      (a metric's sync, a gather) happens here; it returns the pictures to publish now, drawn
      on rank 0 only (other ranks return none);
    - `test_end` when testing ends, on rank 0 only: the pictures to publish then.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def update(self, trainer: L.Trainer, batch: dict[str, Tensor]) -> None:
        """Collect what the pictures need from one test batch."""

    def epoch_end(self, trainer: L.Trainer) -> list[Picture]:
        return []

    def test_end(self, trainer: L.Trainer) -> list[Picture]:
        return []


# ----------------------------------------------------------------------------------- drawing


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Counts in the cells, colour by the share of the true class (each row sums to 1)."""
    n = len(matrix)
    rows = matrix.sum(1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    size = min(12.0, 2.5 + 0.5 * n)
    figure = Figure(figsize=(size + 1, size))
    ax = figure.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                color = "white" if shares[i, j] > 0.5 else "black"
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=color)
        # Slanted where the names would run into each other (about 40 characters in a row).
        slanted = n > 10 or n * max((len(str(name)) for name in class_names), default=0) > 40
        slant: dict[str, Any] = (
            {"rotation": 45, "ha": "right", "rotation_mode": "anchor"} if slanted else {}
        )
        ax.set_xticks(range(n), class_names, **slant)
        ax.set_yticks(range(n), class_names)
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"confusion matrix (test), accuracy {accuracy:.4f}")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    figure.tight_layout()
    return figure


def forecast_series_figure(series: list[dict[str, np.ndarray]]) -> Figure:
    """One panel per series: target and one-step forecast over the real steps (first channel),
    scored steps marked, the rollout (if any) over its last steps."""
    figure = Figure(figsize=(9, 2.4 * len(series)))
    for i, s in enumerate(series):
        ax = figure.add_subplot(len(series), 1, i + 1)
        steps = np.arange(len(s["target"]))
        ax.plot(steps, s["target"], color="black", lw=1.2, label="truth")
        ax.plot(steps, s["forecast"], color="tab:blue", lw=1.0, label="one-step forecast")
        if not s["scored"].all():
            ax.scatter(steps[s["scored"]], s["forecast"][s["scored"]], s=12, label="scored")
        if "rollout" in s:
            start = len(steps) - len(s["rollout"])
            ax.plot(steps[start:], s["rollout"], color="tab:red", lw=1.0, label="rollout")
        ax.set_ylabel(f"series {i}")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize="small", ncol=4)
    figure.axes[-1].set_xlabel("step (target index)")
    figure.suptitle("forecast vs truth (test)")
    figure.tight_layout()
    return figure


def forecast_split_figure(
    target: np.ndarray, forecast: np.ndarray, persistence: np.ndarray
) -> Figure:
    """Every scored step of the split in order, for data that scores one step per series."""
    figure = Figure(figsize=(9, 3.2))
    ax = figure.add_subplot()
    ax.plot(target, color="black", lw=1.2, marker=".", label="truth")
    ax.plot(forecast, color="tab:blue", lw=1.0, marker=".", label="forecast")
    ax.plot(persistence, color="gray", lw=0.8, ls="--", label="persistence")
    mae = float(np.abs(forecast - target).mean()) if len(target) else float("nan")
    ax.set_title(f"forecast vs truth, every scored test step in order (MAE {mae:.4f})")
    ax.set_xlabel("test sample")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.tight_layout()
    return figure


def interleave(shares: list[np.ndarray]) -> np.ndarray:
    """Strided shares back in order: share r holds items r, r + W, r + 2W, ... of W shares."""
    out = np.empty(sum(len(share) for share in shares))
    for rank, share in enumerate(shares):
        out[rank :: len(shares)] = share
    return out


def samples_figure(rows: list[tuple[str, str]], width: int = 100) -> Figure:
    """A two-column table, prompt and sampled text, wrapped, in a monospace font."""
    blocks = [
        (textwrap.fill(prompt, 24), textwrap.fill(sample, width, replace_whitespace=True))
        for prompt, sample in rows
    ]
    heights = [max(p.count("\n"), s.count("\n")) + 2 for p, s in blocks]
    figure = Figure(figsize=(12, 0.5 + 0.17 * sum(heights)))
    ax = figure.add_subplot()
    ax.axis("off")
    total = sum(heights) + 1
    y = 1.0 - 1.0 / total
    ax.text(0.0, y, "prompt", weight="bold", va="top", transform=ax.transAxes)
    ax.text(0.22, y, "sample", weight="bold", va="top", transform=ax.transAxes)
    for (prompt, sample), height in zip(blocks, heights, strict=True):
        y -= 1.0 / total
        for left, text in ((0.0, prompt), (0.22, sample)):
            ax.text(
                left,
                y,
                text,
                family="monospace",
                fontsize=8,
                va="top",
                transform=ax.transAxes,
                parse_math=False,
            )
        y -= (height - 1) / total
    figure.suptitle("generated samples")
    return figure
