"""The padded section: the fused LSTM on padded batches of varying lengths, fwd+bwd, run by
distinct lengths (`LSTM._fused_runs`, oneDNN's kernel, the CPU default) vs packed (torch's
`pack_padded_sequence` path, an ATen step loop on the CPU)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

import seqlab.nn.lstm as lstm_module
from benchmarks import timing
from benchmarks.timing import torch_threads
from seqlab.nn import LSTM

#: (name, batch, steps, input size, hidden size, layers, bidirectional, shortest length): the
#: LSTMs of this project's recipes at the sizes of their variable-length data. Lengths are
#: drawn uniformly from shortest..steps, one sequence at full length.
SHAPES: tuple[tuple[str, int, int, int, int, int, bool, int], ...] = (
    ("lstm_fcn's LSTM, 16 x 60-300 steps", 16, 300, 3, 8, 1, False, 60),
    ("lstm_fcn's LSTM, 16 x 34-448 steps", 16, 448, 1, 8, 1, False, 34),
    ("model=lstm, 32 x 6-92 steps", 32, 92, 13, 128, 2, False, 6),
    ("model=bilstm, 32 x 6-92 steps", 32, 92, 13, 128, 2, True, 6),
)


@contextmanager
def _packed(enabled: bool) -> Iterator[None]:
    saved = lstm_module.FUSED_RUNS
    lstm_module.FUSED_RUNS = not enabled
    try:
        yield
    finally:
        lstm_module.FUSED_RUNS = saved


def _step(model: LSTM, x: torch.Tensor, lengths: torch.Tensor, packed: bool) -> Callable[[], None]:
    def run() -> None:
        with _packed(packed):
            output, (h_n, c_n) = model(x, lengths=lengths)
            (output.sum() + h_n.sum() + c_n.sum()).backward()

    return run


def run_padded(args: argparse.Namespace) -> dict:
    """Runs vs packed for each of SHAPES (CPU only: elsewhere the fused path always packs)."""
    device = torch.device(args.device)
    if device.type != "cpu":
        print("\n== padded: CPU only (cuDNN takes packed batches natively); skipped", flush=True)
        return {"skipped": f"device {device.type}"}
    result: dict[str, Any] = {}
    print(
        f"\n== padded: fused LSTM fwd+bwd on a padded batch, runs by length vs packed, "
        f"{args.rounds} interleaved rounds (median), clock {timing.CLOCK}",
        flush=True,
    )
    print(f"{'shape':40}{'runs':>6}{'runs ms':>9}{'packed ms':>11}{'ratio':>7}", flush=True)
    shapes = SHAPES[:1] if args.quick else SHAPES
    with torch_threads(args.threads):
        for name, batch, steps, features, hidden, layers, bi, shortest in shapes:
            generator = torch.Generator().manual_seed(0)
            model = LSTM(features, hidden, layers, batch_first=True, bidirectional=bi)
            x = torch.randn(batch, steps, features, generator=generator)
            lengths = torch.randint(shortest, steps + 1, (batch,), generator=generator)
            lengths[0] = steps
            times = timing.time_interleaved(
                {
                    "runs": _step(model, x, lengths, packed=False),
                    "packed": _step(model, x, lengths, packed=True),
                },
                device,
                warmup=args.warmup,
                rounds=args.rounds,
            )
            runs_s, packed_s = times["runs"]["median_s"], times["packed"]["median_s"]
            distinct = len(lengths.unique())
            result[name] = {
                "distinct_lengths": distinct,
                "runs_s": runs_s,
                "packed_s": packed_s,
                "ratio": runs_s / packed_s,
            }
            print(
                f"{name:40}{distinct:6}{runs_s * 1e3:9.1f}{packed_s * 1e3:11.1f}"
                f"{runs_s / packed_s:7.2f}",
                flush=True,
            )
    return result
