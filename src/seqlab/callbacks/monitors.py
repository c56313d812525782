"""A checkpoint or early stop that monitors a metric the run never logs, refused at once.

Which metrics a run logs depends on its task (``val/acc`` for a classifier, ``val/mse`` for a
forecaster, ...), so the config checks cannot know them. Lightning finds out only after the
first epoch, with a traceback. This callback looks as soon as the metrics exist: ``val/``
monitors at the end of the first validation (the sanity check, before any training step),
the others at the end of the first training epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import lightning as L
from lightning.pytorch.callbacks import Callback

from seqlab.errors import ConfigError


class MonitorCheck(Callback):
    def __init__(self, keys: Mapping[str, str] | None = None) -> None:
        #: The config key that set each monitored metric, to name it in the error.
        self.keys = dict(keys or {})
        self._checked: set[str] = set()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, lambda monitor: monitor.startswith("val/"))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, lambda monitor: not monitor.startswith("val/"))

    def _check(self, trainer: L.Trainer, due: Callable[[str], bool]) -> None:
        logged = set(trainer.callback_metrics)
        problems = []
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            monitor = getattr(callback, "monitor", None)
            if not isinstance(monitor, str) or monitor in self._checked or not due(monitor):
                continue
            self._checked.add(monitor)
            if monitor not in logged:
                key = self.keys.get(monitor, f"{type(callback).__name__}(monitor=...)")
                problems.append(
                    f"{key}={monitor}: this run logs no such metric; it logs "
                    f"{', '.join(sorted(logged)) or 'none yet'}"
                )
        if problems:
            raise ConfigError(*dict.fromkeys(problems))
