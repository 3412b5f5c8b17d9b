"""Regenerate ``docs/results/planning.md`` from ``docs/results/planning_*.json``.

Run: ``python scripts/plan_report.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan_common import write_report  # noqa: E402

if __name__ == "__main__":
    print(write_report())
