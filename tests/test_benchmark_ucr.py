"""scripts/benchmark_ucr.py: the panel runs the default recipe and prints its table from the
runs' own metrics.json files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark_ucr.py"
TINY = [
    "budget.steps=1",
    "budget.min_epochs=1",
    "model.encoder.hidden_size=8",
    "model.encoder.conv_channels=[4,8,4]",
]


def panel(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_tiny_panel_trains_each_seed_and_tables_its_metrics(tmp_path):
    done = panel(tmp_path, "--sets", "GunPoint", "--seeds", "1", "2", "--", *TINY)
    assert done.returncode == 0, done.stdout + done.stderr
    accs = []
    for seed in (1, 2):
        run = tmp_path / "GunPoint" / f"seed{seed}"
        accs.append(json.loads((run / "metrics.json").read_text())["test/acc"])
        config = (run / ".hydra" / "overrides.yaml").read_text()
        assert "data=ucr" in config and f"seed={seed}" in config
    row = next(line for line in done.stdout.splitlines() if line.startswith("| GunPoint"))
    mean = 100 * sum(accs) / 2
    assert f"| {mean:.1f} ± " in row and "(2)" in row
    # The published and measured references sit beside it.
    assert "| 90.7 (90.7) |" in row
    # Run again: nothing is trained twice.
    again = panel(tmp_path, "--sets", "GunPoint", "--seeds", "1", "2", "--", *TINY)
    assert again.stdout.count("done before") == 2


def test_an_unknown_set_is_refused_with_the_panel_names(tmp_path):
    done = panel(tmp_path, "--sets", "Nope", "--table-only")
    assert done.returncode == 2
    assert "--sets Nope: not in the panel (ACSF1, ArrowHead" in done.stderr


@pytest.mark.slow
def test_the_full_panel_meets_the_issue_15_targets(tmp_path):
    """The whole panel, three seeds (hours on 2 cores): the default recipe at or above 1-NN
    DTW on every set and within 2 points of FCN on two thirds of the sets where it is
    published."""
    done = panel(tmp_path / "panel")
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    rows = [
        line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line
    ]
    numbers = [int(word) for word in summary.replace(";", " ").split() if word.isdigit()]
    beats, close, with_fcn = numbers[0], numbers[2], numbers[3]
    assert beats == len(rows) - 1  # every set but the header row
    assert 3 * close >= 2 * with_fcn


def test_dtw_baseline_names_the_panel_when_asked_for_another_set():
    script = ROOT / "scripts" / "dtw_baseline.py"
    run = [sys.executable, str(script)]
    shown = subprocess.run([*run, "--help"], capture_output=True, text=True, check=False)
    assert shown.returncode == 0 and "PLAID" in shown.stdout
    refused = subprocess.run([*run, "NoSuchSet"], capture_output=True, text=True, check=False)
    assert refused.returncode == 2
    assert "not a panel set: NoSuchSet; the panel: ACSF1" in refused.stderr
