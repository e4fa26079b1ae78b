"""Shared helpers: medians of repeated timings, peak memory, and a reference workload.

Machines are shared and noisy, so every figure is printed beside a reference measured in the
same process: a plain pandas sort + group-wise cumulative count over the same activity rows.
The ratio to it travels between machines better than seconds do.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

import pandas as pd


def median_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def reference(activities: pd.DataFrame) -> Callable[[], object]:
    def run() -> object:
        ordered = activities.sort_values(["opportunity_id", "occurred_at"])
        return ordered.groupby("opportunity_id", sort=False).cumcount()

    return run
