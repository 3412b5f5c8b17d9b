"""Atomic file writes: write to a temporary name in the same folder, then ``os.replace``.

A reader never sees a half-written file, and an interrupted write leaves the old file intact.

Example:
    >>> import tempfile, json
    >>> from pathlib import Path
    >>> p = write_json(Path(tempfile.mkdtemp()) / "a" / "r.json", {"x": 1})
    >>> json.loads(p.read_text())
    {'x': 1}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_save", "write_json"]


def atomic_save(path: str | os.PathLike, save: Callable[[Path], object]) -> Path:
    """Call ``save(tmp)`` on a temporary path beside ``path`` (same suffix), then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2, sort_keys: bool = False) -> Path:
    """Write ``obj`` as JSON (with a final newline) atomically; parent folders are created."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n"
    return atomic_save(path, lambda tmp: tmp.write_text(text))
