"""Where the shipped models are: names, folders and cards (no model code, so :mod:`worldmodels.checkpoint`
can resolve a name without importing the evaluation code of :mod:`worldmodels.pretrained`).

Example:
    >>> from worldmodels.pretrained import registry
    >>> "kvae-box" in registry.names(), registry.is_name("runs/x/last")
    (True, False)
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, cast

__all__ = ["names", "card", "path", "is_name", "unknown_name_error"]

_ROOT = Path(__file__).resolve().parent
_CARD = "card.json"


def names() -> list[str]:
    """The names of the shipped models (folders of this package holding a ``card.json``), sorted."""
    return sorted(p.name for p in _ROOT.iterdir() if (p / _CARD).is_file())


def is_name(value: str | os.PathLike) -> bool:
    """``True`` when ``value`` looks like a model name rather than a path: a string without a path separator."""
    return isinstance(value, str) and bool(value) and "/" not in value and os.sep not in value and value not in (".", "..")


def unknown_name_error(name: str) -> FileNotFoundError:
    """The error for a name that is neither an existing path nor a shipped model (with a suggestion)."""
    shipped = names()
    close = difflib.get_close_matches(name, shipped, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return FileNotFoundError(
        f"{name!r} does not exist as a checkpoint folder and is not a shipped model; expected a path or one "
        f"of the shipped names {shipped}.{hint}"
    )


def path(name: str) -> Path:
    """The checkpoint folder of shipped model ``name`` (unknown names raise with the list of names)."""
    if not isinstance(name, str) or not (_ROOT / name / _CARD).is_file() or not is_name(name):
        raise unknown_name_error(str(name))
    return _ROOT / name


def card(name: str) -> dict[str, Any]:
    """The model card of ``name``: what it is, how it was trained, and its evaluation spec and number."""
    return cast(dict[str, Any], json.loads((path(name) / _CARD).read_text()))
