"""KVAE on the bouncing-ball videos (thesis §6.5, §6.10, §6.12): ``worldmodels experiment kvae-ball``.

The experiment is :mod:`worldmodels.experiments.kvae_ball`; this shim keeps the documented commands, e.g.
``python scripts/kvae_ball.py --variant box --stage eval --threads 2``. ``--stage`` is the script's old
name of ``--phase`` (data, train, baselines, eval, report, all).
"""

import sys

from worldmodels.cli import main


def _phase(arg: str) -> str:
    return "--phase" + arg[len("--stage"):] if arg == "--stage" or arg.startswith("--stage=") else arg


if __name__ == "__main__":
    raise SystemExit(main(["experiment", "kvae-ball", *map(_phase, sys.argv[1:])]))
