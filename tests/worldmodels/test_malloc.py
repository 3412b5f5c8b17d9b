"""keep_freed_memory: applied on Linux/glibc, and then a loop of large allocations stops faulting pages in."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

_GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

_CHILD = """
import ctypes, resource, sys
from worldmodels.malloc import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
n = 96_000_000  # above glibc's largest mmap threshold (32 MB), like a conv activation of a MiniWorld update
def touch():
    p = libc.malloc(n)
    libc.memset(p, 1, n)
    libc.free(p)
touch()  # the first block is fresh pages either way
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    touch()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 5)
"""


def _run(mode: str) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True).stdout
    applied, faults = out.split()
    return applied == "True", float(faults)


@pytest.mark.skipif(not _GLIBC, reason="glibc only")
def test_keep_freed_memory_reuses_large_blocks_without_page_faults() -> None:
    applied, kept = _run("keep")
    _, default = _run("default")
    assert applied
    assert default > 20_000  # 96 MB = 23,400 pages of 4 kB faulted in again at every allocation by default
    assert kept < 100


@pytest.mark.skipif(_GLIBC, reason="a no-op elsewhere")
def test_keep_freed_memory_is_a_no_op_without_glibc() -> None:
    from worldmodels.malloc import keep_freed_memory

    assert keep_freed_memory() is False
