"""Benchmarks: `python scripts/benchmark.py --help`. The logic lives in seqlab.utils.benchmark."""

from seqlab.utils.benchmark import main

if __name__ == "__main__":
    main()
