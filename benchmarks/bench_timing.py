"""Timing shared by the benchmark scripts (imported as ``bench_timing``: each script's folder is on
``sys.path`` when it runs, and tests/test_benchmarks.py puts it there)."""

from __future__ import annotations

import time
from collections.abc import Callable


def call_seconds(run: Callable[[], object], repeats: int) -> list[float]:
    """Seconds per call of ``run`` over ``repeats`` calls, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times
