"""Timing helpers the sections share: the clock (``--clock``), device sync and torch threads."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# "process" counts this process's CPU seconds instead of wall seconds: on a shared machine it
# ignores time spent waiting for a core (honest with one thread; with several it adds them up).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}
# The clock in use: `cli.main` sets it from --clock. Read it as `timing.CLOCK` where it is used
# (`from benchmarks.timing import CLOCK` would keep the value it had at import).
CLOCK = "wall"


def time_once(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds for one call of `fn`; CUDA is timed with events around a synchronised call."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    clock = CLOCKS[CLOCK]
    start_time = clock()
    fn()
    return clock() - start_time


def time_interleaved(
    candidates: dict[str, Callable[[], Any]], device: torch.device, *, warmup: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Best and median seconds per candidate, calling them in turn within every round.

    Interleaving spreads slow drifts (thermal, other processes) over all candidates instead of
    penalising whichever ran last.
    """
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            times[name].append(time_once(fn, device))
    return {
        name: {"best_s": min(values), "median_s": statistics.median(values), "runs": len(values)}
        for name, values in times.items()
    }


def now(device: torch.device) -> float:
    """The benchmark clock (``--clock``), after the device has finished its queued work."""
    synchronize(device)
    return CLOCKS[CLOCK]()


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the block (None: leave it)."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
