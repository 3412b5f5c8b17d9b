"""Transitional: the names ``scripts/plan_imagenav.py``, ``plan_miniworld.py`` and ``gtmsm_miniworld.py`` still
import, now from the package (:mod:`worldmodels.experiments.planning`, ``record``, ``viz``, ``cli``).
Delete this file when those three are migrated into ``worldmodels/experiments``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TypeVar

from worldmodels.cli import dataclass_parser
from worldmodels.experiments.planning import RESULTS, media_dir, write_record, write_report
from worldmodels.experiments.record import git_commit, machine
from worldmodels.viz import bar_plot

__all__ = ["RESULTS", "MEDIA", "parse_args", "git_commit", "machine", "write_json", "bar_plot", "write_report"]

MEDIA = media_dir(RESULTS)
T = TypeVar("T")


def parse_args(cls: type[T], description: str, argv: list[str] | None = None) -> T:
    """One ``--flag`` per field of the argument dataclass ``cls`` (:func:`worldmodels.cli.dataclass_parser`)."""
    return cls(**vars(dataclass_parser(cls, Path(sys.argv[0]).name, description).parse_args(argv)))


def write_json(name: str, command: str, seed: int, wall_clock_s: float, metrics: dict[str, Any],
               notes: list[str] | None = None) -> Path:
    """``docs/results/planning_<name>.json`` (:func:`worldmodels.experiments.planning.write_record`, no budget)."""
    return write_record(name, command, seed, wall_clock_s, {}, metrics, notes)
