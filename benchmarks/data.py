"""The data section: batches/s each datamodule's train loader delivers vs the training steps/s
Lightning runs on them."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from benchmarks import timing
from benchmarks.timing import now, torch_threads
from benchmarks.train_loop import (
    build_for_benchmark,
    lightning_run,
    lightning_step_s,
    prepare_training,
    quiet_lightning,
    record_lightning_step_s,
    time_per_step,
)

# Config names under configs/data/ that the default run times; more: --data-sets.
DATA_SETS = ("japanese_vowels", "spoken_digits", "adding", "shakespeare")
# --quick: small synthetic sets, so a smoke test does not generate 10,000 sequences.
QUICK_DATA_OVERRIDES = {
    "adding": ("data.train_size=64", "data.val_size=8", "data.test_size=8", "data.seq_len=20"),
    "copy": ("data.train_size=64", "data.val_size=8", "data.test_size=8", "data.delay=5"),
}


def loader_batches_per_second(
    loader: Callable[[], DataLoader], batches: int, rounds: int, device: torch.device
) -> dict[str, Any]:
    """Batches per second a fresh iterator of ``loader()`` delivers (cycling epochs), the
    fastest of ``rounds``; the iterator's creation counts, as it does every epoch."""
    times = []
    for _ in range(rounds + 1):  # the first is a warm-up
        start = now(device)
        delivered = 0
        while delivered < batches:
            for _ in islice(loader(), batches - delivered):
                delivered += 1
        times.append(now(device) - start)
    return {"batches_per_s": batches / min(times[1:]), "batches": batches, "seconds": times[1:]}


def run_data(args: argparse.Namespace) -> dict:
    """Batches per second each datamodule's train loader delivers, against the training steps
    per second Lightning runs on the same batches (target: delivery >= 10x consumption)."""
    device = torch.device(args.device)
    result: dict[str, Any] = {}
    print(
        f"\n== data: train loader batches/s (no model) vs Lightning training steps/s on the same "
        f"batches (data loading excluded), {args.data_batches} batches, clock {timing.CLOCK}",
        flush=True,
    )
    print(
        f"{'data':18}{'task':18}{'batch':>6}{'setup s':>9}{'delivered/s':>13}{'consumed/s':>12}"
        f"{'ratio':>8}  >= 10x",
        flush=True,
    )
    with torch_threads(args.train_threads), quiet_lightning():
        for name in args.data_sets.split(","):
            overrides = (*args.train_overrides, f"data={name}")
            if args.quick:
                overrides = (*overrides, *QUICK_DATA_OVERRIDES.get(name, ()))
            try:
                result[name] = _data_throughput(overrides, args, device)
            except ModuleNotFoundError as err:  # an optional data package is not installed
                result[name] = {"skipped": str(err)}
                print(f"{name:18}skipped: {err}", flush=True)
                continue
            entry = result[name]
            print(
                f"{name:18}{entry['task']:18}{entry['batch_size']:6}{entry['setup_seconds']:9.2f}"
                f"{entry['delivered_batches_per_s']:13.1f}{entry['consumed_steps_per_s']:12.1f}"
                f"{entry['ratio']:8.1f}  {'met' if entry['target_met'] else 'NOT met'}",
                flush=True,
            )
    return result


def _data_throughput(
    overrides: Sequence[str], args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as output_dir:
        cfg, datamodule, setup_seconds = build_for_benchmark(overrides, Path(output_dir))
        delivered = loader_batches_per_second(
            datamodule.train_dataloader, args.data_batches, args.data_rounds, device
        )
        source = "train section"
        step_s = lightning_step_s(cfg)
        if step_s is None:
            source = "measured here"
            setup = prepare_training(cfg, datamodule, 2 * args.data_steps, device)
            timings, _ = time_per_step(
                {"lightning": partial(lightning_run, setup)}, args.data_steps, args.data_rounds
            )
            step_s = timings["lightning"]["step_s"]
            record_lightning_step_s(cfg, step_s)
    consumed = 1 / step_s if step_s > 0 else float("inf")
    ratio = delivered["batches_per_s"] / consumed
    return {
        "overrides": list(overrides),
        "task": getattr(datamodule, "task", type(datamodule).__name__),
        "batch_size": cfg.data.batch_size,
        "setup_seconds": setup_seconds,
        "delivered_batches_per_s": delivered["batches_per_s"],
        "delivered": delivered,
        "consumed_steps_per_s": consumed,
        "lightning_step_s": step_s,
        "consumed_from": source,
        "ratio": ratio,
        "target_met": ratio >= 10,
    }
