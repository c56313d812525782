"""Benchmarks, one function per section; `scripts/benchmark.py` calls `main`.

    python scripts/benchmark.py                       # encoder section at the seed config
    python scripts/benchmark.py --quick --json out.json
    python scripts/benchmark.py --sections encoder --time-steps 96 --compile

A section is `run_<name>(args) -> dict` registered in SECTIONS; it prints its own table and
returns JSON-ready results, which `main` collects under `results["sections"][name]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from seqlab.nn import LSTM

# ------------------------------------------------------------------------------ timing helpers


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# "process" counts this process's CPU seconds instead of wall seconds: on a shared machine it
# ignores time spent waiting for a core (honest with one thread; with several it adds them up).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}
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


def matmul_gflops(device: torch.device, *, size: int, repeats: int = 3) -> float:
    """Throughput of a large square float32 matmul: the roof the LSTM timings are compared to."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b  # warm-up
    seconds = min(time_once(lambda: a @ b, device) for _ in range(repeats))
    return 2 * size**3 / seconds / 1e9


def lstm_forward_flops(
    batch: int, steps: int, input_size: int, hidden: int, layers: int, bidirectional: bool
) -> float:
    """2 * T * B * 4H * (D_in + H) per layer and direction: the input and recurrent products."""
    dirs = 2 if bidirectional else 1
    total = 0.0
    for layer in range(layers):
        layer_input = input_size if layer == 0 else hidden * dirs
        total += dirs * 2 * steps * batch * 4 * hidden * (layer_input + hidden)
    return total


# ---------------------------------------------------------------------------- encoder section


def _lstm_pair(
    args: argparse.Namespace, bidirectional: bool, device: torch.device
) -> dict[str, LSTM]:
    """fused, loop (and compiled loop) LSTMs with identical weights."""
    kwargs = {
        "input_size": args.input_size,
        "hidden_size": args.hidden_size,
        "num_layers": args.layers,
        "batch_first": True,
        "dropout": args.dropout,
        "bidirectional": bidirectional,
        "device": device,
    }
    fused = LSTM(**kwargs, impl="fused")
    loop = LSTM(**kwargs, impl="loop")
    loop.load_state_dict(fused.state_dict())
    models: dict[str, Any] = {"fused": fused, "loop": loop}
    if args.compile:
        models["loop+compile"] = torch.compile(loop)
    return models


def _check_outputs_match(models: dict[str, Any], x: torch.Tensor, tolerance: float) -> dict:
    """Max |difference| of every implementation's eval-mode output from the fused one."""
    differences = {}
    with torch.no_grad():
        for model in models.values():
            model.eval()
        reference, _ = models["fused"](x)
        for name, model in models.items():
            if name == "fused":
                continue
            output, _ = model(x)
            difference = (output.float() - reference.float()).abs().max().item()
            if difference > tolerance:
                raise RuntimeError(
                    f"{name} output differs from fused by {difference:.2e} > {tolerance:.0e}"
                )
            differences[name] = difference
        for model in models.values():
            model.train()
    return differences


def _forward(model: Any, x: torch.Tensor, autocast: AbstractContextManager | None = None):
    def run() -> None:
        with torch.no_grad(), autocast or nullcontext():
            model(x)

    return run


def _forward_backward(model: Any, x: torch.Tensor, autocast: AbstractContextManager | None = None):
    def run() -> None:
        with autocast or nullcontext():
            output, (h_n, _) = model(x)
            loss = output.float().sum() + h_n.float().sum()
        loss.backward()

    return run


def _cpu_bf16_supported() -> bool:
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def _autocast_variants(device: torch.device) -> dict[str, Callable[[], AbstractContextManager]]:
    """Precision settings to compare for the fused encoder on this device."""
    if device.type == "cuda":
        return {
            "fp32": nullcontext,
            "tf32": lambda: _Tf32(),
            "bf16": lambda: torch.autocast("cuda", dtype=torch.bfloat16),
            "fp16": lambda: torch.autocast("cuda", dtype=torch.float16),
        }
    variants: dict[str, Callable[[], AbstractContextManager]] = {"fp32": nullcontext}
    if _cpu_bf16_supported():
        variants["bf16"] = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return variants


class _Tf32(AbstractContextManager):
    """Allow TF32 in cuBLAS and cuDNN for the duration of the block."""

    def __enter__(self) -> None:
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def __exit__(self, *exc: object) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def run_encoder(args: argparse.Namespace) -> dict:
    """fused vs loop LSTM: forward and forward+backward, uni- and bidirectional, then precisions."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    roof = matmul_gflops(device, size=args.matmul_size)
    config = {
        key: getattr(args, key)
        for key in ("batch_size", "time_steps", "input_size", "hidden_size", "layers", "dropout")
    }
    result: dict[str, Any] = {"config": config, "matmul_gflops": roof, "directions": {}}
    print(
        f"\n== encoder: {config}, device {device}, fp32 matmul roof {roof:.1f} GFLOP/s", flush=True
    )

    x = torch.rand(args.batch_size, args.time_steps, args.input_size, device=device)
    header = f"{'':15}{'impl':>14}{'best s':>10}{'median s':>10}{'GFLOP/s':>10}{'% roof':>8}"
    for bidirectional in (False, True):
        direction = "bidirectional" if bidirectional else "unidirectional"
        models = _lstm_pair(args, bidirectional, device)
        differences = _check_outputs_match(models, x, args.tolerance)
        forward_flops = lstm_forward_flops(
            args.batch_size,
            args.time_steps,
            args.input_size,
            args.hidden_size,
            args.layers,
            bidirectional,
        )
        entry: dict[str, Any] = {"max_abs_difference_vs_fused": differences}
        print(f"\n{direction}: outputs match fused (max |diff| {differences})", flush=True)
        print(header, flush=True)
        for pass_name, make, flops in (
            ("forward", _forward, forward_flops),
            ("forward_backward", _forward_backward, 3 * forward_flops),  # backward ~ 2x forward
        ):
            timings = time_interleaved(
                {name: make(model, x) for name, model in models.items()},
                device,
                warmup=args.warmup,
                rounds=args.rounds,
            )
            for name, timing in timings.items():
                timing["gflops"] = flops / timing["best_s"] / 1e9
                timing["share_of_matmul"] = timing["gflops"] / roof
                print(
                    f"{pass_name:15}{name:>14}{timing['best_s']:10.3f}{timing['median_s']:10.3f}"
                    f"{timing['gflops']:10.1f}{100 * timing['share_of_matmul']:7.0f}%",
                    flush=True,
                )
            ratios = {
                name: timing["best_s"] / timings["fused"]["best_s"]
                for name, timing in timings.items()
                if name != "fused"
            }
            print(f"{'':15}{'ratio to fused (best): ':>24}{ratios}", flush=True)
            entry[pass_name] = {"timings": timings, "ratio_to_fused": ratios}
        result["directions"][direction] = entry

    result["precision"] = _run_precisions(args, device, x)
    return result


def _run_precisions(args: argparse.Namespace, device: torch.device, x: torch.Tensor) -> dict:
    """The fused bidirectional encoder in each precision the device offers, against fp32."""
    variants = _autocast_variants(device)
    precision: dict[str, Any] = {}
    if device.type == "cpu" and "bf16" not in variants:
        precision["bf16"] = "unsupported"
    models = _lstm_pair(argparse.Namespace(**{**vars(args), "compile": False}), True, device)
    impls = ("fused", "loop") if device.type == "cuda" else ("fused",)
    print(f"\nprecision (bidirectional, impls {impls}):", flush=True)
    for impl in impls:
        for pass_name, make in (("forward", _forward), ("forward_backward", _forward_backward)):
            timings = time_interleaved(
                {name: make(models[impl], x, context()) for name, context in variants.items()},
                device,
                warmup=args.warmup,
                rounds=args.rounds,
            )
            speedups = {
                name: timings["fp32"]["best_s"] / timing["best_s"]
                for name, timing in timings.items()
            }
            for name, timing in timings.items():
                print(
                    f"  {impl:6}{pass_name:18}{name:6}{timing['best_s']:10.3f} s"
                    f"   speed-up vs fp32 {speedups[name]:.2f}x",
                    flush=True,
                )
            precision.setdefault(impl, {})[pass_name] = {
                "timings": timings,
                "speedup_vs_fp32": speedups,
            }
    return precision


# ----------------------------------------------------------------------------------------- main

SECTIONS: dict[str, Callable[[argparse.Namespace], dict]] = {"encoder": run_encoder}

QUICK = {
    "batch_size": 4,
    "time_steps": 6,
    "input_size": 5,
    "hidden_size": 8,
    "layers": 2,
    "rounds": 1,
    "warmup": 1,
    "matmul_size": 256,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--sections", default="encoder", help=f"comma-separated: {', '.join(SECTIONS)}"
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
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(loop)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="size of the roof matmul")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |output diff| vs fused")
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
        "clock": CLOCK,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    global CLOCK
    args = parse_args(argv)
    CLOCK = args.clock
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
