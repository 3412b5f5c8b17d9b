"""`make demo`: the whole story of worldmodels on a fresh clone, in minutes on 2 CPU cores.

Runs ``worldmodels experiment demo`` (the steps: ``worldmodels/experiments/demo.py``): collect small ImageNav
and bouncing-ball datasets (GIFs, contact sheets), train a tiny GTM-SM and imagine 100 steps (also with the
shipped ``gtmsm-imagenav``), impute missing frames with a tiny KVAE, plan (GTM-SM to a remembered goal; CEM
pushes a ball), then a summary table (also ``runs/demo/summary.md``) with every file written.

Usage: ``python scripts/demo.py`` (re-running resumes/reuses what is there; ``--out DIR`` writes elsewhere).
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "demo", *sys.argv[1:]]))
