"""Every run draws its learning curves, and each task type its own test-time picture."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig

from seqlab.callbacks.plots import learning_curves_figure
from seqlab.pipeline import build_datamodule
from seqlab.tasks.pictures import confusion_matrix_figure, interleave
from seqlab.train import train
from tests.conftest import ROOT, TINY

# The tiny overrides, with the plots on whatever TINY says about them.
TINY_WITH_PLOTS = [o for o in TINY if not o.startswith("callbacks.plots")]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def make_cfg(make_cfg):  # type: ignore[no-untyped-def]
    """conftest's ``make_cfg`` with the plots callback on."""

    def make(*overrides: str) -> DictConfig:
        return make_cfg(*TINY_WITH_PLOTS, *overrides, tiny=False)

    return make


def plots_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir) / "plots"


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_classification_run_writes_learning_curves_and_confusion_matrix(make_cfg) -> None:
    cfg = make_cfg("trainer.max_epochs=2")
    train(cfg)
    assert_png(plots_dir(cfg) / "learning_curves.png")
    assert_png(plots_dir(cfg) / "confusion_matrix.png")


def test_learning_curves_hold_one_point_per_epoch_and_travel_in_checkpoints(make_cfg) -> None:
    cfg = make_cfg("trainer.max_epochs=3")
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("PlotCallback")]
    history = state["history"]
    assert sorted(history) == [0, 1, 2]
    for values in history.values():
        assert {"train/loss", "val/loss", "train/acc", "val/acc"} <= set(values)
        assert all(np.isfinite(v) for v in values.values())
    # The per-step training loss is not an epoch curve.
    assert not any(key.endswith("_step") for values in history.values() for key in values)


def test_learning_curves_figure_groups_validation_only_variants_with_their_metric() -> None:
    history = {
        e: {
            "train/loss": 1.0 / (e + 1),
            "val/loss": 1.2 / (e + 1),
            "train/mse": 0.5,
            "val/mse": 0.6,
            "val/persistence_mse": 0.7,
        }
        for e in range(3)
    }
    figure = learning_curves_figure(history)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["loss", "mse"]
    labels = [line.get_label() for line in figure.axes[1].get_lines()]
    assert labels == ["train/mse", "val/mse", "val/persistence_mse"]


@pytest.mark.parametrize(
    "overrides",
    [
        # Many series, every step scored: a few series panels with the rollout.
        [
            "data=sine",
            "data.train_size=64",
            "data.val_size=16",
            "data.test_size=16",
            "data.seq_len=40",
            "data.min_len=30",
            "data.rollout_horizon=5",
        ],
        # One scored step (year) per series: the test split's years in order.
        ["data=sunspots"],
    ],
    ids=["sine", "sunspots"],
)
def test_forecasting_run_writes_forecast_vs_truth(make_cfg, overrides: list[str]) -> None:
    cfg = make_cfg(*overrides)
    train(cfg)
    assert_png(plots_dir(cfg) / "learning_curves.png")
    assert_png(plots_dir(cfg) / "forecast_vs_truth.png")
    assert not (plots_dir(cfg) / "confusion_matrix.png").exists()
    if "data=sunspots" in overrides:  # one point per test year, and the numbers behind them
        rows = (plots_dir(cfg) / "forecast_vs_truth.csv").read_text().splitlines()
        assert rows[0] == "test_sample,target,forecast,persistence"
        assert len(rows) - 1 == len(build_datamodule(cfg).datasets["test"])


def test_interleave_puts_strided_shares_back_in_order() -> None:
    shares = [np.array([0.0, 3, 6]), np.array([1.0, 4]), np.array([2.0, 5])]  # 7 over 3 ranks
    assert interleave(shares).tolist() == [0, 1, 2, 3, 4, 5, 6]


# Slow (~30 s): a DDP run; the plot's content is tested on one process in `make test`.
@pytest.mark.slow
def test_ddp_forecast_plot_shows_every_test_year_in_order(tmp_path: Path) -> None:
    """Each process forecasts its share of the test years; the plot's numbers are the whole
    split in order, as one process gives them."""
    tables = {}
    for trainer in ("default", "ddp_cpu"):
        run_dir = tmp_path / trainer
        overrides = [*TINY_WITH_PLOTS, "data=sunspots", f"trainer={trainer}"]
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "train.py"), *overrides,
             f"hydra.run.dir={run_dir}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        table = (run_dir / "plots" / "forecast_vs_truth.csv").read_text().splitlines()
        # The truth and persistence columns: the data's, whatever the model learned.
        tables[trainer] = [(row.split(",")[:2], row.split(",")[3]) for row in table]
    assert len(tables["default"]) == 47  # a header and 46 test years
    assert tables["ddp_cpu"] == tables["default"]


def test_language_model_run_writes_a_table_of_samples(make_cfg, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "To be, or not to be: $a_$ or $b^$, that is the question.\n" * 200, encoding="utf-8"
    )
    cfg = make_cfg(
        "data=text",
        f"data.path={corpus}",
        "data.batch_size=4",
        "data.bptt=32",
        "callbacks.plots.num_samples=2",
        "callbacks.plots.sample_length=30",
    )
    train(cfg)
    assert_png(plots_dir(cfg) / "samples.png")
    text = (plots_dir(cfg) / "samples.txt").read_text(encoding="utf-8")
    assert text.count("## prompt:") == 2


def test_plots_are_logged_to_wandb_as_images(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[tuple[str, list[Any]]] = []
    monkeypatch.setattr(
        WandbLogger, "log_image", lambda self, key, images, **kw: logged.append((key, images))
    )
    cfg = make_cfg("logger=wandb", "logger.wandb.offline=true")
    train(cfg)
    keys = sorted(key for key, _ in logged)
    assert keys == ["plots/confusion_matrix", "plots/learning_curves"]
    assert all(Path(images[0]).is_file() for _, images in logged)


def test_plots_can_be_switched_off(make_cfg) -> None:
    cfg = make_cfg("callbacks.plots=null")
    train(cfg)
    assert not plots_dir(cfg).exists()


@pytest.mark.parametrize(
    ("names", "slanted"),
    [
        (["1", "2", "3"], False),
        (
            ["x_up_x_down", "x_up_y_up", "y_down_z_down", "y_up_x_up", "z_down_y_up", "z_up_z_up"],
            True,
        ),
        ([str(i) for i in range(12)], True),
    ],
)
def test_confusion_matrix_slants_class_names_that_would_overlap(names, slanted) -> None:
    figure = confusion_matrix_figure(np.eye(len(names), dtype=int), names)
    labels = figure.axes[0].get_xticklabels()
    assert [label.get_text() for label in labels] == names
    assert all((label.get_rotation() == 45) is slanted for label in labels)
