"""SRNN and baselines on polyphonic music (thesis §5.4, Table 5.2): ``worldmodels experiment srnn-music``
(:mod:`worldmodels.experiments.srnn_music`, which lists the options and the commands of docs/results/srnn.md).

Trains the variants of ``--variants``; with ``--report``, instead rebuilds ``docs/results/srnn_music.json``
+ plots + ``docs/results/srnn.md`` from the finished runs (the report phase).

Usage:
    python scripts/srnn_music.py --reference-npz ~/.cache/worldmodels/jsb_raw_batchsize16_seqlen100.npz \
        --trailing-pad --epochs 50 --patience 4 --lr-decay 1.2 --out runs/srnn_music_ref
    python scripts/srnn_music.py --report --reference-npz ... --out runs/srnn_music_ref
"""

import sys

from worldmodels.cli import main

if __name__ == "__main__":
    # this script's --report flag is the report phase; without it the script only trains
    argv = sys.argv[1:]
    phase = "report" if "--report" in argv else "train"
    raise SystemExit(main(["experiment", "srnn-music", "--phase", phase, *(a for a in argv if a != "--report")]))
