"""Held-out sets for `data=ucr`, generated from their published definitions and written in the
UCR 2018 archive's layout (`<Name>/<Name>_TRAIN.tsv`, `_TEST.tsv`: label, then the values).

- `GenCBF`: Cylinder-Bell-Funnel (Saito 1994), exactly as the archive's CBF is defined: 128
  steps, a plateau, a rise or a fall of height 6 + eta on [a, b] plus N(0, 1) noise, with
  a ~ U{16..32} and b - a ~ U{32..96}; 30 training and 900 test series, as CBF has.
- `GenTwoPatterns`: after Geurts (2001), the archive's TwoPatterns: two steps, each up (-5 then
  +5) or down (+5 then -5) and 8 to 32 steps long, at random places in N(0, 1) noise; the
  class is the pair in order (up-up, up-down, down-up, down-down); 1,000 training and 4,000
  test series. The archive's own generator is not published, so this is a look-alike.

- `GenGestures`: a set for `data=folder`, the path a user's own recordings take: three
  channels of 60 to 300 steps (a three-axis sensor), each with its own offset, a slow drift and
  noise, never z-scored; the class (6) is a pair of bumps in order, on which channel and up or
  down (e.g. x up then y up, or y up then x up), at places and widths that scale with the
  length; 180 training and 600 test recordings, one `.npy` (steps, channels) each, and a
  `labels.csv` (file, label, split). Defined here, for this check.

- `GenOrder` (`--selection`, written on its own): a set to choose a recipe on, not to judge
  it by: one channel of 60 to 300 steps, stored raw with an offset, a drift and noise; the
  class (4) is the signs of two bumps in order (up then down, down then up, up up, down
  down); 120 training and 400 test series, in the archive's layout, NaN-padded.

The other UCR-layout sets are z-scored, as the archive stores them. None of the first three was used to choose
anything in the recipe; docs/results.md gives seqlab's, 1-NN DTW's and 1-NN ED's accuracy on them.

    python scripts/generated_sets.py data/generated            # write the files
    python scripts/generated_sets.py data/generated --baselines  # and print 1-NN DTW and ED
    python scripts/train.py data=ucr data.data_dir=data/generated data.name=GenCBF
    python scripts/train.py data=folder data.path=data/generated/GenGestures
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

LENGTH = 128


def cbf_series(label: int, rng: np.random.Generator, noise: bool = True) -> np.ndarray:
    """One CBF series of class 0 (cylinder), 1 (bell) or 2 (funnel)."""
    t = np.arange(LENGTH)
    a = int(rng.integers(16, 33))
    b = a + int(rng.integers(32, 97))
    height = 6 + (rng.normal() if noise else 0.0)
    inside = ((t >= a) & (t <= b)).astype(float)
    shape = [inside, inside * (t - a) / (b - a), inside * (b - t) / (b - a)][label]
    return height * shape + (rng.normal(size=LENGTH) if noise else 0.0)


def two_patterns_series(label: int, rng: np.random.Generator, noise: bool = True) -> np.ndarray:
    """One series of class 0 (up, up), 1 (up, down), 2 (down, up) or 3 (down, down)."""
    series = rng.normal(size=LENGTH) if noise else np.zeros(LENGTH)
    first, second = divmod(label, 2)  # 0: up, 1: down
    lengths = rng.integers(8, 33, size=2)
    start = int(rng.integers(0, LENGTH - lengths.sum() + 1))
    starts = (start, int(rng.integers(start + lengths[0], LENGTH - lengths[1] + 1)))
    for down, begin, steps in zip((first, second), starts, lengths, strict=True):
        half = int(steps) // 2
        low, high = (5.0, -5.0) if down else (-5.0, 5.0)
        series[begin : begin + half] = low
        series[begin + half : begin + steps] = high
    return series


# GenGestures' classes: (channel, +1 up / -1 down) of the first bump, then of the second.
GESTURES = {
    "x_up_y_up": ((0, 1), (1, 1)),
    "y_up_x_up": ((1, 1), (0, 1)),
    "x_up_x_down": ((0, 1), (0, -1)),
    "z_down_y_up": ((2, -1), (1, 1)),
    "y_down_z_down": ((1, -1), (2, -1)),
    "z_up_z_up": ((2, 1), (2, 1)),
}
GESTURE_SPLITS = {"train": 180, "test": 600}


def balanced_labels(size: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` class indices, the classes in turn, in a shuffled order."""
    return rng.permutation(np.arange(size) % classes)


def gesture_series(label: str, rng: np.random.Generator, noise: bool = True) -> np.ndarray:
    """One (steps, 3) recording of gesture ``label``: two Gaussian bumps of height 2 to 3 (times
    the recording's strength, 0.7 to 1.4), the first centred in 15-40% of its length, the second
    in 55-85%, widths 3-6% of it, over an offset, a drift and noise per channel."""
    steps = int(rng.integers(60, 301))
    t = np.arange(steps)
    strength = rng.uniform(0.7, 1.4)
    x = np.zeros((steps, 3))
    for (channel, sign), (low, high) in zip(
        GESTURES[label], ((0.15, 0.4), (0.55, 0.85)), strict=True
    ):
        centre, width = rng.uniform(low, high) * steps, rng.uniform(0.03, 0.06) * steps
        height = sign * strength * rng.uniform(2.0, 3.0)
        x[:, channel] += height * np.exp(-0.5 * ((t - centre) / width) ** 2)
    if noise:
        x += rng.normal(size=3)  # the sensor's offset
        x += np.cumsum(rng.normal(scale=0.05, size=(steps, 3)), axis=0)  # drift
        x += rng.normal(scale=0.3, size=(steps, 3))
    return x


def write_gestures(folder: Path, rng: np.random.Generator) -> None:
    """GenGestures as `data=folder` reads it: one .npy a recording and labels.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["file,label,split"]
    names = list(GESTURES)
    for split, size in GESTURE_SPLITS.items():
        for index, label_index in enumerate(balanced_labels(size, len(names), rng)):
            label = names[int(label_index)]
            file = f"{split}_{index:04d}.npy"
            np.save(folder / file, gesture_series(label, rng).astype(np.float32))
            rows.append(f"{file},{label},{split}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


# GenOrder's classes: the sign (+1 up, -1 down) of the first bump, then of the second.
ORDERS = ((1, -1), (-1, 1), (1, 1), (-1, -1))
ORDER_SPLITS = {"TRAIN": 120, "TEST": 400}
ORDER_MAX_STEPS = 300


def order_series(label: int, rng: np.random.Generator, noise: bool = True) -> np.ndarray:
    """One GenOrder series (60 to 300 steps) of class ``label`` (`ORDERS`): two Gaussian bumps
    of height 2 to 3, centred in 10-40% and 60-90% of the length, widths 2-5% of it, over an
    offset, a drift and noise. Classes 0 and 1 hold the same two bumps in the other order."""
    steps = int(rng.integers(60, ORDER_MAX_STEPS + 1))
    t = np.arange(steps)
    x = np.zeros(steps)
    for sign, (low, high) in zip(ORDERS[label], ((0.1, 0.4), (0.6, 0.9)), strict=True):
        centre, width = rng.uniform(low, high) * steps, rng.uniform(0.02, 0.05) * steps
        x += sign * rng.uniform(2.0, 3.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    if noise:
        x += rng.normal(scale=2.0) + np.cumsum(rng.normal(scale=0.05, size=steps))
        x += rng.normal(scale=0.3, size=steps)
    return x


def write_order(folder: Path, rng: np.random.Generator) -> None:
    """GenOrder in the archive's layout, stored raw, shorter series padded with NaN."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in ORDER_SPLITS.items():
        labels = balanced_labels(size, len(ORDERS), rng)
        table = np.full((size, 1 + ORDER_MAX_STEPS), np.nan)
        for row, label in enumerate(labels):
            series = order_series(int(label), rng)
            table[row, 0] = label + 1
            table[row, 1 : 1 + len(series)] = series
        np.savetxt(folder / f"GenOrder_{split}.tsv", table, delimiter="\t", fmt="%.6g")


def read_gestures(folder: Path) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """Each split of GenGestures as (channels, steps) arrays and labels, read by `data=folder`'s
    own reader, so the baselines see what seqlab sees."""
    from seqlab.data.folder import FolderDataModule

    sequences = FolderDataModule(path=str(folder)).read()
    splits = {}
    for split in GESTURE_SPLITS:
        rows = [i for i, name in enumerate(sequences.splits) if name == split]
        xs = [sequences.inputs[i].T for i in rows]
        splits[split] = xs, np.array([sequences.targets[i] for i in rows])
    return splits


SETS: dict[str, tuple[Callable[..., np.ndarray], int, int, int]] = {
    # name: (one series, classes, training series, test series)
    "GenCBF": (cbf_series, 3, 30, 900),
    "GenTwoPatterns": (two_patterns_series, 4, 1000, 4000),
}


def generate(name: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``size`` z-scored series of set ``name``, classes in turn, in a shuffled order."""
    series_fn, classes, _, _ = SETS[name]
    labels = balanced_labels(size, classes, rng)
    x = np.stack([series_fn(int(label), rng) for label in labels])
    return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True), labels + 1


def write(out: Path, seed: int = 0) -> None:
    for name, (_, _, n_train, n_test) in SETS.items():
        rng = np.random.default_rng(seed)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for split, size in (("TRAIN", n_train), ("TEST", n_test)):
            x, y = generate(name, size, rng)
            table = np.column_stack([y, x])
            np.savetxt(folder / f"{name}_{split}.tsv", table, delimiter="\t", fmt="%.6g")
    write_gestures(out / "GenGestures", np.random.default_rng(seed))


def baselines(out: Path) -> None:
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier

    def one_nn(name: str, distance: str, train: tuple, test: tuple) -> None:
        knn = KNeighborsTimeSeriesClassifier(n_neighbors=1, distance=distance)
        knn.fit(*train)
        accuracy = float((knn.predict(test[0]) == test[1]).mean())
        print(f"{name}: 1-NN {distance} {accuracy:.4f}", flush=True)

    for name in SETS:
        train, test = (np.loadtxt(out / name / f"{name}_{s}.tsv") for s in ("TRAIN", "TEST"))
        for distance in ("dtw", "euclidean"):
            one_nn(
                name, distance, (train[:, None, 1:], train[:, 0]), (test[:, None, 1:], test[:, 0])
            )
    # Recordings of different lengths: DTW only (Euclidean distance needs equal lengths), on
    # channels z-scored over the training split (as `data=folder` reads a multichannel set),
    # then on each recording's channels z-scored by themselves.
    train, test = read_gestures(out / "GenGestures").values()
    steps = np.concatenate(train[0], axis=1)
    mean, std = steps.mean(1, keepdims=True), steps.std(1, keepdims=True)
    scalings = {
        "channels z-scored": lambda x: (x - mean) / std,
        "each recording z-scored": lambda x: (
            (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
        ),
    }
    for scaling, scale in scalings.items():
        scaled = [([scale(x) for x in xs], y) for xs, y in (train, test)]
        one_nn(f"GenGestures ({scaling})", "dtw", scaled[0], scaled[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write <Name>/<Name>_TRAIN.tsv into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baselines", action="store_true", help="print 1-NN DTW and ED too")
    parser.add_argument(
        "--selection", action="store_true", help="write GenOrder only, the set to choose on"
    )
    args = parser.parse_args()
    if args.selection:
        write_order(args.out / "GenOrder", np.random.default_rng(args.seed))
        return
    write(args.out, args.seed)
    if args.baselines:
        baselines(args.out)


if __name__ == "__main__":
    main()
