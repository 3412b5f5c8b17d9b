"""The thesis's experiments as package code: one module per experiment, run by ``worldmodels experiment``.

An experiment module defines ``EXPERIMENT = Experiment(...)``: its arguments as one dataclass whose defaults
are the experiment's preset (env + policy + model + train + eval settings), and its phases in order
(``data``, ``train``, ``eval``, ``report``; phase ``all`` runs them in turn). Results go through
:mod:`worldmodels.experiments.record` (JSON + Markdown with command, commit, machine, seed and budget).

Modules are imported only when their experiment runs, so listing experiments loads no torch.

Each ``scripts/<experiment>.py`` is a shim that runs ``worldmodels experiment <name>`` with its arguments, so
the commands the results pages state still work. The package also holds tools that are not registered
experiments: ``benchmarks/`` (``make bench``), ``reliability`` (``make reliability``) and ``docs_figures``.

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
    "srnn-music": ("worldmodels.experiments.srnn_music",
                   "SRNN and baselines on polyphonic music: test ELBO per step (§5.4, Table 5.2)"),
    "srnn-video": ("worldmodels.experiments.srnn_video",
                   "SRNN and KVAE as action-conditioned video world models: prediction and imputation error (Ch. 5-6)"),
    "gtmsm-imagenav": ("worldmodels.experiments.gtmsm_imagenav",
                       "GTM-SM image navigation vs RSSM/VRNN/SRNN and no memory (§7.4.1, §7.7.1)"),
    "gtmsm-obstacles": ("worldmodels.experiments.gtmsm_obstacles",
                        "GTM-SM with obstacles: landmark inference network vs prior (§7.10, §7.10.1)"),
    "gtmsm-diagnostics": ("worldmodels.experiments.gtmsm_diagnostics",
                          "why ELBO-only GTM-SM misses the grid on ImageNav: training diagnostics (§7.4.1)"),
    "planning-imagenav": ("worldmodels.experiments.planning_imagenav",
                          "ImageNav goal reaching with memory: GTM-SM localize + plan vs memory-less models (Ch. 7)"),
    "kvae-ball": ("worldmodels.experiments.kvae_ball",
                  "KVAE imputation on the bouncing-ball videos, baselines, missing-data training (§6.5, §6.10)"),
    "kvae-pendulum": ("worldmodels.experiments.kvae_pendulum",
                      "KVAE-CNN, KVAE-MLP and DMM test ELBO on the pixel pendulum (§6.5.2, Table 6.1)"),
    "planning-control": ("worldmodels.experiments.planning_control",
                         "MPC (CEM / MPPI) in a KVAE: ball into a region, pendulum swing-up (planning experiment 3)"),
    "planning-ppo": ("worldmodels.experiments.planning_ppo",
                     "PPO trained inside a KVAE's imagination vs PPO on real steps (planning experiment 4)"),
    "planning-report": ("worldmodels.experiments.planning",
                        "regenerate docs/results/planning.md from planning_*.json (planning experiments 1-4)"),
    "gtmsm-miniworld": ("worldmodels.experiments.gtmsm_miniworld",
                        "GTM-SM in MiniWorld 3-D, rotating and walking agents, against RSSM, VRNN, SRNN (§7.4.2)"),
    "planning-miniworld": ("worldmodels.experiments.planning_miniworld",
                           "MiniWorld 3-D: return to a remembered view with MPC in GTM-SM's state space (Ch. 7)"),
    "demo": ("worldmodels.experiments.demo",
             "the tour of make demo: data, tiny GTM-SM (Ch. 7) and KVAE (Ch. 6), imagination, planning"),
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
