"""Benchmarks, one function per section; `scripts/benchmark.py` calls `main`.

    python scripts/benchmark.py                       # every section: encoder, train, data
    python scripts/benchmark.py --quick --json out.json
    python scripts/benchmark.py --sections encoder --time-steps 96 --compile
    python scripts/benchmark.py --sections train,data --clock process --train-overrides model=bilstm

bucketing: one training epoch with and without data.bucketing (padded steps, epoch time).
encoder: fused vs loop LSTM at the seed config. train: Lightning's Trainer.fit of the task module
vs a hand-written loop on the same model, batches and optimizer (configs/train.yaml composed as
`scripts/train.py` does, loggers and callbacks off). data: batches/s each datamodule's train
loader delivers vs the training steps/s Lightning runs on them.

A section is `run_<name>(args) -> dict` registered in SECTIONS; it prints its own table and
returns JSON-ready results, which `main` collects under `results["sections"][name]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from seqlab.nn import LSTM
from seqlab.pipeline import build_datamodule, build_model
from seqlab.tasks import SequenceClassifier, SequenceTask

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


# ----------------------------------------------------------------------- training-loop section

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# Every Lightning extra that is not the training itself is off: loggers, callbacks (checkpoints,
# progress bar, model summary, LR monitor); the scheduler steps once per epoch, after the last
# step of a run here, so it cannot change a loss and is left out of both loops.
BENCH_OVERRIDES = ("logger=none", "callbacks=none", "model.scheduler=null")

RAW_WORK = "forward, cross-entropy, backward, clip_grad_norm_, optimizer step, zero_grad"
LOOPS = {
    "raw": RAW_WORK,
    "raw+metrics": RAW_WORK + ", the task's metric updates (loss mean, acc, F1)",
    "lightning": "Trainer.fit of the task module: all of the above plus the task's self.log calls",
    "lightning-no-log": "diagnostic: lightning with the task's self.log calls made no-ops",
}


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence what Lightning prints at every fit (device lines, tips, `max_steps` reached)."""
    names = ("lightning", "lightning.pytorch", "lightning.fabric")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*no `val_dataloader`.*")
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def compose_train_config(
    overrides: Sequence[str], output_dir: Path, config_dir: Path = CONFIG_DIR
) -> DictConfig:
    """``configs/train.yaml`` as `scripts/train.py` composes it, benchmark extras off."""
    with initialize_config_dir(str(config_dir.resolve()), version_base="1.3"):
        return compose(
            "train",
            overrides=[*BENCH_OVERRIDES, f"paths.output_dir={output_dir}", *overrides],
        )


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


@dataclass
class TrainingSetup:
    """A task module, its initial weights, and the batches every timed run replays in order."""

    cfg: DictConfig
    model: SequenceTask
    initial_state: dict[str, torch.Tensor]
    batches: list[dict[str, torch.Tensor]]
    device: torch.device
    seed: int

    def reset(self) -> None:
        """Same weights, no gradients (Lightning leaves the last step's) and the same random
        stream (dropout) at the start of every run."""
        self.model.load_state_dict(self.initial_state)
        self.model.zero_grad(set_to_none=True)
        torch.manual_seed(self.seed)

    def loader(self, steps: int) -> DataLoader:
        # batch_size=None hands the stored batches over as they are.
        return DataLoader(self.batches[:steps], batch_size=None)  # type: ignore[arg-type]


def build_for_benchmark(
    overrides: Sequence[str], output_dir: Path
) -> tuple[DictConfig, L.LightningDataModule, float]:
    """The config, composed; the datamodule, set up as `train()` does; setup seconds."""
    cfg = compose_train_config(overrides, output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    start = time.perf_counter()
    datamodule = build_datamodule(cfg)
    return cfg, datamodule, time.perf_counter() - start


def prepare_training(
    cfg: DictConfig, datamodule: L.LightningDataModule, batches: int, device: torch.device
) -> TrainingSetup:
    """The task module as `train()` builds it, and ``batches`` training batches drawn (cycling
    epochs) from the datamodule's own train loader."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg, datamodule).to(device)
    drawn: list[dict[str, torch.Tensor]] = []
    while len(drawn) < batches:
        drawn.extend(islice(datamodule.train_dataloader(), batches - len(drawn)))
    initial_state = {key: value.clone() for key, value in model.state_dict().items()}
    return TrainingSetup(cfg, model, initial_state, drawn, device, int(cfg.seed))


class _LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.losses.append(outputs["loss"].detach())


RunResult = tuple[float, list[float]]


def lightning_run(setup: TrainingSetup, steps: int, log: bool = True) -> RunResult:
    """Seconds for a whole ``Trainer.fit`` of ``steps`` steps (trainer built inside the timing)
    and the loss of every step. ``log=False`` turns the task's ``self.log`` calls into no-ops
    (a diagnostic: what they cost; the metric updates still run)."""
    setup.reset()
    if not log:
        setup.model.log = _no_log  # type: ignore[method-assign]
    recorder = _LossRecorder()
    start = now(setup.device)
    trainer = instantiate(
        setup.cfg.trainer,
        accelerator="gpu" if setup.device.type == "cuda" else "cpu",
        default_root_dir=setup.cfg.paths.output_dir,
        logger=False,
        callbacks=[recorder],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=1,
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    try:
        trainer.fit(setup.model, train_dataloaders=setup.loader(steps))
    finally:
        setup.model.__dict__.pop("log", None)
    seconds = now(setup.device) - start
    if not log:  # Lightning resets only the metrics it was given
        setup.model.train_loss_mean.reset()
        setup.model.train_metrics.reset()
    return seconds, [loss.item() for loss in recorder.losses]


def _no_log(*args: Any, **kwargs: Any) -> None:
    return None


def raw_run(setup: TrainingSetup, steps: int, metrics: bool) -> RunResult:
    """The same steps in a hand-written loop: the task's forward and loss, the trainer config's
    gradient clipping, the task's optimizer; with ``metrics`` also the task's metric updates."""
    model = setup.model
    if not isinstance(model, SequenceClassifier):
        raise ValueError(f"the raw loop is written for classification, not {type(model).__name__}")
    trainer_cfg = setup.cfg.trainer
    if str(trainer_cfg.get("precision", "32-true")) != "32-true":
        raise ValueError("the raw loop runs trainer.precision=32-true only")
    if trainer_cfg.get("gradient_clip_algorithm", "norm") != "norm":
        raise ValueError("the raw loop clips by norm (trainer.gradient_clip_algorithm=norm)")
    clip = trainer_cfg.get("gradient_clip_val")
    setup.reset()
    losses: list[torch.Tensor] = []
    start = now(setup.device)
    optimizer = model.configure_optimizers()
    model.train()
    for batch in setup.loader(steps):
        batch = {key: value.to(setup.device) for key, value in batch.items()}
        logits = model(batch["x"], batch["lengths"])
        loss = F.cross_entropy(logits.float(), batch["y"])
        if metrics:
            model.train_loss_mean.update(loss.detach().float(), len(batch["y"]))
            model.train_metrics.update(logits.detach(), batch["y"])
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.detach())
    seconds = now(setup.device) - start
    if metrics:  # as Lightning does at the end of an epoch
        model.train_loss_mean.reset()
        model.train_metrics.reset()
    return seconds, [loss.item() for loss in losses]


def time_per_step(
    runs: dict[str, Callable[[int], RunResult]], steps: int, rounds: int
) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]]]:
    """Per-step seconds of each run from two run lengths, ``(t(2N) - t(N)) / N`` in each round,
    so whatever a run costs once (trainer, optimizer, iterator) cancels. Runs are interleaved
    within every round, so a round's figures share the machine's load. Returns, per run, the
    median and the fastest round's figure and every round's, and the per-step losses of each
    run's last (longest) run."""
    lengths = (steps, 2 * steps)
    for run in runs.values():  # warm-up: first calls, allocator, oneDNN primitive caches
        run(2)
    seconds: dict[str, dict[int, list[float]]] = {name: {n: [] for n in lengths} for name in runs}
    losses: dict[str, list[float]] = {}
    for _ in range(rounds):
        for n in lengths:
            for name, run in runs.items():
                elapsed, run_losses = run(n)
                seconds[name][n].append(elapsed)
                losses[name] = run_losses
    timings = {}
    for name, by_length in seconds.items():
        per_round = [
            (long - short) / steps
            for short, long in zip(by_length[steps], by_length[2 * steps], strict=True)
        ]
        timings[name] = {
            "step_s": statistics.median(per_round),
            "step_s_min": min(per_round),
            "step_s_rounds": per_round,
            "run_seconds": {str(n): values for n, values in by_length.items()},
        }
    return timings, losses


def max_loss_difference(losses: dict[str, list[float]], reference: str) -> dict[str, float]:
    differences = {}
    for name, values in losses.items():
        if name != reference:
            if len(values) != len(losses[reference]):
                raise RuntimeError(
                    f"{name} ran {len(values)} steps, {reference} ran {len(losses[reference])}"
                )
            differences[name] = max(
                abs(a - b) for a, b in zip(values, losses[reference], strict=True)
            )
    return differences


# Per-step Lightning seconds by data and model config, so the data section reuses the training
# section's figure instead of measuring the same thing again.
_LIGHTNING_STEP_S: dict[str, float] = {}


def _config_key(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg.data) + OmegaConf.to_yaml(cfg.model)


# A model so small that its step is mostly fixed per-step costs: what Lightning adds per step
# shows there clearly, while at the default size it is within the machine's noise.
TINY_MODEL = ("model.encoder.hidden_size=8", "model.encoder.num_layers=1")


def run_train(args: argparse.Namespace) -> dict:
    """Lightning vs a hand-written loop on the same task module, batches and optimizer: at the
    config's model size, and with a tiny model whose steps show the fixed per-step cost."""
    device = torch.device(args.device)
    overrides = tuple(args.train_overrides)
    variants = {
        "default": (overrides, args.train_steps, False),
        "tiny": ((*overrides, *TINY_MODEL), args.train_steps * args.tiny_factor, True),
    }
    result: dict[str, Any] = {}
    with torch_threads(args.train_threads):
        for label, (variant_overrides, steps, diagnose) in variants.items():
            result[label] = compare_loops(
                variant_overrides, steps, args.train_rounds, device, diagnose
            )
            _print_train(label, result[label])
    for label, entry in result.items():
        if not entry["losses_agree_to_5_decimals"]:
            differences = entry["max_abs_loss_difference_vs_lightning"]
            raise RuntimeError(f"{label}: Lightning and raw losses differ: {differences}")
    return result


def compare_loops(
    overrides: Sequence[str], steps: int, rounds: int, device: torch.device, diagnose: bool
) -> dict[str, Any]:
    """Time the raw, raw+metrics and Lightning loops on one config (and, to ``diagnose``,
    Lightning without the task's self.log calls); compare their losses."""
    with tempfile.TemporaryDirectory() as output_dir, quiet_lightning():
        cfg, datamodule, _ = build_for_benchmark(overrides, Path(output_dir))
        setup = prepare_training(cfg, datamodule, 2 * steps, device)
        runs: dict[str, Callable[[int], RunResult]] = {
            "raw": partial(raw_run, setup, metrics=False),
            "raw+metrics": partial(raw_run, setup, metrics=True),
            "lightning": partial(lightning_run, setup),
        }
        if diagnose:
            runs["lightning-no-log"] = partial(lightning_run, setup, log=False)
        timings, losses = time_per_step(runs, steps, rounds)
        _LIGHTNING_STEP_S[_config_key(cfg)] = timings["lightning"]["step_s"]
    differences = max_loss_difference(losses, "lightning")
    encoder = setup.cfg.model.encoder
    config = {
        "overrides": list(overrides),
        "data": setup.cfg.data.get("name", setup.cfg.data._target_.rsplit(".", 1)[-1]),
        "task": type(setup.model).__name__,
        "batch_size": setup.cfg.data.batch_size,
        "hidden_size": encoder.hidden_size,
        "layers": encoder.num_layers,
        "bidirectional": encoder.bidirectional,
        "impl": encoder.impl,
        "parameters": sum(p.numel() for p in setup.model.parameters()),
        "gradient_clip_val": setup.cfg.trainer.get("gradient_clip_val"),
        "optimizer": setup.cfg.model.optimizer._target_,
        "steps": [steps, 2 * steps],
        "rounds": rounds,
        "torch_threads": torch.get_num_threads(),
    }
    result = {
        "config": config,
        "loops": {name: {"work": LOOPS[name], **timings[name]} for name in runs},
        "max_abs_loss_difference_vs_lightning": differences,
        "losses_agree_to_5_decimals": max(differences.values()) <= 1e-5,
        "overhead": {
            against: _overhead(timings["lightning"], timings[against])
            for against in ("raw+metrics", "raw")
        },
    }
    if diagnose:
        self_log = _overhead(timings["lightning"], timings["lightning-no-log"])
        result["cost_of_self_log_ms"] = self_log["ms"]
        result["cost_of_self_log_ms_rounds"] = self_log["ms_rounds"]
        rest = _overhead(timings["lightning-no-log"], timings["raw+metrics"])
        result["lightning_loop_cost_ms"] = rest["ms"]
    return result


def _overhead(lightning: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """Lightning's extra time per step, the median of the rounds' differences (each round's runs
    shared the machine's load), against the target: <= raw + max(1 ms, 2%)."""
    rounds = [a - b for a, b in zip(lightning["step_s_rounds"], raw["step_s_rounds"], strict=True)]
    extra = statistics.median(rounds)
    allowed = max(1e-3, 0.02 * raw["step_s"])
    return {
        "ms": 1e3 * extra,
        "percent": 100 * extra / raw["step_s"],
        "ms_rounds": [1e3 * value for value in rounds],
        "allowed_ms": 1e3 * allowed,
        "target_met": extra <= allowed,
    }


def _print_train(label: str, result: dict[str, Any]) -> None:
    config = result["config"]
    direction = "bi" if config["bidirectional"] else "uni"
    print(
        f"\n== train ({label}): {config['task']} on {config['data']}, {direction}directional LSTM "
        f"{config['layers']}x{config['hidden_size']} ({config['impl']}), batch "
        f"{config['batch_size']}, steps {config['steps'][0]} and {config['steps'][1]}, "
        f"{config['rounds']} rounds, {config['torch_threads']} thread(s), clock {CLOCK}",
        flush=True,
    )
    print(f"{'loop':18}{'ms/step':>9}{'min':>9}   per-step work", flush=True)
    for name, loop in result["loops"].items():
        print(
            f"{name:18}{1e3 * loop['step_s']:9.2f}{1e3 * loop['step_s_min']:9.2f}   {loop['work']}",
            flush=True,
        )
    differences = ", ".join(
        f"{name} {value:.1e}"
        for name, value in result["max_abs_loss_difference_vs_lightning"].items()
    )
    print(
        f"losses: max |diff| vs lightning over {config['steps'][1]} steps: {differences} "
        f"(agree to 5 decimals: {result['losses_agree_to_5_decimals']})",
        flush=True,
    )
    for against, overhead in result["overhead"].items():
        verdict = "met" if overhead["target_met"] else "NOT met"
        print(
            f"lightning - {against}: {overhead['ms']:+.2f} ms/step ({overhead['percent']:+.1f}%), "
            f"rounds {', '.join(f'{value:+.2f}' for value in overhead['ms_rounds'])}; "
            f"target <= {overhead['allowed_ms']:.2f} ms: {verdict}",
            flush=True,
        )
    if "cost_of_self_log_ms" in result:
        print(
            f"of which the task's self.log calls {result['cost_of_self_log_ms']:+.2f} ms/step, "
            f"Lightning's loop itself {result['lightning_loop_cost_ms']:+.2f} ms/step",
            flush=True,
        )


# ------------------------------------------------------------------------ data-pipeline section

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
        f"batches (data loading excluded), {args.data_batches} batches, clock {CLOCK}",
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
        key = _config_key(cfg)
        source = "train section"
        if key not in _LIGHTNING_STEP_S:
            source = "measured here"
            setup = prepare_training(cfg, datamodule, 2 * args.data_steps, device)
            timings, _ = time_per_step(
                {"lightning": partial(lightning_run, setup)}, args.data_steps, args.data_rounds
            )
            _LIGHTNING_STEP_S[key] = timings["lightning"]["step_s"]
        step_s = _LIGHTNING_STEP_S[key]
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


# ------------------------------------------------------------------------------------ bucketing

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
        f"{args.data_rounds} interleaved rounds, clock {CLOCK}",
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


# ----------------------------------------------------------------------------------------- main

SECTIONS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "encoder": run_encoder,
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
    "train_overrides": list(TINY_MODEL),
    "data_sets": "japanese_vowels,adding",
    "data_batches": 5,
    "data_rounds": 1,
    "data_steps": 2,
    "bucketing_sets": "japanese_vowels",
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
