"""Keep freed memory inside the process (glibc ``malloc``) so that a CPU training loop does not fault the same
pages in again at every update.

glibc serves a block above its mmap threshold (which grows with use, to at most 32 MB) with ``mmap`` and gives it
back to the kernel on ``free``; below it, freed memory at the top of the heap beyond 128 kB is trimmed. A training
update that allocates and frees large activations therefore gets fresh pages every time, and the kernel zeroes
each one on first touch. A MiniWorld walking update of GTM-SM (2,912 frames of 32x32 through a conv encoder;
``make bench``, group ``gtmsm_miniworld_train``) allocates ~1 GB that way in blocks of up to 95 MB: 263,000 minor
page faults per update, at ~2 µs each in this project's VM about half of the update. :func:`keep_freed_memory`
turns ``mmap`` off for heap blocks and trimming off, so the second and later updates reuse the first one's memory
(0 faults per update); the resident memory stays at the peak of an update, which the loop reaches anyway.

It is a process-wide setting, made once by a training entry point (like ``torch.set_num_threads``), not by
library code; it cannot be undone (glibc has no call that restores its dynamic thresholds). It changes no
number a model computes. On other C libraries and operating systems it does nothing and returns False.

Example (at the start of a training process; not run as a doctest, since the setting stays with the process)::

    from worldmodels.malloc import keep_freed_memory
    keep_freed_memory()  # True on Linux/glibc
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>
_TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt's int takes: trim only beyond 2 GB of free top memory


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed blocks for reuse (no ``mmap`` for heap blocks, no trimming).

    Returns:
        True when applied (Linux with glibc), False otherwise (nothing changed).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
