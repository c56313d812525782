"""Held-out sets for `data=ucr`, generated from their published definitions and written in the
UCR 2018 archive's layout (`<Name>/<Name>_TRAIN.tsv`, `_TEST.tsv`: label, then the values).

- `GenCBF`: Cylinder-Bell-Funnel (Saito 1994), exactly as the archive's CBF is defined: 128
  steps, a plateau, a rise or a fall of height 6 + eta on [a, b] plus N(0, 1) noise, with
  a ~ U{16..32} and b - a ~ U{32..96}; 30 training and 900 test series, as CBF has.
- `GenTwoPatterns`: after Geurts (2001), the archive's TwoPatterns: two steps, each up (-5 then
  +5) or down (+5 then -5) and 8 to 32 steps long, at random places in N(0, 1) noise; the
  class is the pair in order (up-up, up-down, down-up, down-down); 1,000 training and 4,000
  test series. The archive's own generator is not published, so this is a look-alike.

Every series is z-scored, as the archive stores them. None of these sets was used to choose
anything in the recipe; docs/results.md gives seqlab's, 1-NN DTW's and 1-NN ED's accuracy on them.

    python scripts/generated_sets.py data/generated            # write the files
    python scripts/generated_sets.py data/generated --baselines  # and print 1-NN DTW and ED
    python scripts/train.py data=ucr data.data_dir=data/generated data.name=GenCBF
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


SETS: dict[str, tuple[Callable[..., np.ndarray], int, int, int]] = {
    # name: (one series, classes, training series, test series)
    "GenCBF": (cbf_series, 3, 30, 900),
    "GenTwoPatterns": (two_patterns_series, 4, 1000, 4000),
}


def generate(name: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``size`` z-scored series of set ``name``, classes in turn, in a shuffled order."""
    series_fn, classes, _, _ = SETS[name]
    labels = rng.permutation(np.arange(size) % classes)
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


def baselines(out: Path) -> None:
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier

    for name in SETS:
        train, test = (np.loadtxt(out / name / f"{name}_{s}.tsv") for s in ("TRAIN", "TEST"))
        for distance in ("dtw", "euclidean"):
            knn = KNeighborsTimeSeriesClassifier(n_neighbors=1, distance=distance)
            knn.fit(train[:, None, 1:], train[:, 0])
            accuracy = float((knn.predict(test[:, None, 1:]) == test[:, 0]).mean())
            print(f"{name}: 1-NN {distance} {accuracy:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write <Name>/<Name>_TRAIN.tsv into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baselines", action="store_true", help="print 1-NN DTW and ED too")
    args = parser.parse_args()
    write(args.out, args.seed)
    if args.baselines:
        baselines(args.out)


if __name__ == "__main__":
    main()
