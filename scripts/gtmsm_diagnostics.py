"""GTM-SM ELBO-failure diagnostics on ImageNav (thesis §7.4.1, docs/results/gtmsm_notes.md): runs
``worldmodels experiment gtmsm-diagnostics`` with these options (the experiment:
``worldmodels/experiments/gtmsm_diagnostics.py``)::

    python scripts/gtmsm_diagnostics.py --name kl_mc --set kl='"mc"' --curriculum 12:1500,24:1500
    python scripts/gtmsm_diagnostics.py --plot base=base kl_mc=kl_mc     # instead of training
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "gtmsm-diagnostics", *sys.argv[1:]]))
