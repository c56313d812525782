"""Hyperparameter search with Optuna: ``python scripts/search.py search=japanese_vowels``.

seqlab drives Optuna itself rather than through Hydra's Optuna sweeper: that plugin pins
optuna < 3, whose sqlite storage fails under SQLAlchemy 2, and a sweeper's jobs report only
their final value, so nothing can be pruned. Here each trial composes the train config (the
command line's overrides plus the trial's sampled values) and trains in this process, in its own
folder ``logs/<task_name>/search/<study_name>/trial_<n>/``; ``ReportToTrial`` hands the
validation metric to the trial after every epoch and stops the fit when the pruner gives up on
it.

A study kept in sqlite resumes: the same command loads it, marks the trials a killed process
left running as failed, and runs only the trials still missing from ``search.n_trials`` finished
(completed or pruned) ones. One search process per study at a time: a second would take the
first one's running trial for a killed one.

Nothing in the config becomes code: the sampler and the pruner are chosen by name from
``SAMPLERS`` and ``PRUNERS`` (as ``seqlab.targets`` allows listed classes only), their other
keys passed as plain keyword arguments.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from seqlab.callbacks.nonfinite import NonFiniteLossError
from seqlab.config_checks import check_config
from seqlab.errors import ConfigError, exit_on_user_error
from seqlab.reporting import atomic_write
from seqlab.train import train

try:
    import optuna
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna.trial import TrialState
except ImportError as error:  # the `sweep` extra
    raise ImportError("seqlab.search needs optuna >= 4: pip install 'seqlab[sweep]'") from error

log = logging.getLogger(__name__)

#: The samplers ``search.sampler.name`` may choose.
SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
}
#: The pruners ``search.pruner.name`` may choose; ``none`` (or ``search.pruner=null``) prunes
#: nothing.
PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}
# The keys of a `search.space` entry, by type.
SPEC_KEYS = {
    "float": ("type", "low", "high", "log", "step"),
    "int": ("type", "low", "high", "log", "step"),
    "categorical": ("type", "choices"),
}
# The keys of `search` and the values of those a search config may leave out.
DEFAULTS: dict[str, Any] = {
    "study_name": "study",
    "n_trials": None,
    "metric": "val/loss",
    "direction": "minimize",
    "storage": None,
    "sampler": None,
    "pruner": None,
    "space": None,
}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_ABSENT = object()


@dataclass
class Search:
    """The checked ``search`` settings, the pruner built."""

    study_name: str
    n_trials: int
    metric: str
    direction: Literal["minimize", "maximize"]
    storage: str | None
    #: ``search.sampler`` (checked: it builds), or None for Optuna's default (TPE, unseeded).
    sampler_settings: dict[str, Any] | None
    pruner: optuna.pruners.BasePruner
    space: dict[str, BaseDistribution]

    def sampler(self, trials: int) -> optuna.samplers.BaseSampler | None:
        """The sampler for a study that holds ``trials`` trials, its seed moved on by as many:
        a seeded sampler started afresh on a resumed study would draw its first points again."""
        if self.sampler_settings is None:
            return None
        kwargs = {key: value for key, value in self.sampler_settings.items() if key != "name"}
        if isinstance(kwargs.get("seed"), int):
            kwargs["seed"] += trials
        return SAMPLERS[self.sampler_settings["name"]](**kwargs)


class ReportToTrial(Callback):
    """Reports ``metric`` to the trial after each validation epoch (the step is the epoch), and
    stops the fit with ``optuna.TrialPruned`` when the pruner says the trial is hopeless; keeps
    the values, so the trial's value is its best epoch, as the checkpoint keeps the best."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.values: list[float] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the epoch's metrics are reduced (on_validation_epoch_end is too early).
        if trainer.sanity_checking:
            return
        if self.metric not in trainer.callback_metrics:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
            raise ConfigError(
                f"search.metric={self.metric}: the run does not log it (it logs {logged})"
            )
        value = float(trainer.callback_metrics[self.metric])
        self.values.append(value)
        self.trial.report(value, step=trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {trainer.current_epoch}: {self.metric}={value:.4g}")


def read_search(cfg: DictConfig) -> Search:
    """``cfg.search`` checked (every problem named, one per line), before anything is written."""
    node = cfg.get("search")
    if not isinstance(node, DictConfig):
        raise ConfigError("search: no search chosen; give one, e.g. search=japanese_vowels")
    given = OmegaConf.to_container(node, resolve=True)
    assert isinstance(given, dict)
    settings = {**DEFAULTS, **given}
    problems = [
        f"search.{key}: unknown key; known: {', '.join(DEFAULTS)}"
        for key in settings
        if key not in DEFAULTS
    ]
    n_trials, storage = settings["n_trials"], settings["storage"]
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        problems.append(f"search.n_trials={n_trials!r}: must be a whole number >= 1")
    if settings["direction"] not in ("minimize", "maximize"):
        problems.append(f"search.direction={settings['direction']!r}: minimize or maximize")
    for key in ("metric", "study_name"):
        if not isinstance(settings[key], str) or not settings[key]:
            problems.append(f"search.{key}={settings[key]!r}: must be a name")
    if storage is not None and not (isinstance(storage, str) and storage.startswith("sqlite:///")):
        problems.append(
            f"search.storage={storage!r}: null (the study in memory) or sqlite:///<file>"
        )
    devices, nodes = cfg.trainer.get("devices"), cfg.trainer.get("num_nodes", 1)
    if not (devices in (1, "1") or (OmegaConf.is_list(devices) and len(devices) == 1)):
        problems.append(
            f"trainer.devices={devices}: a search trains its trials in one process (DDP would "
            "start the whole search again in every other); use trainer.devices=1"
        )
    if nodes != 1:
        problems.append(f"trainer.num_nodes={nodes}: a search trains on one machine")
    space = dict(space_distributions(settings["space"], cfg, problems))
    build_named("sampler", settings["sampler"], SAMPLERS, problems)  # checked, built per study
    pruner = build_named("pruner", settings["pruner"], PRUNERS, problems)
    if problems:
        raise ConfigError(*problems)
    return Search(
        study_name=settings["study_name"],
        n_trials=n_trials,
        metric=settings["metric"],
        direction=settings["direction"],
        storage=storage,
        sampler_settings=settings["sampler"],
        pruner=pruner or optuna.pruners.NopPruner(),
        space=space,
    )


def build_named(
    key: str, node: Any, table: Mapping[str, Callable[..., Any]], problems: list[str]
) -> Any:
    """``table[node["name"]](**the other keys)``, or None for a null ``node``; a problem is
    appended to ``problems`` instead."""
    if node is None:
        return None
    name = node.get("name") if isinstance(node, Mapping) else node
    if not isinstance(node, Mapping) or not isinstance(name, str) or name not in table:
        problems.append(
            f"search.{key}.name={name!r}: allowed: {', '.join(table)} (or search.{key}=null)"
        )
        return None
    try:
        return table[name](**{k: v for k, v in node.items() if k != "name"})
    except (TypeError, ValueError) as error:
        problems.append(f"search.{key}: {name}: {error}")
        return None


def space_distributions(
    space: Any, cfg: DictConfig, problems: list[str]
) -> Iterator[tuple[str, BaseDistribution]]:
    """Each ``search.space`` key and its Optuna distribution; a problem is appended to
    ``problems`` for a key the train config lacks, one the command line sets too (it would
    silently lose to the trial's value), or a spec that is not float/int/categorical."""
    if not isinstance(space, Mapping) or not space:
        problems.append(
            "search.space: give one or more train-config keys, e.g. "
            "model.optimizer.lr: {type: float, low: 1e-4, high: 1e-2, log: true}"
        )
        return
    fixed = {override_key(o) for o in HydraConfig.get().overrides.task}
    for key, spec in space.items():
        where = f"search.space.{key}"
        if key.split(".")[0] in ("search", "hydra") or _ABSENT is OmegaConf.select(
            cfg, key, default=_ABSENT, throw_on_resolution_failure=False
        ):
            problems.append(f"{where}: not a key of the train config")
        elif key in fixed:
            problems.append(f"{where}: also set on the command line ({key}=...); drop one")
        try:
            yield key, distribution(spec)
        except (TypeError, ValueError) as error:
            problems.append(f"{where}: {error}")


def distribution(spec: Any) -> BaseDistribution:
    """The Optuna distribution of one ``search.space`` entry: ``{type: float, low, high, log,
    step}``, ``{type: int, ...}`` or ``{type: categorical, choices: [...]}``."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"{spec!r}: give {{type: float|int|categorical, ...}}")
    kind = spec.get("type")
    if kind not in SPEC_KEYS:
        raise ValueError(f"type={kind!r}: allowed: {', '.join(SPEC_KEYS)}")
    unknown = [key for key in spec if key not in SPEC_KEYS[kind]]
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)}: unknown for type {kind} ({', '.join(SPEC_KEYS[kind])})"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        primitive = (str, int, float, bool, type(None))
        if not isinstance(choices, list) or not all(isinstance(c, primitive) for c in choices):
            raise ValueError(f"choices={choices!r}: a list of numbers, strings, booleans or null")
        return CategoricalDistribution(choices)
    number = int if kind == "int" else (int, float)
    for bound in ("low", "high"):
        value = spec.get(bound)
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            raise ValueError(f"{bound}={value!r}: must be a {'whole ' * (kind == 'int')}number")
    if not isinstance(spec.get("log", False), bool):
        raise ValueError(f"log={spec['log']!r}: true or false")
    if kind == "int":
        return IntDistribution(
            spec["low"], spec["high"], spec.get("log", False), spec.get("step", 1)
        )
    return FloatDistribution(spec["low"], spec["high"], spec.get("log", False), spec.get("step"))


def suggest(trial: optuna.Trial, key: str, space: BaseDistribution) -> Any:
    """The trial's value of ``key``, sampled from ``space``."""
    if isinstance(space, CategoricalDistribution):
        return trial.suggest_categorical(key, space.choices)
    if isinstance(space, IntDistribution):
        return trial.suggest_int(key, space.low, space.high, step=space.step, log=space.log)
    assert isinstance(space, FloatDistribution)
    return trial.suggest_float(key, space.low, space.high, step=space.step, log=space.log)


def override_key(override: str) -> str:
    """``model.optimizer.lr`` of ``model.optimizer.lr=0.01`` (or of ``+key=``, ``~key``)."""
    return override.split("=", 1)[0].lstrip("+~")


def override(key: str, value: Any) -> str:
    """A Hydra override that sets ``key`` to ``value`` (quoted when not a plain word)."""
    if value is None or isinstance(value, bool):
        return f"{key}={'null' if value is None else str(value).lower()}"
    if isinstance(value, str) and not re.fullmatch(r"[\w./-]+", value):
        return f"{key}='{value}'"
    return f"{key}={value}"


def compose_trial(overrides: Sequence[str], run_dir: Path, number: int) -> DictConfig:
    """The train config of one trial: the search's own command line plus ``overrides``, with
    the Hydra settings of a multirun job in ``run_dir`` (as loggers name runs from them, and
    DDP's re-launch of the command, which would start the whole search again, is refused)."""
    outer = HydraConfig.get()
    try:
        cfg = compose(
            "train",
            [*outer.overrides.hydra, *outer.overrides.task, *overrides],
            return_hydra_config=True,
        )
    except HydraException as error:
        raise ConfigError(f"search.space: trial {number}: {' '.join(overrides)}: {error}") from None
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.job.name = outer.job.name
        cfg.hydra.job.num = number
        cfg.hydra.job.id = str(number)
        del cfg.search
    return cfg


def run_trial(trial: optuna.Trial, search: Search, study_dir: Path) -> float:
    """Train the trial's config in its folder; its value is the best epoch's ``metric``."""
    overrides = [override(key, suggest(trial, key, space)) for key, space in search.space.items()]
    run_dir = study_dir / f"trial_{trial.number}"
    cfg = compose_trial(overrides, run_dir, trial.number)
    log.info("trial %d: %s -> %s", trial.number, " ".join(overrides), run_dir)
    outer = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)  # ${hydra:runtime.output_dir} is the trial's folder
    try:
        with open_dict(cfg):
            del cfg.hydra
        check_config(cfg)
        atomic_write(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        reporter = ReportToTrial(trial, search.metric)
        train(cfg, callbacks=[reporter])
    finally:
        HydraConfig.instance().cfg = outer
    if not reporter.values:
        raise ConfigError(
            f"search.metric={search.metric}: never reported (no validation epoch: "
            "data.val_fraction=0, or trainer.limit_val_batches=0?)"
        )
    return min(reporter.values) if search.direction == "minimize" else max(reporter.values)


def open_study(search: Search, study_dir: Path) -> optuna.Study:
    """The study, loaded when its storage holds it; trials a killed search left running are
    marked failed (they are never finished, and their numbers are not reused)."""
    if search.storage is not None:
        Path(search.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        storage=search.storage,
        study_name=search.study_name,
        sampler=search.sampler(0),
        pruner=search.pruner,
        direction=search.direction,
        load_if_exists=True,
    )
    if study.trials:
        study.sampler = search.sampler(len(study.trials)) or study.sampler
    if study.direction.name.lower() != search.direction:
        raise ConfigError(
            f"search.direction={search.direction}: study {search.study_name} in "
            f"{search.storage} was made to {study.direction.name.lower()}; give another study_name"
        )
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(stale.number, state=TrialState.FAIL)
        log.warning(
            "trial %d was left running by a search that was killed: marked FAIL", stale.number
        )
    # Trial numbers go on from here: a folder already there is from an earlier study.
    taken = [
        run.name
        for run in study_dir.glob("trial_*")
        if run.is_dir()
        and run.name[6:].isdigit()
        and int(run.name[6:]) >= len(study.trials)
        and any(run.iterdir())
    ]
    if taken:
        raise ConfigError(
            f"search.study_name={search.study_name}: {study_dir} already holds {', '.join(sorted(taken))} "
            "of an earlier study of that name (in memory, or a removed database); "
            "give another study_name or remove them"
        )
    return study


def run_search(cfg: DictConfig) -> optuna.Study:
    """Run the missing trials of the study of ``cfg.search``; write ``best.yaml``."""
    search = read_search(cfg)
    check_config(cfg)
    study_dir = Path(cfg.paths.log_dir) / cfg.task_name / "search" / search.study_name
    study = open_study(search, study_dir)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    todo = max(0, search.n_trials - finished)
    log.info(
        "study %s (%s): %d of %d trials finished, %d to run",
        search.study_name,
        search.storage or "in memory",
        finished,
        search.n_trials,
        todo,
    )
    for _ in range(todo):
        trial = study.ask()
        try:
            value = run_trial(trial, search, study_dir)
        except optuna.TrialPruned as pruned:
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d pruned at %s", trial.number, pruned)
            continue
        except NonFiniteLossError as diverged:
            # A diverging trial is a finished bad one, not a broken search.
            study.tell(trial, state=TrialState.PRUNED)
            log.warning("trial %d pruned: %s", trial.number, str(diverged).split(":")[0])
            continue
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, value)
        log.info(
            "trial %d: %s=%.6g (best: trial %d)",
            trial.number,
            search.metric,
            value,
            study.best_trial.number,
        )
    write_best(study, search, study_dir)
    return study


def write_best(study: optuna.Study, search: Search, study_dir: Path) -> None:
    """``best.yaml`` in the study folder: the best trial's parameters, value and folder."""
    counts = {
        state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
        for state in TrialState
    }
    if not counts["complete"]:
        log.warning("study %s: no trial completed (%s), so no best.yaml", search.study_name, counts)
        return
    best = study.best_trial
    summary = {
        "study_name": search.study_name,
        "metric": search.metric,
        "direction": search.direction,
        "best_trial": best.number,
        "best_value": best.value,
        "best_params": best.params,
        "best_dir": str(study_dir / f"trial_{best.number}"),
        "trials": {state: n for state, n in counts.items() if n},
    }
    path = study_dir / "best.yaml"
    atomic_write(path, OmegaConf.to_yaml(OmegaConf.create(summary)))
    log.info(
        "best: trial %d, %s=%.6g, %s (%s)",
        best.number,
        search.metric,
        best.value,
        best.params,
        path,
    )


@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    """The body of ``scripts/search.py``: run the search, return the best value."""
    # Optuna's messages through the logging Hydra set up (console and the search's log file).
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    study = run_search(cfg)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return study.best_value if complete else None
