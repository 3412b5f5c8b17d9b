"""GTM-SM image navigation (thesis §7.4.1, §7.7.1): runs ``worldmodels experiment gtmsm-imagenav`` with these
options (the experiment: ``worldmodels/experiments/gtmsm_imagenav.py``)::

    python scripts/gtmsm_imagenav.py                                   # data, train, eval, report
    python scripts/gtmsm_imagenav.py --phase report --name gtmsm_elbo  # docs/results/gtmsm_elbo.md
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "gtmsm-imagenav", *sys.argv[1:]]))
