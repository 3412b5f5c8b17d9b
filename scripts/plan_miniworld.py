"""Planning experiment 2, return to a remembered view in MiniWorld 3-D (GTM-SM, thesis Ch. 7):
``worldmodels experiment planning-miniworld`` with these arguments.

The experiment lives in :mod:`worldmodels.experiments.planning_miniworld` (its docstring gives the protocol)::

    python scripts/plan_miniworld.py --parts walk --snapshot 1
    python scripts/plan_miniworld.py --parts rotate
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "planning-miniworld", *sys.argv[1:]]))
