"""Regenerate ``docs/results/kvae.md`` from ``docs/results/kvae*.json``:
``worldmodels experiment kvae-ball --phase report``.

The page is written by :mod:`worldmodels.experiments.kvae_report` (the ``report`` phase of ``kvae-ball``
and ``kvae-pendulum``); this shim keeps the documented command ``python scripts/kvae_report.py``.
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "kvae-ball", "--phase", "report", *sys.argv[1:]]))
