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

import errno
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_save", "dead_temps", "explain_write_error", "json_digest", "pid_alive", "write_json"]


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


def json_digest(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no whitespace): a file's self-checksum."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (the writers of temp files record their pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def dead_temps(folder: Path, pattern: str = ".*") -> list[Path]:
    """Files/folders ``<pattern>`` in ``folder`` named ``...tmp-<pid>...`` or ``...old-<pid>...`` whose
    writer no longer runs (a kill during an atomic write leaves them); this process counts as dead."""
    out = []
    for p in sorted(Path(folder).glob(pattern)):
        m = re.search(r"\.(?:tmp|old)-(\d+)", p.name)
        if m is not None and (int(m.group(1)) == os.getpid() or not pid_alive(int(m.group(1)))):
            out.append(p)
    return out


_WRITE_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def explain_write_error(e: OSError, what: str, where: str | os.PathLike, kept: str) -> OSError:
    """An OSError (same errno) that says what could not be written where, why, and what is still safe.

    Example:
        >>> str(explain_write_error(OSError(errno.ENOSPC, "No space left on device"), "collect", "/data/x",
        ...                         "Earlier shards are intact."))
        '[Errno 28] collect: cannot write to /data/x: no space left on the device. Earlier shards are intact.'
    """
    reason = _WRITE_REASONS.get(e.errno or -1, e.strerror or str(e))
    return OSError(e.errno, f"{what}: cannot write to {where}: {reason}. {kept}")
