"""The thesis's experiments as package code: one module per experiment, run by ``worldmodels experiment``.

An experiment module defines ``EXPERIMENT = Experiment(...)``: its arguments as one dataclass whose defaults
are the experiment's preset (env + policy + model + train + eval settings), and its phases in order
(``data``, ``train``, ``eval``, ``report``; phase ``all`` runs them in turn). Results go through
:mod:`worldmodels.experiments.record` (JSON + Markdown with command, commit, machine, seed and budget).

Modules are imported only when their experiment runs, so listing experiments loads no torch.

Each ``scripts/<experiment>.py`` is a shim that runs ``worldmodels experiment <name>`` with its arguments, so
the commands the results pages state still work.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Args:
    ...     seed: int = 0
    >>> done = []
    >>> exp = Experiment("toy", "a two-phase example", Args, {"data": lambda a: done.append(("data", a.seed)),
    ...                                                      "report": lambda a: done.append(("report", a.seed))})
    >>> exp.run(exp.defaults(seed=3))
    >>> done
    [('data', 3), ('report', 3)]
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Experiment", "EXPERIMENTS", "names", "summary", "get", "run"]


@dataclass(frozen=True)
class Experiment:
    """One thesis experiment.

    Args:
        name: the name ``worldmodels experiment NAME`` takes.
        summary: one line: what it reproduces (thesis section).
        args: a dataclass type; its fields are the options (``--field-name``), its defaults the preset.
        phases: ``phase -> fn(args)`` in the order ``all`` runs them.
    """

    name: str
    summary: str
    args: type
    phases: dict[str, Callable[[Any], None]]

    def defaults(self, **overrides: Any) -> Any:
        """The preset's arguments, with ``overrides`` (field names) replaced."""
        return dataclasses.replace(self.args(), **overrides)

    def run(self, args: Any, phase: str = "all") -> None:
        """Run ``phase`` (or every phase in order for ``"all"``) with ``args`` (an instance of ``self.args``)."""
        if phase != "all" and phase not in self.phases:
            raise ValueError(f"experiment {self.name}: expected a phase in {['all', *self.phases]}, received {phase!r}")
        for name, fn in self.phases.items():
            if phase in ("all", name):
                fn(args)


# name -> (module defining EXPERIMENT, imported on first use; one-line summary, listed without importing it)
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "gtmsm-miniworld": ("worldmodels.experiments.gtmsm_miniworld",
                        "GTM-SM in MiniWorld 3-D, rotating and walking agents, against RSSM, VRNN, SRNN (§7.4.2)"),
    "planning-miniworld": ("worldmodels.experiments.planning_miniworld",
                           "MiniWorld 3-D: return to a remembered view with MPC in GTM-SM's state space (Ch. 7)"),
}


def names() -> list[str]:
    """The experiments' names, sorted."""
    return sorted(EXPERIMENTS)


def get(name: str) -> Experiment:
    """The experiment ``name`` (unknown names raise with the list of names)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment: expected one of {names()}, received {name!r}")
    exp = importlib.import_module(EXPERIMENTS[name][0]).EXPERIMENT
    if not isinstance(exp, Experiment) or exp.name != name:
        raise TypeError(f"experiment {name}: expected {EXPERIMENTS[name][0]}.EXPERIMENT to be the Experiment "
                        f"named {name!r}, received {exp!r}")
    return exp


def summary(name: str) -> str:
    """The one-line summary of experiment ``name`` (without importing its module)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment: expected one of {names()}, received {name!r}")
    return EXPERIMENTS[name][1]


def run(name: str, phase: str = "all", **overrides: Any) -> None:
    """Run experiment ``name`` from Python with its preset and ``overrides``:
    ``run(name, phase="report")``."""
    exp = get(name)
    exp.run(exp.defaults(**overrides), phase)
