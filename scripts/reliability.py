"""Run the reliability tests at a larger budget and write ``docs/reliability.md`` (+ JSON) with the counts.

The same tests run in ``make test`` with 25 hypothesis examples each and 3 SIGKILLs; here every property
gets ``--examples`` cases (hypothesis profile "thorough", derandomized: the same cases on every machine)
and the training fault test ``--kills`` kills. The tests and the page: :mod:`worldmodels.experiments.reliability`.

Example:
    python scripts/reliability.py                 # 500 cases per property, 20 kills (~5 min on 2 cores)
    python scripts/reliability.py --examples 50 --kills 4
"""

import argparse
import sys
from pathlib import Path

from worldmodels.experiments import reliability


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=500, help="hypothesis cases per property")
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs injected into the training fault test")
    ap.add_argument("--out", default=str(reliability.OUT), help="writes <out>.json and <out>.md")
    ap.add_argument("--markdown-only", action="store_true", help="re-render <out>.md from <out>.json")
    args = ap.parse_args()
    if args.markdown_only:
        reliability.render(args.out)
        return 0
    result = reliability.run(args.examples, args.kills, args.out,
                             command="python scripts/reliability.py " + " ".join(sys.argv[1:]))
    print(Path(args.out).with_suffix(".md").read_text())
    return 0 if all(row["passed"] for row in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
