"""The train section: Lightning's ``Trainer.fit`` of the task module vs a hand-written loop.

Both run the same model, batches and optimizer (configs/train.yaml composed as `scripts/train.py`
does, loggers and callbacks off). The data and bucketing sections time Lightning on this setup too.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from benchmarks import timing
from benchmarks.timing import now, torch_threads
from seqlab.cuda_check import cheap_cuda_check
from seqlab.pipeline import build_datamodule, build_model, profiler_default
from seqlab.tasks import SequenceClassifier, SequenceTask

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
    """Every step's loss, and the clock at the start of every step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.losses: list[torch.Tensor] = []
        self.starts: list[float] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.starts.append(now(self.device))

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.losses.append(outputs["loss"].detach())


class RunResult(NamedTuple):
    """A timed run: its seconds in all, every step's loss, and the seconds from the start of
    each step to the start of the next (a whole step: the batch, the work, the hooks)."""

    seconds: float
    losses: list[float]
    step_seconds: list[float]


def _between(starts: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(starts)]


def lightning_run(setup: TrainingSetup, steps: int, log: bool = True) -> RunResult:
    """Seconds for a whole ``Trainer.fit`` of ``steps`` steps (trainer built inside the timing)
    and the loss of every step. ``log=False`` turns the task's ``self.log`` calls into no-ops
    (a diagnostic: what they cost; the metric updates still run)."""
    setup.reset()
    if not log:
        setup.model.log = _no_log  # type: ignore[method-assign]
    recorder = _LossRecorder(setup.device)
    start = now(setup.device)
    try:
        _fit(setup, steps, recorder)
    finally:
        setup.model.__dict__.pop("log", None)
    seconds = now(setup.device) - start
    if not log:  # Lightning resets only the metrics it was given
        setup.model.train_loss_mean.reset()
        setup.model.train_metrics.reset()
    return RunResult(seconds, [loss.item() for loss in recorder.losses], _between(recorder.starts))


def _fit(setup: TrainingSetup, steps: int, callback: L.Callback) -> None:
    """``Trainer.fit`` of ``steps`` steps on the setup's batches, Lightning's extras off."""
    trainer = instantiate(
        setup.cfg.trainer,
        accelerator="gpu" if setup.device.type == "cuda" else "cpu",
        default_root_dir=setup.cfg.paths.output_dir,
        logger=False,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=1,
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **profiler_default(setup.cfg.trainer),  # as `seqlab.pipeline.build_trainer` builds it
    )
    with cheap_cuda_check():  # as `seqlab.train` fits
        trainer.fit(setup.model, train_dataloaders=setup.loader(steps))


def _no_log(*args: Any, **kwargs: Any) -> None:
    return None


def raw_run(setup: TrainingSetup, steps: int, metrics: bool) -> RunResult:
    """The same steps in a hand-written loop: the task's forward and loss, the trainer config's
    gradient clipping, the task's optimizer; with ``metrics`` also the task's metric updates."""
    model = setup.model
    clip = raw_clip(setup)
    setup.reset()
    losses: list[torch.Tensor] = []
    starts: list[float] = []
    # A process that never imported Lightning asks CUDA's runtime, not NVML, at every step.
    with cheap_cuda_check():
        start = now(setup.device)
        optimizer = model.configure_optimizers()
        model.train()
        for batch in setup.loader(steps):
            starts.append(now(setup.device))  # where Lightning's on_train_batch_start stamps it
            losses.append(raw_step(model, optimizer, batch, setup.device, clip, metrics))
        seconds = now(setup.device) - start
    if metrics:  # as Lightning does at the end of an epoch
        model.train_loss_mean.reset()
        model.train_metrics.reset()
    return RunResult(seconds, [loss.item() for loss in losses], _between(starts))


def raw_clip(setup: TrainingSetup) -> float | None:
    """The gradient clipping the raw loop does; refuses what it cannot do as Lightning does."""
    if not isinstance(setup.model, SequenceClassifier):
        raise ValueError(
            f"the raw loop is written for classification, not {type(setup.model).__name__}"
        )
    trainer_cfg = setup.cfg.trainer
    if str(trainer_cfg.get("precision", "32-true")) != "32-true":
        raise ValueError("the raw loop runs trainer.precision=32-true only")
    if trainer_cfg.get("gradient_clip_algorithm", "norm") != "norm":
        raise ValueError("the raw loop clips by norm (trainer.gradient_clip_algorithm=norm)")
    clip = trainer_cfg.get("gradient_clip_val")
    return float(clip) if clip else None


def raw_step(
    model: SequenceTask,
    optimizer: Any,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    clip: float | None,
    metrics: bool,
) -> torch.Tensor:
    """One training step by hand: what Lightning's step does for the task, without Lightning.
    Returns the detached loss."""
    batch = model.transfer_batch_to_device(batch, device, 0)  # as Lightning's loop
    logits = model(batch["x"], batch["lengths"])
    loss = F.cross_entropy(logits.float(), batch["y"])
    if metrics:
        model.train_loss_mean.update(loss.detach().float(), len(batch["y"]))
        model.train_metrics.update(logits.detach(), batch["y"])
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()


class _TwinSteps(_LossRecorder):
    """The paired design: inside Lightning's fit, a twin of the task module (same weights, same
    batches from its own loader, its own random stream) takes one raw+metrics step per
    Lightning step, at the start of even steps and the end of odd ones, so each pair of steps
    runs milliseconds apart and shares the machine's state of the moment. The clock is read
    at the start of every Lightning step, and the seconds the twin's work took inside that
    step are recorded, to be taken out of Lightning's."""

    def __init__(
        self,
        twin: SequenceTask,
        loader: DataLoader,
        device: torch.device,
        clip: float | None,
        seed: int,
    ) -> None:
        super().__init__(device)  # Lightning's losses, and the clock at each step's start
        self.twin, self.loader, self.clip = twin, loader, clip
        self.batches: Iterator[dict[str, torch.Tensor]] | None = None
        self.optimizer = twin.configure_optimizers()
        twin.train()
        self.random_state = _random_state_after(seed, device)
        self.inserted: list[float] = []  # seconds of the twin's turn inside each Lightning step
        self.raw_seconds: list[float] = []  # seconds of each twin step (batch to zero_grad)
        self.raw_losses: list[torch.Tensor] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        if batch_idx % 2 == 0:
            self._twin_turn()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if batch_idx % 2 == 1:
            self._twin_turn()

    def _twin_turn(self) -> None:
        entered = now(self.device)
        # The twin draws dropout from its own stream, so each model sees the random numbers
        # it would see alone and the two loss sequences can be compared.
        fit_state = _swap_random_state(self.random_state, self.device)
        if self.batches is None:  # a DataLoader's iterator draws its seed from the stream
            self.batches = iter(self.loader)
        start = now(self.device)
        batch = next(self.batches)
        loss = raw_step(self.twin, self.optimizer, batch, self.device, self.clip, metrics=True)
        self.raw_seconds.append(now(self.device) - start)
        self.raw_losses.append(loss)
        self.random_state = _swap_random_state(fit_state, self.device)
        self.inserted.append(now(self.device) - entered)


RandomState = tuple[torch.Tensor, torch.Tensor | None]


def _random_state_after(seed: int, device: torch.device) -> RandomState:
    """The random state ``torch.manual_seed(seed)`` gives, without changing the current one."""
    saved = _swap_random_state(None, device)
    torch.manual_seed(seed)
    return _swap_random_state(saved, device)


def _swap_random_state(state: RandomState | None, device: torch.device) -> RandomState:
    """Install ``state`` (None: leave the current one) and return the one it replaced."""
    cuda = device.type == "cuda"
    current = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None)
    if state is not None:
        torch.set_rng_state(state[0])
        if cuda and state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
    return current


class PairedSteps(NamedTuple):
    """Per step of a paired run: Lightning's seconds (the twin's turn taken out), the twin's raw
    seconds, and both loss sequences."""

    lightning_seconds: list[float]
    raw_seconds: list[float]
    lightning_losses: list[float]
    raw_losses: list[float]


def paired_run(setup: TrainingSetup, twin: SequenceTask, steps: int) -> PairedSteps:
    """One ``Trainer.fit`` of ``steps`` steps with the twin stepping beside it (`_TwinSteps`)."""
    setup.reset()
    twin.load_state_dict(setup.initial_state)
    twin.zero_grad(set_to_none=True)
    twin_steps = _TwinSteps(twin, setup.loader(steps), setup.device, raw_clip(setup), setup.seed)
    _fit(setup, steps, twin_steps)
    twin.train_loss_mean.reset()
    twin.train_metrics.reset()
    # Step i of Lightning lasts from its start to the next one's, less the twin's turn in it;
    # the last step has no next start and is left out.
    betweens = _between(twin_steps.starts)
    inserted = twin_steps.inserted[: len(betweens)]
    lightning = [between - turn for between, turn in zip(betweens, inserted, strict=True)]
    return PairedSteps(
        lightning,
        twin_steps.raw_seconds[: len(lightning)],
        [loss.item() for loss in twin_steps.losses],
        [loss.item() for loss in twin_steps.raw_losses],
    )


def paired_overhead(runs: Sequence[PairedSteps], skip: int) -> dict[str, Any]:
    """Lightning's extra seconds per step from paired runs: each step's Lightning time less its
    twin's raw+metrics time, the first ``skip`` steps of each run left out (first calls,
    caches), and a pair left out where either step took over `SLOW_STEP` times its run's
    median (the machine stalled it). The mean is the figure (a cost paid every few steps
    counts), with its standard error; the median and quartiles show the spread."""
    differences: list[float] = []
    raw_kept: list[float] = []
    per_run: list[float] = []
    left_out = 0
    for run in runs:
        lightning, raw = run.lightning_seconds[skip:], run.raw_seconds[skip:]
        if not lightning:
            raise ValueError(f"paired runs of {len(run.lightning_seconds)} steps, {skip} skipped")
        lightning_limit = SLOW_STEP * statistics.median(lightning)
        raw_limit = SLOW_STEP * statistics.median(raw)
        kept = [
            (a, b)
            for a, b in zip(lightning, raw, strict=True)
            if a <= lightning_limit and b <= raw_limit
        ]
        left_out += len(lightning) - len(kept)
        run_differences = [a - b for a, b in kept]
        per_run.append(statistics.fmean(run_differences))
        differences += run_differences
        raw_kept += [b for _, b in kept]
    mean = statistics.fmean(differences)
    error = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else 0
    raw_mean = statistics.fmean(raw_kept)
    allowed = max(1e-3, 0.02 * raw_mean)
    quartiles = statistics.quantiles(differences, n=4) if len(differences) > 1 else [mean] * 3
    return {
        "ms": 1e3 * mean,
        "standard_error_ms": 1e3 * error,
        "percent": 100 * mean / raw_mean,
        "median_ms": 1e3 * quartiles[1],
        "quartiles_ms": [1e3 * value for value in quartiles],
        "ms_runs": [1e3 * value for value in per_run],
        "raw_step_ms": 1e3 * raw_mean,
        "pairs": len(differences),
        "pairs_left_out": left_out,
        "allowed_ms": 1e3 * allowed,
        "target_met": mean <= allowed,
    }


# A step over this many times the median step of its round was stalled by the machine.
SLOW_STEP = 3.0


def typical_step_mean(step_seconds: list[float]) -> float:
    """The mean of the steps that took at most `SLOW_STEP` times their median."""
    limit = SLOW_STEP * statistics.median(step_seconds)
    return statistics.fmean(value for value in step_seconds if value <= limit)


def time_per_step(
    runs: dict[str, Callable[[int], RunResult]], steps: int, rounds: int
) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]]]:
    """Per-step seconds of each run from two run lengths, ``(t(2N) - t(N)) / N`` in each round,
    so whatever a run costs once (trainer, optimizer, iterator) cancels. Runs are interleaved
    within every round, so a round's figures share the machine's load. Returns, per run, the
    median and the fastest round's figure and every round's, and the per-step losses of each
    run's last (longest) run.

    Each round also gives the mean time of the single steps of both its runs, leaving out the
    steps that took over `SLOW_STEP` times the round's median (``step_mean_s_rounds``): a step
    the machine stalled (another process, the VM's host) adds all it lost to a run's total,
    but is left out here, while a cost paid every few steps (a log call) is still counted."""
    lengths = (steps, 2 * steps)
    for run in runs.values():  # warm-up: first calls, allocator, oneDNN primitive caches
        run(2)
    seconds: dict[str, dict[int, list[float]]] = {name: {n: [] for n in lengths} for name in runs}
    step_means: dict[str, list[float]] = {name: [] for name in runs}
    losses: dict[str, list[float]] = {}
    for _ in range(rounds):
        steps_of_round: dict[str, list[float]] = {name: [] for name in runs}
        for n in lengths:
            for name, run in runs.items():
                result = run(n)
                seconds[name][n].append(result.seconds)
                steps_of_round[name] += result.step_seconds
                losses[name] = result.losses
        for name, values in steps_of_round.items():
            step_means[name].append(typical_step_mean(values))
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
            "step_mean_s": statistics.median(step_means[name]),
            "step_mean_s_rounds": step_means[name],
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


def config_key(cfg: DictConfig) -> str:
    """What identifies a training setup for `lightning_step_s`: the data and model configs."""
    return OmegaConf.to_yaml(cfg.data) + OmegaConf.to_yaml(cfg.model)


def lightning_step_s(cfg: DictConfig) -> float | None:
    """Lightning's per-step seconds on ``cfg``'s setup if the train section measured it in this
    run, else None."""
    return _LIGHTNING_STEP_S.get(config_key(cfg))


def record_lightning_step_s(cfg: DictConfig, seconds: float) -> None:
    _LIGHTNING_STEP_S[config_key(cfg)] = seconds


# A model so small that its step is mostly fixed per-step costs: what Lightning adds per step
# shows there clearly, while at the default size it is within the machine's noise.
TINY_MODEL = ("model.encoder.hidden_size=8", "model.encoder.num_layers=1")


def run_train(args: argparse.Namespace) -> dict:
    """Lightning vs a hand-written loop on the same task module, batches and optimizer: at the
    config's model size, and with a tiny model whose steps show the fixed per-step cost."""
    device = torch.device(args.device)
    overrides = tuple(args.train_overrides)
    # label: overrides, how many times the steps, diagnose
    variants = {
        "default": (overrides, 1, False),
        "tiny": ((*overrides, *TINY_MODEL), args.tiny_factor, True),
    }
    result: dict[str, Any] = {}
    with torch_threads(args.train_threads):
        for label, (variant_overrides, factor, diagnose) in variants.items():
            paired = Paired(
                args.train_paired_steps * factor, args.train_paired_runs, args.train_paired_skip
            )
            result[label] = compare_loops(
                variant_overrides,
                args.train_steps * factor,
                args.train_rounds,
                device,
                diagnose,
                paired,
            )
            _print_train(label, result[label])
    for label, entry in result.items():
        if not entry["losses_agree_to_5_decimals"]:
            differences = entry["max_abs_loss_difference_vs_lightning"]
            raise RuntimeError(f"{label}: Lightning and raw losses differ: {differences}")
    return result


class Paired(NamedTuple):
    """The paired design's size: ``runs`` fits of ``steps`` steps, the first ``skip`` of each
    left out (``runs=0``: not run)."""

    steps: int
    runs: int
    skip: int


NO_PAIRING = Paired(0, 0, 0)


def compare_loops(
    overrides: Sequence[str],
    steps: int,
    rounds: int,
    device: torch.device,
    diagnose: bool,
    paired: Paired = NO_PAIRING,
) -> dict[str, Any]:
    """Time the raw, raw+metrics and Lightning loops on one config (and, to ``diagnose``,
    Lightning without the task's self.log calls), then Lightning against raw+metrics in the
    paired design (`paired_run`); compare their losses."""
    with tempfile.TemporaryDirectory() as output_dir, quiet_lightning():
        cfg, datamodule, _ = build_for_benchmark(overrides, Path(output_dir))
        setup = prepare_training(cfg, datamodule, max(2 * steps, paired.steps), device)
        runs: dict[str, Callable[[int], RunResult]] = {
            "raw": partial(raw_run, setup, metrics=False),
            "raw+metrics": partial(raw_run, setup, metrics=True),
            "lightning": partial(lightning_run, setup),
        }
        if diagnose:
            runs["lightning-no-log"] = partial(lightning_run, setup, log=False)
        timings, losses = time_per_step(runs, steps, rounds)
        record_lightning_step_s(cfg, timings["lightning"]["step_s"])
        paired_runs = []
        if paired.runs:
            twin = build_model(cfg, datamodule).to(device)
            paired_runs = [paired_run(setup, twin, paired.steps) for _ in range(paired.runs)]
    differences = max_loss_difference(losses, "lightning")
    if paired_runs:  # the twin's losses must be Lightning's, step for step, in every run
        differences["paired raw+metrics"] = max(
            max_loss_difference(
                {"lightning": run.lightning_losses, "raw": run.raw_losses}, "lightning"
            )["raw"]
            for run in paired_runs
        )
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
    if paired_runs:
        result["paired"] = {
            "steps": paired.steps,
            "runs": paired.runs,
            "skipped_steps": paired.skip,
            **paired_overhead(paired_runs, paired.skip),
        }
    if diagnose:
        self_log = _overhead(timings["lightning"], timings["lightning-no-log"])
        result["cost_of_self_log_ms"] = self_log["ms"]
        result["cost_of_self_log_ms_rounds"] = self_log["ms_rounds"]
        rest = _overhead(timings["lightning-no-log"], timings["raw+metrics"])
        result["lightning_loop_cost_ms"] = rest["ms"]
    return result


def _overhead(lightning: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """Lightning's extra time per step against the target, <= raw + max(1 ms, 2%): the median
    over rounds of the difference of their single-step means (each round's runs shared the
    machine's load), and for comparison the same from the runs' totals."""

    def differences(key: str) -> list[float]:
        return [a - b for a, b in zip(lightning[key], raw[key], strict=True)]

    rounds = differences("step_mean_s_rounds")
    extra = statistics.median(rounds)
    allowed = max(1e-3, 0.02 * raw["step_mean_s"])
    totals = differences("step_s_rounds")
    return {
        "ms": 1e3 * extra,
        "percent": 100 * extra / raw["step_mean_s"],
        "ms_rounds": [1e3 * value for value in rounds],
        "allowed_ms": 1e3 * allowed,
        "target_met": extra <= allowed,
        "from_totals_ms": 1e3 * statistics.median(totals),
        "from_totals_ms_rounds": [1e3 * value for value in totals],
    }


def _print_train(label: str, result: dict[str, Any]) -> None:
    config = result["config"]
    direction = "bi" if config["bidirectional"] else "uni"
    print(
        f"\n== train ({label}): {config['task']} on {config['data']}, {direction}directional LSTM "
        f"{config['layers']}x{config['hidden_size']} ({config['impl']}), batch "
        f"{config['batch_size']}, steps {config['steps'][0]} and {config['steps'][1]}, "
        f"{config['rounds']} rounds, {config['torch_threads']} thread(s), clock {timing.CLOCK}",
        flush=True,
    )
    print(f"{'loop':18}{'ms/step':>9}{'totals':>9}{'min':>9}   per-step work", flush=True)
    for name, loop in result["loops"].items():
        print(
            f"{name:18}{1e3 * loop['step_mean_s']:9.2f}{1e3 * loop['step_s']:9.2f}"
            f"{1e3 * loop['step_s_min']:9.2f}   {loop['work']}",
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
        if "paired" in result:  # rounds minutes apart: shown, but the paired figure judges
            verdict = f"{verdict} by the rounds; the paired figure below judges"
        print(
            f"lightning - {against}: {overhead['ms']:+.2f} ms/step ({overhead['percent']:+.1f}%), "
            f"rounds {', '.join(f'{value:+.2f}' for value in overhead['ms_rounds'])}; "
            f"target <= {overhead['allowed_ms']:.2f} ms: {verdict} (from the runs' totals: "
            f"{overhead['from_totals_ms']:+.2f} ms, rounds "
            f"{', '.join(f'{value:+.2f}' for value in overhead['from_totals_ms_rounds'])})",
            flush=True,
        )
    if "paired" in result:
        paired = result["paired"]
        verdict = "met" if paired["target_met"] else "NOT met"
        print(
            f"paired (twin raw+metrics step beside each Lightning step, {paired['runs']} fits of "
            f"{paired['steps']} steps, {paired['pairs']} pairs, {paired['pairs_left_out']} "
            f"stalled left out): lightning - raw+metrics {paired['ms']:+.2f} "
            f"± {paired['standard_error_ms']:.2f} ms/step ({paired['percent']:+.1f}% of "
            f"{paired['raw_step_ms']:.2f} ms), median {paired['median_ms']:+.2f}, quartiles "
            f"{', '.join(f'{value:+.2f}' for value in paired['quartiles_ms'])}, per fit "
            f"{', '.join(f'{value:+.2f}' for value in paired['ms_runs'])}; target <= "
            f"{paired['allowed_ms']:.2f} ms: {verdict}",
            flush=True,
        )
    if "cost_of_self_log_ms" in result:
        print(
            f"of which the task's self.log calls {result['cost_of_self_log_ms']:+.2f} ms/step, "
            f"Lightning's loop itself {result['lightning_loop_cost_ms']:+.2f} ms/step",
            flush=True,
        )
