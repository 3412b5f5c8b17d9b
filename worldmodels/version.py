"""What ran: the installed version of worldmodels, the source commit and the machine (a leaf module: no
package imports, so everything may use it; torch is imported only by :func:`machine`).

Example:
    >>> from worldmodels.version import __version__
    >>> isinstance(__version__, str)
    True
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("worldmodels")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.1.0"

__all__ = ["__version__", "git_commit", "machine"]

_REPO = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """The short commit of the source checkout (``"unknown"`` outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_REPO, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def machine() -> str:
    """CPU cores, processor, the 1-minute load now, torch version and threads (GPU when one is used)."""
    import torch

    load = f", load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}){load}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}")
