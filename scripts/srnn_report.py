"""Rewrite ``docs/results/srnn.md`` from ``srnn_music.json`` and ``srnn_video.json`` (no runs needed):
``worldmodels experiment srnn-music --phase report --from-json`` (:mod:`worldmodels.experiments.srnn_music`).

Usage:
    python scripts/srnn_report.py
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", "srnn-music", "--phase", "report", "--from-json", "true", *sys.argv[1:]]))
