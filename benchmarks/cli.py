"""Benchmarks, one function per section; `scripts/benchmark.py` calls `main`.

    python scripts/benchmark.py                       # every section: encoder, train, data
    python scripts/benchmark.py --quick --json out.json
    python scripts/benchmark.py --sections encoder --time-steps 96 --compile
    python scripts/benchmark.py --sections train,data --clock process --train-overrides model=bilstm

bucketing: one training epoch with and without data.bucketing (padded steps, epoch time).
encoder: fused vs loop LSTM at the seed config. padded: the fused LSTM on padded batches of
varying lengths, the CPU's runs by length vs packing. train: Lightning's Trainer.fit of the task module
vs a hand-written loop on the same model, batches and optimizer (configs/train.yaml composed as
`scripts/train.py` does, loggers and callbacks off). data: batches/s each datamodule's train
loader delivers vs the training steps/s Lightning runs on them.

A section is `run_<name>(args) -> dict` registered in SECTIONS; it prints its own table and
returns JSON-ready results, which `main` collects under `results["sections"][name]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks import timing
from benchmarks.bucketing import BUCKETING_SETS, run_bucketing
from benchmarks.data import DATA_SETS, run_data
from benchmarks.encoder import run_encoder
from benchmarks.padded import run_padded
from benchmarks.timing import CLOCKS
from benchmarks.train_loop import TINY_MODEL, run_train

SECTIONS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "encoder": run_encoder,
    "padded": run_padded,
    "train": run_train,
    "data": run_data,
    "bucketing": run_bucketing,
}

QUICK = {
    "batch_size": 4,
    "time_steps": 6,
    "input_size": 5,
    "hidden_size": 8,
    "layers": 2,
    "rounds": 1,
    "warmup": 1,
    "matmul_size": 256,
    "train_steps": 3,
    "train_rounds": 1,
    "tiny_factor": 1,
    "train_paired_steps": 4,
    "train_paired_runs": 1,
    "train_paired_skip": 1,
    "train_overrides": list(TINY_MODEL),
    "data_sets": "japanese_vowels,adding",
    "data_batches": 5,
    "data_rounds": 1,
    "data_steps": 2,
    # Batch 16: batches enough for bucketing's 4 pools (a set of fewer batches is left as is).
    "bucketing_sets": "japanese_vowels data.batch_size=16",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: a smoke test")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall", help="CPU timing: wall or process time"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--time-steps", type=int, default=192)
    parser.add_argument("--input-size", type=int, default=258)
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="between layers (the seed uses 0.4; 0 keeps the comparison about the LSTM kernels)",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="timed rounds per encoder measurement"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(loop)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="size of the roof matmul")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |output diff| vs fused")
    train = parser.add_argument_group("train section")
    train.add_argument("--train-steps", type=int, default=50, help="N: runs of N and 2N steps")
    train.add_argument("--train-rounds", type=int, default=3, help="interleaved rounds")
    data = parser.add_argument_group("data section")
    data.add_argument("--data-sets", default=",".join(DATA_SETS), help="configs/data/ names")
    data.add_argument("--data-batches", type=int, default=100, help="batches per loader timing")
    data.add_argument("--data-rounds", type=int, default=2, help="rounds (best is reported)")
    data.add_argument(
        "--data-steps", type=int, default=5, help="N for the Lightning steps/s: N and 2N steps"
    )
    data.add_argument(
        "--bucketing-sets",
        default=BUCKETING_SETS,
        help="bucketing section: ';'-separated data configs, each a name or overrides",
    )
    train.add_argument(
        "--train-paired-steps",
        type=int,
        default=300,
        help="the paired design: steps per fit, a twin raw+metrics step beside each Lightning step",
    )
    train.add_argument("--train-paired-runs", type=int, default=3, help="paired fits (0: none)")
    train.add_argument(
        "--train-paired-skip", type=int, default=10, help="first steps of a paired fit left out"
    )
    train.add_argument(
        "--tiny-factor", type=int, default=2, help="the tiny model runs this many times the steps"
    )
    train.add_argument(
        "--train-threads",
        type=int,
        default=1,
        help="torch threads in the train and data sections (0: as --threads). The default model's "
        "small kernels gain nothing from more, and on a busy machine threads that wait for each "
        "other spin: 2 threads ran a step 5-20x slower than 1 on the shared 2-core dev box",
    )
    train.add_argument(
        "--train-overrides",
        nargs="*",
        default=[],
        help="Hydra overrides of configs/train.yaml, e.g. model=bilstm data.batch_size=64",
    )
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {sorted(SECTIONS)}")
    return args


def environment() -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "clock": timing.CLOCK,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    timing.CLOCK = args.clock
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "environment": environment(),
        "args": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()
        },
        "sections": {},
    }
    started = time.perf_counter()
    for name in args.sections.split(","):
        results["sections"][name] = SECTIONS[name](args)
    results["total_seconds"] = time.perf_counter() - started
    print(f"\ntotal {results['total_seconds']:.1f} s", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}", flush=True)
    return results
