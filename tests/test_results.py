"""The results table is built from run folders, never typed: what it reads and how it sums up."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "results_table.py"


def load_script() -> ModuleType:
    """scripts/results_table.py, which holds the table's code, as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("results_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # where @dataclass looks its module up
    spec.loader.exec_module(module)
    return module


results = load_script()
NOT_RUN, REFERENCES, find_runs = results.NOT_RUN, results.REFERENCES, results.find_runs
results_table, table_rows = results.results_table, results.table_rows


def fake_run(
    root: Path,
    experiment: str,
    seed: int | None,
    metrics: dict[str, float],
    fit_seconds: float | None = 60.0,
    fit_cpu_seconds: float | None = None,
    finished: float = 1_000_000.0,
) -> Path:
    """A run folder as `scripts/train.py experiment=<experiment> seed=<seed>` leaves it."""
    run = root / experiment / "runs" / f"{finished:.0f}-{seed}"
    (run / ".hydra").mkdir(parents=True)
    config = {"task_name": experiment, "seed": seed, "data": {"batch_size": 8}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.json").write_text(json.dumps(metrics))
    if fit_seconds is not None:
        timing = {"fit_seconds": fit_seconds}
        if fit_cpu_seconds is not None:
            timing["fit_cpu_seconds"] = fit_cpu_seconds
        (run / "timing.json").write_text(json.dumps(timing))
    os.utime(run / "metrics.json", (finished, finished))
    return run


def row(rows: list[list[str]], experiment: str) -> list[str]:
    return next(r for r in rows if r[0] == REFERENCES[experiment].task)


def test_every_reference_has_a_row_and_missing_runs_say_so(tmp_path) -> None:
    rows = table_rows(find_runs(tmp_path))
    assert [r[0] for r in rows] == [ref.task for ref in REFERENCES.values()]
    assert all(r[3] == NOT_RUN for r in rows)


def test_seeds_are_averaged_and_a_rerun_of_a_seed_replaces_the_older_run(tmp_path) -> None:
    fake_run(tmp_path, "spoken_digits", 1, {"test/acc": 0.50}, finished=1_000)
    fake_run(tmp_path, "spoken_digits", 1, {"test/acc": 0.98}, fit_seconds=100, finished=2_000)
    fake_run(tmp_path, "spoken_digits", 2, {"test/acc": 1.0}, fit_seconds=200, fit_cpu_seconds=60)
    _, metric, reference, value, seeds, wall = row(table_rows(find_runs(tmp_path)), "spoken_digits")
    assert metric == "test/acc" and reference.startswith("≥ 98.5")
    assert value == "99.0 ± 1.4 ✓"  # mean of 98 and 100, the 0.50 run replaced
    assert seeds == "1, 2"
    # CPU time where the runs recorded it (the older train() did not).
    assert wall == "2.5 min (60 s CPU) per run"


def test_targets_below_the_bar_are_marked_unmet(tmp_path) -> None:
    fake_run(tmp_path, "adding", 3, {"test/mse": 0.02}, fit_seconds=30)
    fake_run(tmp_path, "copy", 3, {"test/acc": 0.995}, fit_seconds=None)
    rows = table_rows(find_runs(tmp_path))
    assert row(rows, "adding")[3:] == ["0.0200 ✗", "3", "30 s"]
    assert row(rows, "copy")[3:] == ["99.5 ✓", "3", "—"]


def test_sunspots_is_judged_against_persistence_on_the_same_test_years(tmp_path) -> None:
    fake_run(tmp_path, "sunspots", 1, {"test/mae": 0.3, "test/persistence_mae": 0.6})
    reference, value = row(table_rows(find_runs(tmp_path)), "sunspots")[2:4]
    assert reference == "< persistence forecast (0.600)"
    assert value == "0.300 ✓"
    fake_run(tmp_path, "sunspots", 2, {"test/mae": 0.35, "test/persistence_mae": 0.6})
    assert row(table_rows(find_runs(tmp_path)), "sunspots")[3] == "0.325 ± 0.035 ✓"
    fake_run(tmp_path, "sunspots", 3, {"test/mae": 0.7, "test/persistence_mae": 0.6})
    assert row(table_rows(find_runs(tmp_path)), "sunspots")[3].endswith("✗")


def test_folders_that_are_not_experiment_runs_are_left_out(tmp_path) -> None:
    fake_run(tmp_path, "debug", 1, {"test/acc": 1.0})
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "metrics.json").write_text("{}")  # no config: not a run
    assert [run.experiment for run in find_runs(tmp_path)] == ["debug"]
    assert all(r[3] == NOT_RUN for r in table_rows(find_runs(tmp_path)))


def test_runs_with_a_random_seed_are_left_out(tmp_path, caplog) -> None:
    fake_run(tmp_path, "adding", 1, {"test/mse": 0.002})
    unseeded = fake_run(tmp_path, "adding", None, {"test/mse": 0.5}, finished=2_000_000.0)
    assert [run.seed for run in find_runs(tmp_path)] == [1]
    assert f"{unseeded}: left out of the results table, it ran with seed=null" in caplog.text


def test_script_prints_a_markdown_table(tmp_path) -> None:
    fake_run(tmp_path, "italy_power_demand", 5, {"test/acc": 0.9612})
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == results_table(tmp_path)
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("| task | metric | reference | seqlab |")
    assert "| ItalyPowerDemand | test/acc | ≥ 96.0;" in lines[3]
    assert "| 96.1 ✓ | 5 | 60 s |" in lines[3]
