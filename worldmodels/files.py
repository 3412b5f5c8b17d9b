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
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_save", "dead_temps", "explain_write_error", "json_digest", "pid_alive", "remove", "temp_path",
           "write_json"]


def atomic_save(path: str | os.PathLike, save: Callable[[Path], object]) -> Path:
    """Call ``save(tmp)`` on a temporary path beside ``path`` (same suffix), then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, suffix=path.suffix)
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


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", socket.gethostname()) or "host"


def temp_path(path: str | os.PathLike, kind: str = "tmp", suffix: str = "") -> Path:
    """``.<name>.<kind>-<host>-<pid><suffix>`` beside ``path``: the name records its writer, so that
    :func:`dead_temps` can tell a killed writer's leftovers from the work of a live one (also one on another
    machine writing into the same shared folder)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{kind}-{_host()}-{os.getpid()}{suffix}")


def dead_temps(folder: Path, pattern: str = ".*") -> list[Path]:
    """Files/folders ``<pattern>`` in ``folder`` named by :func:`temp_path` (``...tmp-<host>-<pid>...`` or
    ``...old-<host>-<pid>...``; names without a host are this machine's) whose writer no longer runs (a
    kill during an atomic write leaves them); this process counts as dead. Another machine's are kept: its
    processes cannot be checked from here."""
    out = []
    for p in sorted(Path(folder).glob(pattern)):
        m = re.search(r"\.(?:tmp|old)-(?:([A-Za-z0-9_]+)-)?(\d+)", p.name)
        if m is None or m.group(1) not in (None, _host()):
            continue
        pid = int(m.group(2))
        if pid == os.getpid() or not pid_alive(pid):
            out.append(p)
    return out


def remove(path: Path) -> None:
    """Delete a file or a folder tree (already gone is fine)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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
