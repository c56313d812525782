"""Show and save what a run did: the config tree at start, the metrics at the end."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import rich
import rich.syntax
import rich.table
import rich.tree
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

# The order groups appear in the printed tree; the rest follow.
TREE_ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths")


@rank_zero_only
def print_config_tree(cfg: DictConfig, save_dir: str | Path | None = None) -> None:
    """Print the resolved config as a tree and save it (``config.yaml``, ``config_tree.log``)."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in TREE_ORDER if k in cfg] + [k for k in cfg if k not in TREE_ORDER]
    for key in keys:
        value = cfg[key]
        text = (
            OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        )
        tree.add(str(key), style="bold").add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_dir is not None:
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(save_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        with (save_dir / "config_tree.log").open("w") as f:
            rich.print(tree, file=f)


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 via a temporary file and a rename, so a crash never leaves a
    half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_metrics(metrics: Mapping[str, float], run_dir: str | Path) -> Path:
    """Write ``<run_dir>/metrics.json`` (keys as logged, e.g. ``"test/acc"``)."""
    path = Path(run_dir) / "metrics.json"
    atomic_write(path, json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")
    return path


def print_metrics(metrics: Mapping[str, float], title: str) -> None:
    table = rich.table.Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(metrics.items()):
        table.add_row(key, f"{value:.4f}")
    rich.print(table)
