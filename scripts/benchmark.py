"""Benchmarks: `python scripts/benchmark.py --help`. The logic lives in benchmarks/ (repo root)."""

import sys
from pathlib import Path

# benchmarks/ sits beside scripts/, outside the installed package: import it from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cli import main

if __name__ == "__main__":
    main()
