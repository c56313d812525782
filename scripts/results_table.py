"""Print the README's results table from the experiments' run folders.

``python scripts/results_table.py [logs]``: one row per reference of issue #4, with the mean
(± std over seeds) of the latest run of each seed of ``experiment=<name>``.

Each run folder (``logs/<task_name>/runs/<time>/``) holds ``metrics.json`` (test metrics),
``.hydra/config.yaml`` (the composed config: ``task_name``, ``seed``, ...) and ``timing.json``
(the fit's wall and CPU time). A row per experiment with a known reference; several seeds of one
experiment are averaged, and a rerun with the same seed replaces the older run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

NOT_RUN = "not run"


@dataclass(frozen=True)
class Reference:
    """What an experiment is measured against.

    ``target`` is a number or the key of another metric of the same runs (e.g. the persistence
    forecast's MAE, which the sunspots runs measure on the same test years).
    """

    task: str
    metric: str
    op: str  # ">=", "<=" or "<"
    target: float | str
    baselines: str
    percent: bool = False

    def met(self, value: float, target: float) -> bool:
        if self.op == ">=":
            return value >= target
        if self.op == "<=":
            return value <= target
        if self.op == "<":
            return value < target
        raise ValueError(f"Reference({self.task!r}).op={self.op!r}: use '>=', '<=' or '<'")


#: experiment (``task_name``) -> its reference, as in issue #4. Order is the table's.
REFERENCES: dict[str, Reference] = {
    "japanese_vowels": Reference(
        "JapaneseVowels", "test/acc", ">=", 0.985, "1-NN DTW 94.9, MLP 97.6, FCN 99.3", True
    ),
    "italy_power_demand": Reference(
        "ItalyPowerDemand",
        "test/acc",
        ">=",
        0.960,
        "1-NN DTW 95.0, FCN 96.3, InceptionTime 96.5",
        True,
    ),
    "spoken_digits": Reference(
        "Spoken digits (FSDD, MFCC)", "test/acc", ">=", 0.985, "1-NN DTW about 98.5", True
    ),
    "shakespeare": Reference(
        "Shakespeare (characters)", "test/bpc", "<=", 2.1, "Witten-Bell 6-gram about 2.4"
    ),
    "adding": Reference("Adding problem, T=200", "test/mse", "<", 0.01, "mean predictor 0.167"),
    "copy": Reference(
        "Copy (delayed recall), delay 50", "test/acc", ">=", 0.99, "chance 12.5 (8 symbols)", True
    ),
    "sunspots": Reference(
        "Sunspots, next year", "test/mae", "<", "test/persistence_mae", "persistence forecast"
    ),
}


@dataclass(frozen=True)
class Run:
    """One finished training run, as read from its folder."""

    path: Path
    experiment: str
    seed: int
    metrics: dict[str, float]
    fit_seconds: float | None
    fit_cpu_seconds: float | None
    finished: float  # mtime of metrics.json: the latest run of a seed wins


def read_run(path: Path) -> Run | None:
    """The run in folder ``path``, or None if it has no metrics or no config (not a run)."""
    metrics_file = path / "metrics.json"
    config = _read_config(path)
    if not metrics_file.is_file() or config is None:
        return None
    if config.get("seed") is None:  # seed=null: a random seed, not one the table can name
        log.warning("%s: left out of the results table, it ran with seed=null", path)
        return None
    timing_file = path / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    return Run(
        path=path,
        experiment=str(config.get("task_name", "")),
        seed=int(config.seed),
        metrics={k: float(v) for k, v in json.loads(metrics_file.read_text()).items()},
        fit_seconds=timing.get("fit_seconds"),
        fit_cpu_seconds=timing.get("fit_cpu_seconds"),
        finished=metrics_file.stat().st_mtime,
    )


def _read_config(path: Path) -> DictConfig | None:
    # Hydra's own copy of the composed config first; the resolved copy seqlab writes otherwise.
    for candidate in (path / ".hydra" / "config.yaml", path / "config.yaml"):
        if candidate.is_file():
            config = OmegaConf.load(candidate)
            assert isinstance(config, DictConfig)
            return config
    return None


def find_runs(root: str | Path) -> list[Run]:
    """Every run below ``root`` (e.g. ``logs/``) that wrote test metrics."""
    runs = (read_run(file.parent) for file in sorted(Path(root).glob("**/metrics.json")))
    return [run for run in runs if run is not None]


def latest_per_seed(runs: Iterable[Run]) -> list[Run]:
    """One run per (experiment, seed): the one that finished last."""
    latest: dict[tuple[str, int], Run] = {}
    for run in runs:
        key = (run.experiment, run.seed)
        if key not in latest or run.finished > latest[key].finished:
            latest[key] = run
    return sorted(latest.values(), key=lambda r: (r.experiment, r.seed))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _number(value: float, percent: bool, like: float | None = None) -> str:
    """Percent to one decimal; otherwise three significant digits of ``like`` (default
    ``value``), so a spread is shown to the decimals of its mean."""
    if percent:
        return f"{100 * value:.1f}"
    like = value if like is None else like
    decimals = 3 if like == 0 else max(0, 2 - math.floor(math.log10(abs(like))))
    return f"{value:.{decimals}f}"


def _mean_duration(seconds: Sequence[float | None]) -> str:
    known = [s for s in seconds if s is not None]
    if not known:
        return "—"
    mean = statistics.fmean(known)
    return f"{mean:.0f} s" if mean < 120 else f"{mean / 60:.1f} min"


def table_rows(runs: Iterable[Run]) -> list[list[str]]:
    """One row per reference: task, metric, reference, seqlab, seeds, fit wall time."""
    by_experiment: dict[str, list[Run]] = {}
    for run in latest_per_seed(runs):
        by_experiment.setdefault(run.experiment, []).append(run)
    rows = []
    for experiment, ref in REFERENCES.items():
        runs_ = [r for r in by_experiment.get(experiment, []) if ref.metric in r.metrics]
        rows.append(_row(ref, runs_))
    return rows


def _row(ref: Reference, runs: list[Run]) -> list[str]:
    sign = {">=": "≥", "<=": "≤", "<": "<"}[ref.op]
    if isinstance(ref.target, str):
        targets = [r.metrics[ref.target] for r in runs if ref.target in r.metrics]
        measured = f" ({_number(statistics.fmean(targets), ref.percent)})" if targets else ""
        reference = f"{sign} {ref.baselines}{measured}"
    else:
        target = f"{100 * ref.target:.1f}" if ref.percent else f"{ref.target:g}"
        reference = f"{sign} {target}; {ref.baselines}"
    if not runs:
        return [ref.task, ref.metric, reference, NOT_RUN, "", ""]

    mean, std = _mean_std([r.metrics[ref.metric] for r in runs])
    value = _number(mean, ref.percent)
    if len(runs) > 1:
        value += f" ± {_number(std, ref.percent, like=mean)}"
    if isinstance(ref.target, str):
        # Each run against its own baseline, measured on the same test data.
        met = all(ref.met(r.metrics[ref.metric], r.metrics[ref.target]) for r in runs)
    else:
        met = ref.met(mean, ref.target)
    wall = _mean_duration([r.fit_seconds for r in runs])
    cpu = _mean_duration([r.fit_cpu_seconds for r in runs])
    if cpu != "—":
        wall += f" ({cpu} CPU)"
    if wall != "—" and len(runs) > 1:
        wall += " per run"
    seeds = ", ".join(str(r.seed) for r in runs)
    return [ref.task, ref.metric, reference, f"{value} {'✓' if met else '✗'}", seeds, wall]


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    header = ["task", "metric", "reference", "seqlab", "seed(s)", "fit wall time (CPU time)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(root: str | Path) -> str:
    """The markdown table for the runs below ``root``."""
    return markdown_table(table_rows(find_runs(root)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="?", default="logs", help="folder to search for runs")
    print(results_table(parser.parse_args().logs))


if __name__ == "__main__":
    main()
