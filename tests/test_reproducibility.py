"""Same seed, same results: two CPU runs write identical metrics.json files."""

from __future__ import annotations

from pathlib import Path

from seqlab.train import train
from tests.conftest import TINY, compose_config

# Dropout, input noise, shuffling and two epochs: every source of randomness in a run.
RUN = [*TINY, "trainer.max_epochs=2", "model.encoder.dropout=0.3"]


def metrics_file(tmp_path: Path, name: str, *overrides: str) -> bytes:
    run_dir = tmp_path / name
    train(compose_config("train", [*RUN, *overrides], run_dir))
    return (run_dir / "metrics.json").read_bytes()


def test_two_runs_with_the_same_seed_write_identical_metrics(tmp_path) -> None:
    first = metrics_file(tmp_path, "a", "seed=7")
    assert metrics_file(tmp_path, "b", "seed=7") == first
    assert metrics_file(tmp_path, "c", "seed=8") != first
