"""Fits side by side, one core each.

A backtest is dozens of independent fits (every candidate at every fold date) of which a good
part is single-threaded: the logistic regression's line search, the calibrators, the rates'
group-bys, LightGBM's Python loop and its evaluation. Two threads inside one fit left a third of
two cores idle (30,000 deals: 74 s on two cores against 106 s on one); fits side by side, each on
one core, keep both busy. LightGBM's model does not depend on its thread count (its model files
come out byte-identical), and BLAS at one thread differs from two by rounding alone (5e-16 at
most in a run's figures), so what a training run returns is unchanged (benchmarks/RESULTS.md).

Threads, not processes: the fits read the same snapshot matrix, and LightGBM, BLAS and numpy
release the GIL while they work.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from threadpoolctl import threadpool_limits

MAX_WORKERS = 4  # past this a fit is better served by threads of its own than by more fits at once


def available() -> int:
    """The cores this process may use: those it may run on (a container or `taskset` narrows
    them), and no more than OMP_NUM_THREADS when it is set: an operator's limit for the
    process, which the test suite sets to 1 for each of its two workers."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return max(min(cores, int(limit)), 1) if limit.isdigit() else cores


def _threads_each(workers: int) -> None:
    """In a worker thread: OpenMP (LightGBM) at its share of the cores. OpenMP's thread count is
    per calling thread, so each worker sets its own."""
    threadpool_limits(limits=max(available() // workers, 1), user_api="openmp")


@contextmanager
def side_by_side(workers: int | None = None) -> Iterator[ThreadPoolExecutor]:
    """A pool of `workers` threads (default: the cores, at most MAX_WORKERS), each fit in it on
    its share of the cores; BLAS, whose thread count is the process's, at the same share. On an
    error, fits not yet started are dropped, and those running are waited for."""
    n = workers or min(available(), MAX_WORKERS)
    pool = ThreadPoolExecutor(n, "fit", _threads_each, (n,))
    try:
        with threadpool_limits(limits=max(available() // n, 1), user_api="blas"):
            yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
