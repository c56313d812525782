"""Check a composed config before any data is read or any model is built.

Every problem is reported as one line that names the key, the value given and what is allowed,
e.g. ``model.encoder.dropout=1.5: must be in [0, 1)``; ``check_config`` raises a ``ConfigError``
with all of them. Hydra already refuses overrides of keys that do not exist; this also catches
unknown keys that arrive with ``+key=...`` or in a user's own YAML file, by comparing every
``_target_`` node with the signature of what it instantiates.
"""

from __future__ import annotations

import difflib
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from seqlab.errors import ConfigError, is_int
from seqlab.nn.encoder import CONV_MODES
from seqlab.nn.init_state import INIT_STATE_KINDS
from seqlab.nn.lstm import IMPLS, loop_only_requested
from seqlab.nn.pooling import POOLING_KINDS
from seqlab.targets import ALLOWED, HYDRA_OPTIONS, target_problems

# Keys Hydra's instantiate reads itself.
HYDRA_KEYS = {"_target_", *HYDRA_OPTIONS}
ENCODER = "seqlab.nn.LSTMEncoder"
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
# Sized by the data module, never by the user.
FROM_DATA = (
    "input_size",
    "num_classes",
    "output_size",
    "vocabulary",
    "class_names",
    "target_mean",
    "target_std",
)
# Lightning seeds NumPy too, which takes 32-bit unsigned seeds only.
SEED_RANGE = (0, 2**32 - 1)
# What a simple annotation asks of a value, as `check_number` words it.
KINDS = {bool: "true or false", int: "an integer", float: "a number"}


def check_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` naming every problem found in ``cfg`` (train, eval, predict...)."""
    # One line per problem: a value that two checks refuse alike is named once.
    problems = list(dict.fromkeys(config_problems(cfg)))
    if problems:
        raise ConfigError(*problems)


def config_problems(cfg: DictConfig) -> Iterator[str]:
    yield from group_problems(cfg)
    # The trainer's and the schedule's values are checked by hand below: seqlab allows `auto`
    # where their annotations say int.
    for group in ("data", "trainer", "model.optimizer", "model.scheduler"):
        node = OmegaConf.select(cfg, group)
        # A model target not allowed is refused below (model_problems), never imported.
        allowed = ALLOWED[group[6:]][0] if group.startswith("model.") else None
        targeted = isinstance(node, DictConfig) and "_target_" in node
        if targeted and (allowed is None or node._target_ in allowed):
            typed = group in ("data", "model.optimizer")
            yield from unknown_keys(node, group, typed=typed)
    for group in ("callbacks", "logger"):
        for name, node in (cfg.get(group) or {}).items():
            if isinstance(node, DictConfig) and "_target_" in node:
                yield from unknown_keys(node, f"{group}.{name}", typed=True)
    if "seed" in cfg:
        seed = cfg.seed
        if seed is not None and not (is_int(seed) and SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
            yield f"seed={seed!r}: must be an integer in [0, 2**32 - 1], or null (a random one)"
    if "model" in cfg:
        yield from model_problems(cfg)
    if "trainer" in cfg:
        yield from trainer_problems(cfg.trainer)
    yield from schedule_problems(cfg)
    yield from logger_problems(cfg)
    if OmegaConf.select(cfg, "trainer.max_epochs") == "auto":
        yield from budget_problems(cfg.get("budget"))


def group_problems(cfg: DictConfig) -> Iterator[str]:
    """Options of config groups that do not exist. Hydra refuses them itself, except in the
    groups the defaults list marks `optional` (experiment, debug, ...): there it drops a typo
    without a word, and ``experiment=nosuch`` would train the default setup."""
    hydra = cfg.get("hydra") or (HydraConfig.get() if HydraConfig.initialized() else None)
    # Outside a Hydra app (or compose) there is no search path to list the options of.
    if hydra is None or not GlobalHydra.instance().is_initialized():
        return
    loader = GlobalHydra.instance().config_loader()
    for group, option in hydra.runtime.choices.items():
        if not isinstance(option, str) or str(group).startswith("hydra/"):
            continue
        options = loader.get_group_options(str(group))
        if option not in options:  # it may come from a folder of hydra.searchpath=[...]
            options = loader.get_group_options(
                str(group), config_name=hydra.job.config_name, overrides=list(hydra.overrides.hydra)
            )
        if option not in options:
            yield (
                f"{group}={option}: no such option in the config group {group}; available: "
                f"{', '.join(options)}"
            )


def budget_problems(budget: DictConfig | None) -> Iterator[str]:
    """``budget``, read by ``trainer.max_epochs=auto``."""
    if not isinstance(budget, DictConfig):
        yield f"budget={budget!r}: trainer.max_epochs=auto needs budget.steps, min_epochs, max_epochs"
        return
    for key in ("steps", "min_epochs", "max_epochs"):
        if not (is_int(budget.get(key)) and budget.get(key) >= 1):
            yield f"budget.{key}={budget.get(key)!r}: must be a positive integer"
    low, high = budget.get("min_epochs"), budget.get("max_epochs")
    if is_int(low) and is_int(high) and low > high:
        yield f"budget.min_epochs={low}: must be <= budget.max_epochs={high}"
    cap = budget.get("max_input_steps")
    if cap is not None and not (is_int(cap) and cap >= 1):
        yield f"budget.max_input_steps={cap!r}: must be a positive integer, or null (no cap)"


def logger_problems(cfg: DictConfig) -> Iterator[str]:
    strategy = str(OmegaConf.select(cfg, "trainer.strategy") or "")
    for name, node in (cfg.get("logger") or {}).items():
        target = str(node.get("_target_", "")) if isinstance(node, DictConfig) else ""
        if "spawn" in strategy and target.endswith("CSVLogger"):
            yield (
                f"logger.{name}: the CSV logger cannot carry its file across the fit's and the "
                f"test's processes with trainer.strategy={strategy}; use logger=tensorboard or "
                "logger=wandb"
            )
        if target.endswith("WandbLogger") and "init_timeout" in node:
            timeout = node.get("init_timeout")
            number = isinstance(timeout, int | float) and not isinstance(timeout, bool)
            if timeout is not None and not (number and timeout > 0):
                yield (
                    f"logger.{name}.init_timeout={timeout!r}: must be a positive number of "
                    "seconds (how long an online start waits for the server) or null"
                )


def schedule_problems(cfg: DictConfig) -> Iterator[str]:
    """What steers training (LR schedule, early stopping, the sweep's metric) must be able to
    run: found here, not after the first epoch."""
    scheduler = OmegaConf.select(cfg, "model.scheduler")
    target = str(scheduler.get("_target_", "")) if isinstance(scheduler, DictConfig) else ""
    if target.endswith(".CosineAnnealingLR"):
        t_max = scheduler.get("T_max")
        epochs = OmegaConf.select(cfg, "trainer.max_epochs")
        # T_max follows trainer.max_epochs: a bad value there is named there, once.
        echo = t_max == epochs and not valid_epochs(epochs)
        if not (is_int(t_max) and t_max >= 1) and t_max != "auto" and not echo:  # auto: from data
            yield (
                f"model.scheduler.T_max={t_max}: must be a positive number of epochs (it "
                "follows trainer.max_epochs; with no epoch limit set model.scheduler.T_max, or "
                "model.scheduler=null)"
            )
    no_validation = [
        f"{key}={value}"
        for key, value in (
            ("data.val_fraction", OmegaConf.select(cfg, "data.val_fraction")),
            ("trainer.limit_val_batches", OmegaConf.select(cfg, "trainer.limit_val_batches")),
        )
        if value is not None and value == 0
    ]
    if no_validation:
        why = f"this run never validates ({no_validation[0]})"
        if target.endswith(".ReduceLROnPlateau"):
            yield f"model.scheduler._target_={target}: it steps on val/loss, but {why}"
        for name, node in (cfg.get("callbacks") or {}).items():
            if isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith(
                "EarlyStopping"
            ):
                yield f"callbacks.{name}: it stops on {node.get('monitor')}, but {why}"
    metric = cfg.get("optimized_metric")
    monitor = OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor")
    if metric and monitor and metric != monitor and not str(metric).startswith("test/"):
        yield (
            f"optimized_metric={metric}: a sweep can get the best value of the checkpoint's "
            f"metric, callbacks.model_checkpoint.monitor={monitor}, or a test/ metric; set one "
            "to the other"
        )


def unknown_keys(
    node: DictConfig,
    path: str,
    target: Callable[..., Any] | None = None,
    ignore: tuple = (),
    typed: bool = False,
) -> Iterator[str]:
    """Keys of ``node`` that ``target`` (default: the node's ``_target_``) does not take; with
    ``typed``, also values of the wrong type for a parameter annotated ``bool``, ``int`` or
    ``float`` (or one of these or None), which would otherwise fail deep in the first step
    (``bidirectional=maybe``) or compare a string with a number (``val_fraction=abc``)."""
    if target is None:
        try:
            target = get_object(node._target_)
        except Exception:
            yield f"{path}._target_={node._target_!r}: cannot be imported"
            return
    params = parameters(target)
    if params is None:  # takes **kwargs: anything goes
        return
    hints = type_hints(target) if typed else {}
    for key in node:
        if key in HYDRA_KEYS or key in ignore:
            continue
        if key in params:
            # `???`: a value still to give, which the module asks for by name.
            missing = OmegaConf.is_missing(node, str(key))
            problem = None if missing else type_problem(node[key], hints.get(str(key)))
            if problem:
                yield f"{path}.{key!s}={node[key]!r}: {problem}"
            continue
        close = difflib.get_close_matches(str(key), params, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        name = getattr(target, "__name__", str(target))
        yield f"{path}.{key!s}: unknown key{hint}; {name} takes: {', '.join(sorted(params))}"


def type_hints(target: Callable[..., Any]) -> dict[str, Any]:
    """The parameters' type hints of ``target`` (its ``__init__`` for a class), or none where
    they cannot be resolved."""
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


def type_problem(value: object, hint: Any) -> str | None:
    """What is wrong with ``value`` for a parameter annotated ``hint`` (``bool``, ``int``,
    ``float``, or one of these or None; other hints are not checked), or None."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else None
    if hint not in KINDS or (value is None and optional):
        return None
    ok = {
        bool: isinstance(value, bool),
        int: is_int(value),
        float: isinstance(value, numbers.Real) and not isinstance(value, bool),
    }[hint]
    return None if ok else f"must be {KINDS[hint]}{' (or null)' if optional else ''}"


def parameters(target: Callable[..., Any]) -> list[str] | None:
    """Keyword names ``target`` accepts, or None when it takes ``**kwargs``."""
    fn = target.__init__ if inspect.isclass(target) else target
    names = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind is param.VAR_KEYWORD:
            return None
        if param.name != "self" and param.kind is not param.VAR_POSITIONAL:
            names.append(param.name)
    return names


def model_problems(cfg: DictConfig) -> Iterator[str]:
    model = cfg.model
    # Only listed classes are built from settings (seqlab.targets): checked before all else.
    yield from target_problems(cast(dict[str, Any], OmegaConf.to_container(model, resolve=True)))
    task_cls = data_task(cfg)
    if task_cls is not None:
        for key in model:
            if key in FROM_DATA:
                yield f"model.{key}={model[key]}: set by the data module; remove it"
        yield from unknown_keys(model, "model", task_cls, ignore=FROM_DATA)
    encoder = model.get("encoder")
    if isinstance(encoder, DictConfig):
        target = encoder.get("_target_", ENCODER)
        if target in (ENCODER, "seqlab.nn.encoder.LSTMEncoder"):
            yield from unknown_keys(
                encoder, "model.encoder", get_object(ENCODER), ("input_size",), typed=True
            )
            yield from encoder_problems(encoder)
            if task_cls is not None:
                yield from task_cls.encoder_problems(encoder, "the data's task")
    head = model.get("head")
    if isinstance(head, DictConfig):
        from seqlab.nn.heads import MLPHead

        yield from unknown_keys(
            head, "model.head", MLPHead, ("input_size", "output_size"), typed=True
        )
        yield from check_number(head, "model.head", "hidden_size", int, lo=0)
        yield from check_number(head, "model.head", "dropout", float, lo=0, hi_open=1)
    optimizer = model.get("optimizer")
    if isinstance(optimizer, DictConfig) and "lr" in optimizer:
        yield from check_number(optimizer, "model.optimizer", "lr", float, lo_open=0)


def data_task(cfg: DictConfig) -> Any:
    """The task module class the data's module asks for, without building the data."""
    from seqlab.tasks import TASKS

    target = OmegaConf.select(cfg, "data._target_")
    try:
        task = getattr(get_object(target), "task", None) if target else None
    except Exception:
        return None
    # A module whose task follows from its files (data=folder) says it in data.task, or
    # leaves it to setup (auto); the task module checks the model then.
    if task is None:
        task = OmegaConf.select(cfg, "data.task")
    return TASKS.get(task) if isinstance(task, str) else None


def encoder_problems(encoder: DictConfig) -> Iterator[str]:
    path = "model.encoder"
    yield from check_number(encoder, path, "hidden_size", int, lo=1)
    yield from check_number(encoder, path, "num_layers", int, lo=1)
    yield from check_number(encoder, path, "proj_size", int, lo=0)
    yield from check_number(encoder, path, "noise_std", float, lo=0)
    for key in ("dropout", "input_dropout", "recurrent_dropout"):
        yield from check_number(encoder, path, key, float, lo=0, hi_open=1)
    yield from check_choice(encoder, path, "impl", IMPLS)
    yield from check_choice(encoder, path, "init_state", INIT_STATE_KINDS)
    yield from check_choice(encoder, path, "pooling", (*POOLING_KINDS, None))
    yield from check_choice(encoder, path, "conv_mode", CONV_MODES)
    yield from conv_problems(encoder, path)
    proj, hidden = encoder.get("proj_size", 0), encoder.get("hidden_size")
    if isinstance(proj, int) and isinstance(hidden, int) and proj >= hidden > 0:
        yield f"{path}.proj_size={proj}: must be smaller than hidden_size ({hidden}), or 0"
    if encoder.get("impl") == "fused":
        for option in loop_only_requested(encoder):
            yield (
                f"{path}.{option}: only the loop impl has it, and impl=fused; "
                "use model.encoder.impl=loop (or auto)"
            )


def conv_problems(encoder: DictConfig, path: str) -> Iterator[str]:
    channels = encoder.get("conv_channels") or []
    if not isinstance(channels, ListConfig | list) or not all(
        is_int(c) and c >= 1 for c in channels
    ):
        yield f"{path}.conv_channels={channels}: must be a list of positive integers, or []"
        return
    kernel = encoder.get("conv_kernel_size", 5)
    kernels = list(kernel) if isinstance(kernel, ListConfig | list) else [kernel]
    if not all(is_int(k) and k >= 1 and k % 2 for k in kernels):
        yield f"{path}.conv_kernel_size={kernel}: kernel sizes must be odd positive integers"
    elif channels and len(kernels) not in (1, len(channels)):
        yield (
            f"{path}.conv_kernel_size={kernel}: give one size, or one per layer "
            f"({len(channels)} for conv_channels={list(channels)})"
        )


def valid_epochs(epochs: object) -> bool:
    return epochs in (None, "auto") or (is_int(epochs) and (epochs >= 1 or epochs == -1))


def trainer_problems(trainer: DictConfig) -> Iterator[str]:
    yield from accelerator_problems(trainer)
    yield from precision_problems(trainer)
    epochs = trainer.get("max_epochs")
    if not valid_epochs(epochs):
        yield (
            f"trainer.max_epochs={epochs!r}: must be a positive integer, -1 (no limit) or auto "
            "(from the training split's size and `budget`)"
        )
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not (isinstance(clip, (int, float)) and clip >= 0):
        yield f"trainer.gradient_clip_val={clip}: must be >= 0 (or null: no clipping)"
    # Lightning divides by these, or loops on them, before it checks them.
    for key, least in (
        ("accumulate_grad_batches", 1),
        ("check_val_every_n_epoch", 1),
        ("log_every_n_steps", 1),
        ("min_epochs", 0),
    ):
        value = trainer.get(key)
        if value is not None and not (is_int(value) and value >= least):
            kind = "a positive integer" if least else "an integer >= 0"
            yield f"trainer.{key}={value!r}: must be {kind}"
    for stage in ("train", "val", "test"):
        limit = trainer.get(f"limit_{stage}_batches")
        fraction = isinstance(limit, float) and 0 <= limit <= 1
        if limit is not None and not (fraction or (is_int(limit) and limit >= 0)):
            yield (
                f"trainer.limit_{stage}_batches={limit!r}: must be a number of batches (an "
                "integer >= 0) or a fraction of them in [0.0, 1.0]"
            )


def accelerator_problems(trainer: DictConfig) -> Iterator[str]:
    """A device this machine lacks: Lightning would refuse it with a traceback."""
    accelerator = trainer.get("accelerator", "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        yield (
            f"trainer.accelerator={accelerator}: torch finds no CUDA GPU here "
            "(torch.cuda.is_available() is false); use trainer=default (the CPU), or run where "
            "a GPU and a CUDA build of torch are"
        )
    elif accelerator == "mps" and not torch.backends.mps.is_available():
        yield "trainer.accelerator=mps: torch finds no Apple GPU here; use trainer=default"


def check_number(
    node: DictConfig,
    path: str,
    key: str,
    kind: type,
    lo: float | None = None,
    lo_open: float | None = None,
    hi_open: float | None = None,
) -> Iterator[str]:
    if key not in node or node[key] is None:
        return
    value = node[key]
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int and not (numeric and float(value).is_integer()):
        yield f"{path}.{key}={value!r}: must be an integer"
        return
    if not numeric:
        yield f"{path}.{key}={value!r}: must be a number"
        return
    if lo is not None and value < lo:
        bound = f"[{lo}, {hi_open})" if hi_open is not None else f">= {lo}"
        yield f"{path}.{key}={value}: must be {'in ' if hi_open is not None else ''}{bound}"
    elif lo_open is not None and value <= lo_open:
        yield f"{path}.{key}={value}: must be > {lo_open}"
    elif hi_open is not None and value >= hi_open:
        bound = f"[{lo}, {hi_open})" if lo is not None else f"< {hi_open}"
        yield f"{path}.{key}={value}: must be in {bound}"


def check_choice(node: DictConfig, path: str, key: str, allowed: tuple) -> Iterator[str]:
    if key in node and node[key] not in allowed:
        names = ", ".join("null" if a is None else str(a) for a in allowed)
        yield f"{path}.{key}={node[key]!r}: allowed: {names}"


def check_precision(trainer_cfg: DictConfig) -> None:
    """Fail before training on a precision the chosen device cannot run."""
    problems = list(precision_problems(trainer_cfg))
    if problems:
        raise ConfigError(*problems)


def precision_problems(trainer_cfg: DictConfig) -> Iterator[str]:
    precision = str(trainer_cfg.get("precision", "32-true"))
    if precision not in PRECISIONS:
        yield f"trainer.precision={precision!r}: allowed: {', '.join(PRECISIONS)}"
        return
    accelerator = trainer_cfg.get("accelerator", "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and precision.startswith("16"):
        yield f"trainer.precision={precision}: fp16 needs a GPU; on a CPU use bf16-mixed or 32-true"
    elif on_cpu and precision.startswith("bf16") and not cpu_supports_bf16():
        yield (
            f"trainer.precision={precision}: this CPU has no native bf16 (AVX512-BF16 or "
            "AMX), so oneDNN cannot run the LSTM in bf16; use trainer.precision=32-true"
        )


def cpu_supports_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False
