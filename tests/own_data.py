"""Generated files in the shapes users bring: a folder of arrays with labels.csv, a long table."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CLASSES = ("down", "flat", "up")


def walks(n: int, channels: int = 2, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """``n`` random walks of 12-30 steps whose drift (down, flat, up) is the class."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        cls = i % len(CLASSES)
        steps = rng.normal(cls - 1, 1.0, size=(int(rng.integers(12, 31)), channels))
        xs.append(np.cumsum(steps, axis=0).astype(np.float32))
        ys.append(CLASSES[cls])
    return xs, ys


def write_folder(
    root: Path,
    n: int = 30,
    channels: int = 2,
    *,
    labels: list[object] | None = None,
    splits: list[str] | None = None,
    per_step: str = "",
    layout: str = "TC",
) -> Path:
    """``root/labels.csv`` and one ``.npy`` per walk; ``labels`` replaces the classes (e.g.
    real numbers). ``per_step="file"`` writes a step_labels file per walk instead of a label,
    ``"npz"`` an ``.npz`` with ``x`` and ``y`` (each step labelled by its sign of change)."""
    root.mkdir(parents=True, exist_ok=True)
    xs, ys = walks(n, channels)
    labels = list(ys) if labels is None else labels
    header = ["file", "step_labels" if per_step == "file" else "label"]
    if per_step == "npz":
        header = ["file", "step_labels"]
    if splits is not None:
        header.append("split")
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, x in enumerate(xs):
            steps = (np.diff(x[:, 0], prepend=0.0) > 0).astype(np.int64)
            stored = x.T if layout == "CT" else x
            if per_step == "npz":
                np.savez(root / f"walk_{i:03d}.npz", x=stored, y=steps)
                row = [f"walk_{i:03d}.npz", ""]
            else:
                np.save(root / f"walk_{i:03d}.npy", stored)
                if per_step == "file":
                    np.save(root / f"walk_{i:03d}_steps.npy", steps)
                    row = [f"walk_{i:03d}.npy", f"walk_{i:03d}_steps.npy"]
                else:
                    row = [f"walk_{i:03d}.npy", str(labels[i])]
            if splits is not None:
                row.append(splits[i])
            writer.writerow(row)
    return root


def table_rows(n: int = 30, channels: int = 2) -> list[dict[str, object]]:
    """The walks as a long table: id, time, label, split and channels c0, c1, ..."""
    xs, ys = walks(n, channels)
    rows = []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        for t, step in enumerate(x):
            row: dict[str, object] = {"id": f"s{i:03d}", "time": t, "label": y}
            row |= {f"c{j}": float(v) for j, v in enumerate(step)}
            rows.append(row)
    return rows


def write_table(path: Path, rows: list[dict[str, object]] | None = None) -> Path:
    """``rows`` (default `table_rows`) as a CSV or Parquet file, by ``path``'s suffix, in a
    shuffled order: a table's rows need not come sorted."""
    import pandas as pd

    frame = pd.DataFrame(table_rows() if rows is None else rows)
    frame = frame.sample(frac=1.0, random_state=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path
