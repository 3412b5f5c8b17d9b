"""Pictures of the environments for ``docs/envs/*.md``: one labelled contact sheet per env family.

Writes small PNGs to ``docs/figures/``; the rollouts and families are :mod:`worldmodels.experiments.docs_figures`.

Usage::

    python scripts/docs_figures.py                # all families (MiniWorld rows need the miniworld extra)
    python scripts/docs_figures.py --only bouncing_ball image_nav
"""

import argparse
import os

os.environ.setdefault("PYGLET_HEADLESS", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import torch  # noqa: E402

from worldmodels.experiments import docs_figures  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    families = sorted(docs_figures.FAMILIES)
    p.add_argument("--only", nargs="*", default=families, choices=families)
    args = p.parse_args()
    torch.set_num_threads(1)
    for path in docs_figures.draw(args.only):
        print(f"{path.relative_to(docs_figures.OUT.parents[1])}  {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
