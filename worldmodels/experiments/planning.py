"""The planning experiments' shared results: one record per experiment and the page generated from them.

Each planning experiment (``planning-control``: MPC in a KVAE; ``planning-ppo``: PPO inside a KVAE's
imagination; ``scripts/plan_imagenav.py``: ImageNav goal reaching with memory; ``scripts/plan_miniworld.py``:
MiniWorld return to a remembered view — beyond the thesis, they use its models to plan) writes

* its record ``docs/results/planning_<name>.json`` with :func:`write_record` (``{"experiment", "command",
  "git_commit", "seed", "machine", "wall_clock_s", "budget", "date", "metrics", "notes"}``; ``metrics`` maps a
  section to ``{row name: {metric: value}}``, rows of :func:`agents.tasks.run_episodes` metrics become the
  agent table),
* its plots and GIFs into :func:`media_dir` (``docs/results/planning/``), named ``<name>_...``
  (e.g. :func:`worldmodels.viz.bar_plot` of the success rates),

and then regenerates ``docs/results/planning.md`` from all records with :func:`write_report` (phase
``report`` of each planning experiment: :func:`report`). No number on the page without a file behind it.

This module's own experiment only regenerates the page::

    worldmodels experiment planning-report        # or: python scripts/plan_report.py

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> rows = {"CEM on KVAE": {"success_rate": 0.875, "mean_steps": 20.0}, "random": {"success_rate": 0.0}}
    >>> write_record("demo", "worldmodels experiment demo", 0, 61.0, {"episodes": 8}, {"ball": rows},
    ...              ["one note"], results=d).name
    'planning_demo.json'
    >>> page = write_report(d).read_text().splitlines()
    >>> page[0], page[4], page[8]
    ('# Planning results', '## planning_demo', '**ball**')
    >>> page[10].split(" | ")[:3]
    ['| agent', 'success', 'steps to success']
    >>> page[12:15]
    ['| CEM on KVAE | 88% | 20.0 |  |  |  |  |  |', '| random | 0% |  |  |  |  |  |  |', '']
    >>> page[15:]
    ['- one note']
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldmodels.experiments import Experiment
from worldmodels.experiments.record import markdown_table, record, write
from worldmodels.files import atomic_save

__all__ = ["RESULTS", "TITLES", "AGENT_COLUMNS", "media_dir", "record_path", "trainer_progress", "write_record",
           "report_lines", "write_report", "report", "Args", "EXPERIMENT"]

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"  # of the source checkout
PAGE = "planning.md"

# experiment -> the page's section title (others are titled by their experiment name)
TITLES = {
    "planning_control": "Experiment 3 — continuous control with a KVAE (MPC: CEM / MPPI)",
    "planning_ppo": "Experiment 4 — PPO trained inside the KVAE (ImaginationEnv) vs PPO on real steps",
    "planning_imagenav": "Experiment 1 — ImageNav goal reaching with memory",
    "planning_miniworld": "Experiment 2 — MiniWorld: return to a remembered view",
}

# (metric, heading, format) of the agent table (rows holding ``success_rate``)
AGENT_COLUMNS = [
    ("success_rate", "success", ".0%"), ("mean_steps", "steps to success", ".1f"),
    ("mean_return", "return (−Σ distance)", ".1f"), ("mean_final_distance", "final distance", ".2f"),
    ("mean_optimal_steps", "optimal steps", ".1f"), ("mean_extra_steps", "extra steps (successes)", ".2f"),
    ("plan_seconds_per_step", "s / step", ".2f"),
]


def media_dir(results: str | os.PathLike = RESULTS) -> Path:
    """The folder of the planning plots and GIFs: ``<results>/planning``."""
    return Path(results) / "planning"


def record_path(name: str, results: str | os.PathLike = RESULTS) -> Path:
    """The record of planning experiment ``name``: ``<results>/planning_<name>.json``."""
    return Path(results) / f"planning_{name}.json"


def trainer_progress(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer`` entry (``step``, ``epoch``, ...) of a checkpoint's ``state.json``; ``{}`` when the
    checkpoint has none (the model's training progress when an experiment used it)."""
    state = Path(checkpoint) / "state.json"
    return json.loads(state.read_text()).get("trainer", {}) if state.exists() else {}


def write_record(name: str, command: str, seed: int, wall_clock_s: float, budget: dict[str, Any],
                 metrics: dict[str, Any], notes: list[str] | None = None,
                 results: str | os.PathLike = RESULTS) -> Path:
    """Write the record of planning experiment ``name`` (:func:`worldmodels.experiments.record.record`,
    experiment ``planning_<name>``, with ``notes``: the page's bullet points) at :func:`record_path`,
    atomically. Returns its path."""
    rec = record(f"planning_{name}", command, seed, wall_clock_s, budget, metrics, notes=list(notes or []))
    return write(rec, record_path(name, results))


def report_lines(results: str | os.PathLike = RESULTS) -> list[str]:
    """The lines of ``planning.md`` from the records ``<results>/planning_*.json`` (sorted by file name).

    Per record: its title (:data:`TITLES`), command line, one table per ``metrics`` section (the agent
    table for rows with ``success_rate``, else one column per numeric metric), the media of
    :func:`media_dir` that belong to it (file names or subfolders ``<stem>_...``; a file belongs to the longest matching
    stem, so ``imagenav_elbo_success.png`` is ``planning_imagenav_elbo``'s, not ``planning_imagenav``'s) and
    its notes.
    """
    results = Path(results)
    media_root = media_dir(results)
    lines = ["# Planning results", "",
             "Generated by `python scripts/plan_report.py` from `docs/results/planning_*.json` (each experiment "
             "script calls it); do not edit by hand. GIFs show the real frame beside the plan's "
             "**open-loop imagination** (the model's predicted frames for the chosen action sequence).", ""]
    paths = sorted(results.glob("planning_*.json"))
    stems = [p.stem.removeprefix("planning_") for p in paths]

    def owner(media: Path) -> str | None:  # the longest stem its file name or its path under media_root starts with
        names = (media.name, media.relative_to(media_root).as_posix())
        return max((s for s in stems if any(n.startswith(f"{s}_") for n in names)), key=len, default=None)

    for path in paths:
        doc = json.loads(path.read_text())
        exp = doc["experiment"]
        lines += [f"## {TITLES.get(exp, exp)}", "",
                  f"Command: `{doc['command']}` · seed {doc['seed']} · commit `{doc['git_commit']}` · "
                  f"{doc['machine']} · wall clock {doc['wall_clock_s']:.0f} s · data: `{path.name}`", ""]
        for section, rows in doc["metrics"].items():
            if not isinstance(rows, dict) or not rows:
                continue
            first = next(iter(rows.values()))
            if isinstance(first, dict) and "success_rate" in first:
                lines += [f"**{section}**", ""] + markdown_table(rows, AGENT_COLUMNS, first="agent") + [""]
            elif isinstance(first, dict):
                keys = sorted({k for r in rows.values() for k, v in r.items() if isinstance(v, int | float)})
                lines += [f"**{section}**", ""] + markdown_table(rows, [(k, k, ".3g") for k in keys],
                                                                 first="agent") + [""]
        stem = exp.removeprefix("planning_")
        media = sorted(p.relative_to(results) for p in media_root.rglob("*")
                       if p.suffix in (".png", ".gif") and owner(p) == stem)
        for m in media:
            lines.append(f"![{m.stem}]({m.as_posix()})" if m.suffix == ".png"
                         else f"- GIF: [{m.relative_to(media_root.name).as_posix()}]({m.as_posix()})")
        if media:
            lines.append("")
        for note in doc.get("notes", []):
            lines.append(f"- {note}")
        lines.append("")
    return lines


def write_report(results: str | os.PathLike = RESULTS) -> Path:
    """Regenerate ``<results>/planning.md`` from the records (:func:`report_lines`), atomically."""
    text = "\n".join(report_lines(results))
    return atomic_save(Path(results) / PAGE, lambda tmp: tmp.write_text(text))


def report(args: Any) -> None:
    """Phase ``report`` of every planning experiment: regenerate ``planning.md`` in ``args.results``."""
    print(write_report(args.results))


@dataclass
class Args:
    results: str = str(RESULTS)  # the folder of planning_*.json, planning.md and planning/ (plots, GIFs)


EXPERIMENT = Experiment("planning-report", "regenerate docs/results/planning.md from planning_*.json "
                        "(planning experiments 1-4)", Args, {"report": report})
