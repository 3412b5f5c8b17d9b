"""Ship trained runs as package checkpoints: ``worldmodels/pretrained/<name>/`` (issue #10 item 2).

Scores each run on its fixed evaluation set and writes the weights-only checkpoint and ``card.json``; the
sources, tolerances and checks are :mod:`worldmodels.pretrained.ship`. This is the command that produced
what ships::

    .venv/bin/python scripts/ship_pretrained.py                     # all of them
    .venv/bin/python scripts/ship_pretrained.py --names kvae-box    # one
"""

import argparse
import sys
from pathlib import Path

import torch

from worldmodels.pretrained import ship


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", nargs="+", choices=list(ship.SOURCES), default=list(ship.SOURCES))
    p.add_argument("--cache-dir", default=None, help="evaluation data folder (default $WORLDMODELS_DATA or "
                                                       "~/.cache/worldmodels)")
    p.add_argument("--sample-seeds", type=int, default=3, help="extra ELBO sample seeds whose spread the card states")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    command = " ".join([ship.COMMAND, *sys.argv[1:]])
    for name in a.names:
        card = ship.ship(name, Path(a.cache_dir) if a.cache_dir else None, a.sample_seeds, command)
        ev = card["evaluation"]
        print(f"{name}: {ev['metric']} = {ev['value']:.6g} ± {ev['tolerance']:.3g} ({ev['wall_clock_s']} s)",
              flush=True)
    total = ship.package_bytes()
    print(f"worldmodels/pretrained: {total / 2**20:.2f} MB (limit {ship.MAX_TOTAL_BYTES / 2**20:.0f} MB)")
    if total > ship.MAX_TOTAL_BYTES:
        raise SystemExit("worldmodels/pretrained exceeds 20 MB")


if __name__ == "__main__":
    main()
