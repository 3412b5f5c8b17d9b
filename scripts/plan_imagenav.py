"""Planning experiment 1, ImageNav goal reaching with memory (GTM-SM, thesis Ch. 7): runs
``worldmodels experiment planning-imagenav`` with these options (the experiment:
``worldmodels/experiments/planning_imagenav.py``)::

    python scripts/plan_imagenav.py                    # every agent; docs/results/planning_imagenav.json, planning.md
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "planning-imagenav", *sys.argv[1:]]))
