"""KVAE-CNN, KVAE-MLP and DMM on the pixel pendulum (thesis §6.5.2, Table 6.1):
``worldmodels experiment kvae-pendulum``.

The experiment is :mod:`worldmodels.experiments.kvae_pendulum`; this shim keeps the documented command
``python scripts/kvae_pendulum.py --epochs 60 --threads 1``.
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "kvae-pendulum", *sys.argv[1:]]))
