"""One results record for every experiment: what ran (command, commit, machine, seed, budget) and what it gave.

A record is a JSON object; :func:`write` stores it atomically beside a Markdown page whose header is
:func:`header` (so every results page states the same facts the same way).

Example:
    >>> rec = record("kvae-ball", "worldmodels experiment kvae-ball", seed=0, wall_clock_s=12.3,
    ...              budget={"updates": 900, "thesis_updates": 80000}, metrics={"error": 0.1})
    >>> sorted(rec)[:4]
    ['budget', 'command', 'date', 'experiment']
    >>> header(rec)[0].startswith("Command: `worldmodels experiment kvae-ball`")
    True
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from worldmodels.files import atomic_save, write_json
from worldmodels.version import git_commit, machine

__all__ = ["git_commit", "machine", "record", "header", "write", "command_line", "command", "markdown_table",
           "save_run_args"]

_REPO = Path(__file__).resolve().parents[2]


def record(experiment: str, command: str, seed: int | list[int], wall_clock_s: float, budget: dict[str, Any],
           metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The record of one run. ``budget``: what was spent (``updates``, ``episodes``, ...) beside the thesis's
    (``thesis_updates``, ...); ``extra``: further top-level fields (settings, per-seed results)."""
    return {"experiment": experiment, "command": command, "git_commit": git_commit(), "seed": seed,
            "machine": machine(), "wall_clock_s": round(float(wall_clock_s), 1), "budget": budget,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "metrics": metrics, **extra}


def _budget_text(budget: dict[str, Any]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:,}" if isinstance(v, int) else f"{k.replace('_', ' ')} {v}"
                     for k, v in budget.items())


def header(rec: dict[str, Any]) -> list[str]:
    """The Markdown lines every results page starts with (after its title)."""
    return [
        f"Command: `{rec['command']}`  ",
        f"Commit `{rec['git_commit']}` · seed {rec['seed']} · {rec['date']} · machine: {rec['machine']}  ",
        f"Budget: {_budget_text(rec.get('budget', {}))} · wall clock {rec['wall_clock_s'] / 60:.1f} min",
        "",
    ]


def write(rec: dict[str, Any], json_path: str | os.PathLike, markdown: list[str] | None = None,
          markdown_path: str | os.PathLike | None = None) -> Path:
    """Write ``rec`` as JSON at ``json_path`` and, when given, the ``markdown`` lines at ``markdown_path``
    (default: beside the JSON with suffix ``.md``); both atomically. Returns the JSON path."""
    path = write_json(json_path, rec)
    if markdown is not None:
        md = Path(markdown_path) if markdown_path is not None else path.with_suffix(".md")
        text = "\n".join(markdown).rstrip("\n") + "\n"
        atomic_save(md, lambda tmp: tmp.write_text(text))
    return path


def command_line(argv: list[str] | None = None) -> str:
    """The command that started this process (``sys.argv`` by default), as a user types it: ``python
    scripts/x.py ...`` for a script of the checkout (its path relative to the checkout), ``python -m
    worldmodels ...`` and ``worldmodels ...`` for the CLI; otherwise the arguments as they are.

    Example:
        >>> command_line([str(_REPO / "scripts" / "srnn_video.py"), "--envs", "ball", "nav"])
        'python scripts/srnn_video.py --envs ball nav'
        >>> command_line([str(_REPO / "worldmodels" / "__main__.py"), "experiment", "srnn-video"])
        'python -m worldmodels experiment srnn-video'
    """
    import sys

    first, *rest = argv if argv is not None else sys.argv
    path = Path(first)
    if path.name == "__main__.py" and path.parent.name == "worldmodels":
        start = "python -m worldmodels"
    elif path.name == "worldmodels":
        start = "worldmodels"
    elif path.suffix == ".py":
        full = path.resolve()
        start = "python " + (str(full.relative_to(_REPO)) if full.is_relative_to(_REPO) else first)
    else:
        start = first
    return " ".join([start, *rest])


def markdown_table(rows: dict[str, dict[str, Any]], columns: list[tuple[str, str, str]],
                   first: str = "") -> list[str]:
    """A Markdown table as lines: one row per entry ``name -> values`` of ``rows`` (``name`` in the first
    column, headed ``first``), one column per ``(key, heading, format spec)`` of ``columns``; a missing or
    ``None`` value leaves its cell empty.

    Example:
        >>> markdown_table({"CEM": {"success": 0.875, "steps": 12.0}, "random": {"success": 0.0}},
        ...                [("success", "success", ".0%"), ("steps", "steps", ".1f")], first="agent")
        ['| agent | success | steps |', '|---|---|---|', '| CEM | 88% | 12.0 |', '| random | 0% |  |']
    """
    lines = [f"| {first} | " + " | ".join(c[1] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in rows.items():
        cells = ["" if values.get(key) is None else format(values[key], spec) for key, _, spec in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def command(experiment: str, args: Any, phase: str | None = None) -> str:
    """The command that reruns experiment ``experiment`` with ``args`` (a dataclass instance):
    ``worldmodels experiment NAME`` (``--phase PHASE`` when given) and each option whose value differs from
    its default, shell-quoted.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Args:
        ...     checkpoint: str = "runs/a"
        ...     steps: int = 10
        ...     plots: bool = True
        >>> command("toy", Args(checkpoint="runs/my run", plots=False), phase="eval")
        "worldmodels experiment toy --phase eval --checkpoint 'runs/my run' --plots false"
    """
    import dataclasses
    import shlex

    if not dataclasses.is_dataclass(args) or isinstance(args, type):
        raise TypeError(f"command: expected a dataclass instance, received {args!r}")
    words = ["worldmodels", "experiment", experiment, *(["--phase", phase] if phase else [])]
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        if value != default:
            flag = f"--{f.name.replace('_', '-')}"
            if isinstance(value, tuple):
                words += [flag, *map(str, value)]
            else:
                words += [flag, str(value).lower() if isinstance(value, bool) else str(value)]
    return shlex.join(words)


def save_run_args(out_dir: str | os.PathLike, args: Any, **extra: Any) -> Path:
    """Record a run's arguments beside its checkpoint: ``out_dir/train_args.json`` holds the fields of the
    dataclass instance ``args`` and then ``extra`` (which replaces fields of the same name), as one JSON
    object (indent 1, final newline), written atomically. Returns the path.

    Example:
        >>> import json, tempfile
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Args:
        ...     steps: int = 10
        ...     model: str = ""
        >>> path = save_run_args(tempfile.mkdtemp(), Args(), model="gtmsm")
        >>> path.name, json.loads(path.read_text())
        ('train_args.json', {'steps': 10, 'model': 'gtmsm'})
    """
    import dataclasses

    if not dataclasses.is_dataclass(args) or isinstance(args, type):
        raise TypeError(f"save_run_args: expected a dataclass instance, received {args!r}")
    return write_json(Path(out_dir) / "train_args.json", {**dataclasses.asdict(args), **extra}, indent=1)
