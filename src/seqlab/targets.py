"""What a task's settings may build: every ``_target_`` in them is checked here first.

A checkpoint saves the task's settings (the config's ``model`` group: ``encoder``, ``head``,
``optimizer``, ``scheduler``), and eval, predict, export, generate and ``load_from_checkpoint``
rebuild the model from them. Reading the file weights-only runs no code, but a ``_target_`` in
those settings says what to call: handed to Hydra's ``instantiate`` it could name any callable
(``numpy.savetxt``, ``shutil.rmtree``), at any depth, and even a string value
(``${oc.create:...}``) resolves into one there. So settings never go to ``instantiate``. A
``_target_`` may stand

- at ``model.encoder``: a key of ``seqlab.nn.ENCODERS`` (a fork adds its own encoders there);
- at ``model.optimizer``: a key of ``OPTIMIZERS`` (torch.optim's optimizers);
- at ``model.scheduler``: a key of ``SCHEDULERS`` (torch.optim.lr_scheduler's schedulers);

and nowhere else: nothing nested is built. Settings that name anything else are refused before
anything is imported from them; an allowed class is imported by that exact path, then called with
the other keys as plain keyword arguments.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from seqlab.errors import ConfigError
from seqlab.nn import ENCODERS


def _classes(module: ModuleType, *bases: type) -> dict[str, str]:
    """``module``'s public classes that subclass one of ``bases``, by dotted path."""
    return {
        f"{module.__name__}.{name}": f"torch's {name}"
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, bases) and not name.startswith("_")
    }


_schedulers = torch.optim.lr_scheduler
#: The optimizers ``model.optimizer._target_`` may name, by dotted path (a fork may add its own).
OPTIMIZERS: dict[str, str] = _classes(torch.optim, torch.optim.Optimizer)
#: The schedulers ``model.scheduler._target_`` may name, by dotted path.
SCHEDULERS: dict[str, str] = _classes(
    _schedulers, _schedulers.LRScheduler, _schedulers.ReduceLROnPlateau
)
# Where a ``_target_`` may stand, what it may name there, and how to allow another class.
ALLOWED: dict[str, tuple[dict[str, str], str]] = {
    "encoder": (ENCODERS, "register the class: add its dotted path to seqlab.nn.ENCODERS"),
    "optimizer": (OPTIMIZERS, "use one of torch.optim's, or add it to seqlab.targets.OPTIMIZERS"),
    "scheduler": (SCHEDULERS, "use one of torch.optim.lr_scheduler's, or add it to SCHEDULERS"),
}
# Hydra's keys beside ``_target_``: seqlab builds the class itself and reads none of them.
HYDRA_OPTIONS = ("_partial_", "_recursive_", "_convert_", "_args_")


def target_problems(settings: Mapping[str, Any], path: str = "model") -> Iterator[str]:
    """One line per ``_target_`` of a task's ``settings`` that may not be built: at ``encoder``,
    ``optimizer`` or ``scheduler`` a class not on its list, anywhere else any at all."""
    for key, value in settings.items():
        if key in ALLOWED and isinstance(value, Mapping):
            yield from node_problems(value, f"{path}.{key}")
        else:
            yield from nested_targets(value, f"{path}.{key}")


def node_problems(node: Mapping[str, Any], path: str) -> Iterator[str]:
    """Problems of the node at ``path`` (``model.encoder``, ...) that names the class to build."""
    allowed, how = ALLOWED[path.rpartition(".")[2]]
    target = node.get("_target_")
    if "_target_" in node and not (isinstance(target, str) and target in allowed):
        shown = ", ".join(sorted(allowed)) if len(allowed) <= 4 else f"{len(allowed)} classes"
        yield (
            f"{path}._target_={target!r}: not an allowed class, so nothing is imported or built "
            f"from it (allowed: {shown}); {how}"
        )
    for option in HYDRA_OPTIONS:
        if option in node:
            yield f"{path}.{option}: not read (seqlab builds {path} itself); remove it"
    for key, value in node.items():
        if key != "_target_":
            yield from nested_targets(value, f"{path}.{key}")


def nested_targets(value: Any, path: str) -> Iterator[str]:
    """A line for every ``_target_`` inside ``value``, at any depth of dicts and lists."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "_target_":
                yield (
                    f"{path}._target_={item!r}: nothing inside the settings is built (only "
                    "model.encoder, model.optimizer and model.scheduler name a class); remove it"
                )
            else:
                yield from nested_targets(item, f"{path}.{key}")
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for i, item in enumerate(value):
            yield from nested_targets(item, f"{path}[{i}]")


def check_targets(settings: Mapping[str, Any], where: str = "") -> None:
    """Raise ``ConfigError`` for every ``target_problems`` line, each after ``where`` (e.g.
    ``ckpt_path=logs/.../last.ckpt: ``)."""
    problems = [f"{where}{problem}" for problem in target_problems(settings)]
    if problems:
        raise ConfigError(*problems)


def build(node: Mapping[str, Any], path: str, **kwargs: Any) -> Any:
    """The class ``node._target_`` names (checked: ``path`` is ``model.encoder``,
    ``model.optimizer`` or ``model.scheduler``), called with ``node``'s other keys, as plain
    values, and ``kwargs`` (which win)."""
    problems = list(node_problems(node, path))
    if "_target_" not in node:
        problems.append(f"{path}: no _target_ to build")
    if problems:
        raise ConfigError(*problems)
    settings = {str(key): plain(value) for key, value in node.items() if key != "_target_"}
    return get_class(node["_target_"])(**{**settings, **kwargs})


def plain(value: Any) -> Any:
    """``value`` with OmegaConf containers as dicts and lists (what the classes are given)."""
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value
