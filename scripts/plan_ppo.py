"""Planning experiment 4: PPO trained only inside a KVAE's imagination vs PPO on real steps.

Runs ``worldmodels experiment planning-ppo`` (:mod:`worldmodels.experiments.planning_ppo`) with these
arguments, e.g. ``python scripts/plan_ppo.py --checkpoint runs/kvae_force/last``.
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "planning-ppo", *sys.argv[1:]]))
