"""Regenerate ``docs/results/planning.md`` from ``docs/results/planning_*.json``.

Runs ``worldmodels experiment planning-report`` (:mod:`worldmodels.experiments.planning`):
``python scripts/plan_report.py``.
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "planning-report", *sys.argv[1:]]))
