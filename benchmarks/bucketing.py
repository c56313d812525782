"""The bucketing section: one training epoch with and without ``data.bucketing`` (padded steps,
epoch time)."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from benchmarks import timing
from benchmarks.timing import torch_threads
from benchmarks.train_loop import (
    build_for_benchmark,
    lightning_run,
    prepare_training,
    quiet_lightning,
)

#: Sets whose lengths vary most: spoken digits (6-92 frames) and the longest variable-length
#: UCR set of the panel (PLAID, 100-1,344 steps; averaged down to at most 512 by data=ucr).
BUCKETING_SETS = "spoken_digits;ucr data.source=sktime data.name=PLAID"


def epoch_padding(loader: DataLoader) -> dict[str, int]:
    """Real and padded steps in one pass over ``loader``."""
    real = padded = 0
    for batch in loader:
        lengths = batch["lengths"]
        real += int(lengths.sum())
        padded += int(lengths.max()) * len(lengths) - int(lengths.sum())
    return {"real_steps": real, "padded_steps": padded}


def run_bucketing(args: argparse.Namespace) -> dict:
    """One training epoch with and without ``data.bucketing``: padded steps (counted) and the
    epoch's Lightning fit time (interleaved rounds, fastest), as ratios bucketed / shuffled."""
    device = torch.device(args.device)
    result: dict[str, Any] = {}
    print(
        f"\n== bucketing: one training epoch, data.bucketing=true vs false, "
        f"{args.data_rounds} interleaved rounds, clock {timing.CLOCK}",
        flush=True,
    )
    print(
        f"{'data':44}{'padded':>10}{'bucketed':>10}{'ratio':>7}{'epoch s':>9}{'bucketed':>10}"
        f"{'ratio':>7}",
        flush=True,
    )
    with torch_threads(args.train_threads), quiet_lightning():
        for spec in args.bucketing_sets.split(";"):
            overrides = (
                *args.train_overrides,
                *[f"data={w}" if "=" not in w else w for w in spec.split()],
            )
            try:
                result[spec] = _bucketing_pair(overrides, args, device)
            except (ModuleNotFoundError, FileNotFoundError) as err:
                result[spec] = {"skipped": str(err)}
                print(f"{spec:44}skipped: {err}", flush=True)
                continue
            entry = result[spec]
            print(
                f"{spec:44}{entry['plain']['padded_steps']:10}"
                f"{entry['bucketed']['padded_steps']:10}{entry['padded_ratio']:7.2f}"
                f"{entry['plain']['epoch_s']:9.2f}{entry['bucketed']['epoch_s']:10.2f}"
                f"{entry['epoch_ratio']:7.2f}",
                flush=True,
            )
    return result


def _bucketing_pair(
    overrides: Sequence[str], args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    runs: dict[str, Callable[[], float]] = {}
    entry: dict[str, Any] = {"overrides": list(overrides)}
    with tempfile.TemporaryDirectory() as output_dir:
        for name, flag in (("plain", "false"), ("bucketed", "true")):
            cfg, datamodule, _ = build_for_benchmark(
                (*overrides, f"data.bucketing={flag}"), Path(output_dir)
            )
            entry[name] = epoch_padding(datamodule.train_dataloader())
            batches = len(datamodule.train_dataloader())
            if args.quick:
                batches = min(batches, args.data_batches)
            setup = prepare_training(cfg, datamodule, batches, device)
            runs[name] = partial(lambda s, n: lightning_run(s, n)[0], setup, batches)
            entry[name]["batches"] = batches
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.data_rounds + 1):  # the first round warms up
            for name, run in runs.items():
                seconds[name].append(run())
    for name in runs:
        entry[name]["epoch_s"] = min(seconds[name][1:])
        entry[name]["epoch_s_rounds"] = seconds[name][1:]
    plain, bucketed = entry["plain"], entry["bucketed"]
    entry["padded_ratio"] = bucketed["padded_steps"] / max(1, plain["padded_steps"])
    entry["epoch_ratio"] = bucketed["epoch_s"] / plain["epoch_s"]
    return entry
