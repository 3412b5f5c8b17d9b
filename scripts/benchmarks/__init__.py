"""Benchmark groups for scripts/bench.py; each module defines run() -> list[dict]."""
