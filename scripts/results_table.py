"""Print the README's results table from the experiments' run folders.

``python scripts/results_table.py [logs]``: one row per reference of issue #4, with the mean
(± std over seeds) of the latest run of each seed of ``experiment=<name>``.
"""

import argparse

from seqlab.utils.results import results_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="?", default="logs", help="folder to search for runs")
    print(results_table(parser.parse_args().logs))


if __name__ == "__main__":
    main()
