"""Run the benchmarks and write ``docs/benchmarks.json`` + ``docs/benchmarks.md`` (what ``make bench`` runs).

The groups and the runner are :mod:`worldmodels.experiments.benchmarks`; this runs ``worldmodels bench``.
Usage: ``python scripts/bench.py [--only GROUP ...] [--list]``; groups not run keep their previous rows.
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
