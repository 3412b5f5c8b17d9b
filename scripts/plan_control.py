"""Planning experiment 3: MPC (CEM / MPPI) in a KVAE — ball into a region, pendulum swing-up.

Runs ``worldmodels experiment planning-control`` (:mod:`worldmodels.experiments.planning_control`) with these
arguments, e.g. ``python scripts/plan_control.py --checkpoint runs/kvae_force/last``.
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "planning-control", *sys.argv[1:]]))
