"""GTM-SM in MiniWorld 3-D (thesis §7.4.2): ``worldmodels experiment gtmsm-miniworld`` with these arguments.

The experiment lives in :mod:`worldmodels.experiments.gtmsm_miniworld` (its docstring lists the commands)::

    python scripts/gtmsm_miniworld.py --phase all
    python scripts/gtmsm_miniworld.py --phase eval --agent walk_fourrooms --baselines rssm,vrnn,srnn
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "gtmsm-miniworld", *sys.argv[1:]]))
