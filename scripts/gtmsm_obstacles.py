"""GTM-SM with obstacles (thesis §7.10, §7.10.1): runs ``worldmodels experiment gtmsm-obstacles`` with these
options (the experiment: ``worldmodels/experiments/gtmsm_obstacles.py``)::

    python scripts/gtmsm_obstacles.py                                          # data, train, eval, report
    python scripts/gtmsm_obstacles.py --phase train --variant landmark         # one part (resumable)
    python scripts/gtmsm_obstacles.py --phase report                           # docs/results/gtmsm_obstacles.md
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "gtmsm-obstacles", *sys.argv[1:]]))
