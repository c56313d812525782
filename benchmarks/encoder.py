"""The encoder section: fused vs loop LSTM at the seed config, then each precision the device
offers; timings against a large matmul's throughput (the roof)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from benchmarks.timing import time_interleaved, time_once
from seqlab.nn import LSTM


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


def _forward(
    model: Any, x: torch.Tensor, autocast: AbstractContextManager | None = None
) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad(), autocast or nullcontext():
            model(x)

    return run


def _forward_backward(
    model: Any, x: torch.Tensor, autocast: AbstractContextManager | None = None
) -> Callable[[], None]:
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
