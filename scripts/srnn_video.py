"""SRNN and KVAE as action-conditioned video world models (docs/results/srnn.md §2):
``worldmodels experiment srnn-video`` (:mod:`worldmodels.experiments.srnn_video`, which lists the options).

Usage (what produced docs/results/srnn_video.json):
    python scripts/srnn_video.py --envs ball nav
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "srnn-video", *sys.argv[1:]]))
