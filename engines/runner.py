"""Running the per-partition work: `local` in this process, partition after partition (a whole
export is one partition), or `dask` on a cluster: an existing one (`--scheduler tcp://…` or
DASK_SCHEDULER_ADDRESS) or, without one, a LocalCluster whose workers have a memory limit and
spill to disk, so one machine handles exports larger than its memory.

What needs every deal is fitted on the first pass (the small tables of every partition,
gathered: a few hundred bytes per deal) and sent to every worker once.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from features.errors import ClusterShort, ConfigInvalid

log = logging.getLogger(__name__)
ENGINES = ("local", "dask")


@dataclass(frozen=True)
class EngineOptions:
    """Where a command's per-partition work runs: the four options every such command takes
    (`oppscore.cli`), as one value handed on."""

    engine: str = "local"
    scheduler: str | None = None
    workers: int = 2
    memory_limit: str = "4GiB"


class Runner(ABC):
    """`map(fn, parts, outs, **shared)`: fn(part, out, **shared) for every partition (and its
    output file, or None), results in partition order; `map_held` keeps each result's heavy
    part where it was computed. `LocalRunner` and `DaskRunner` are the two places."""

    engine: str

    def __init__(self, progress: Callable[[str], None] | None = None) -> None:
        self.progress = progress or (lambda _m: None)

    @abstractmethod
    def map(self, fn: Callable, parts: list[Path], outs: list[Path | None] | None = None, **shared: Any) -> list: ...

    @abstractmethod
    def map_held(self, fn: Callable, parts: list[Path], **shared: Any) -> tuple[list, list]:
        """fn(part, None, **shared) → (light, heavy) for every partition: the light parts come
        back here; the heavy ones stay where they were computed."""

    def release_memory(self) -> None:
        """Freed memory handed back here (and where the work ran)."""
        release_memory()

    @abstractmethod
    def matrix(self, heavy: list, sizes: list[int], n_cols: int, order: np.ndarray):
        """The model matrix of every partition's held rows, in `order`."""


class LocalRunner(Runner):
    """In this process, one partition after another (a whole export is one partition)."""

    engine = "local"

    def map(self, fn: Callable, parts: list[Path], outs: list[Path | None] | None = None, **shared: Any) -> list:
        outs = outs if outs is not None else [None] * len(parts)
        results = []
        for k, (part, out) in enumerate(zip(parts, outs, strict=True)):
            self.progress(f"{fn.__name__}: partition {k + 1} of {len(parts)}")
            results.append(fn(part, out, **shared))
        return results

    def map_held(self, fn: Callable, parts: list[Path], **shared: Any) -> tuple[list, list]:
        pairs = self.map(fn, parts, **shared)
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def matrix(self, heavy: list, sizes: list[int], n_cols: int, order: np.ndarray):
        return np.concatenate([h.reshape(-1, n_cols) for h in heavy])[order]


class DaskRunner(Runner):
    """On a Dask cluster's workers; the large shared arguments sent to each worker once."""

    engine = "dask"

    def __init__(self, client: Any, progress: Callable[[str], None] | None = None) -> None:
        super().__init__(progress)
        self.client = client

    def map(self, fn: Callable, parts: list[Path], outs: list[Path | None] | None = None, **shared: Any) -> list:
        outs = outs if outs is not None else [None] * len(parts)
        scattered = self._scattered(shared)
        return self._fetched(fn.__name__, self.client.map(fn, parts, outs, **scattered, pure=False))

    def _scattered(self, shared: dict[str, Any]) -> dict[str, Any]:
        """The shared arguments, each large one sent to every worker once (not inside each task)."""
        return {k: self.client.scatter(v, broadcast=True) if _large(v) else v for k, v in shared.items()}

    def _fetched(self, name: str, futures: list) -> list:
        """The futures' results in their order, each fetched as it completes and let go on its
        worker at once: gathered at the end, every partition's result (a first pass's outline,
        a few dozen bytes per deal) would stay on the workers until the last was done, beside what
        they are still computing. Takes the list over (emptied: its futures are the caller's no more)."""
        from distributed import as_completed

        n = len(futures)
        where = {f.key: k for k, f in enumerate(futures)}
        arriving = as_completed(futures)
        futures.clear()
        results: list = [None] * n
        for done in range(1, n + 1):
            future = next(arriving)  # not enumerate(): its reused tuple held the one before
            # fetched by the future's own client: as_completed's results are fetched on the
            # default client's event loop, and with a second client in the process (the CLI on
            # an existing scheduler, in the tests) a later gather of that client hung
            results[where[future.key]] = future.result()  # raises what the task raised, or its cancellation
            del future
            self.progress(f"{name}: {done} of {n} partitions done")
        return results

    def release_memory(self) -> None:
        """What reading and building partitions left on the workers too (the backtest runs beside it)."""
        release_memory()
        self.client.run(release_memory)

    def map_held(self, fn: Callable, parts: list[Path], **shared: Any) -> tuple[list, list]:
        """The heavy parts stay on the workers, as futures."""
        from operator import itemgetter

        scattered = self._scattered(shared)
        workers = sorted(self.client.scheduler_info()["workers"])
        # each partition computed, and its heavy part kept, on a fixed worker (its home): which
        # rows a worker holds decides what a data-parallel fit on them gives, so it must not
        # depend on which worker happened to be free
        where = [{"workers": [home(workers, k)], "allow_other_workers": True, "pure": False} for k in range(len(parts))]
        pairs = [self.client.submit(fn, part, None, **scattered, **at) for part, at in zip(parts, where, strict=True)]
        heavy = [self.client.submit(itemgetter(1), pair, **at) for pair, at in zip(pairs, where, strict=True)]
        light = [self.client.submit(itemgetter(0), pair, **at) for pair, at in zip(pairs, where, strict=True)]
        del pairs  # the heavy parts alone stay on the workers
        return self._fetched(fn.__name__, light), heavy

    def matrix(self, heavy: list, sizes: list[int], n_cols: int, order: np.ndarray):
        from engines.matrix import PartitionedMatrix

        return PartitionedMatrix(self.client, heavy, sizes, n_cols, order)


def home(workers: list[str], k: int) -> str:
    """The worker partition k is computed and kept on: round robin over the sorted addresses."""
    return workers[k % len(workers)]


MMAP_THRESHOLD = 256 * 1024  # bytes: larger blocks are mapped on their own, and unmapped when freed
TRIM_THRESHOLD = 1024 * 1024  # bytes free at the top of the heap past which glibc hands them back


def _glibc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, TypeError):  # not glibc
        return None


def release_memory() -> None:
    """Hand freed memory back to the system: glibc keeps what a gathered-then-freed piece held,
    and Arrow's pool what reading Parquet partitions did. Run in the client after its large
    gathers, and on every worker before a fit that needs the room. Where neither applies, nothing."""
    import sys

    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def free_promptly() -> None:
    """Make glibc hand freed arrays back at once in this process (the client of a cluster),
    as Dask already does for its workers (MALLOC_TRIM_THRESHOLD_). By default glibc raises its
    mapping threshold each time a large block is freed (up to 32 MiB), so the backtest's fold
    fits, labels and gathers, each freed, would leave their blocks in a fragmented heap (the
    effect is measured in benchmarks/RESULTS.md)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-1, TRIM_THRESHOLD)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD (fixed: no more raising it)


def _large(value: Any) -> bool:
    """Models, statistics and tables go to each worker once, not with every task (a table given
    to `Client.map` as it is would also be taken for a collection to compute)."""
    import pandas as pd

    from features.frame import FeatureSpec
    from features.pit_stats import PointInTimeStats
    from scoring.bundle import Bundle

    return isinstance(value, (Bundle, PointInTimeStats, FeatureSpec, pd.DataFrame))


@contextmanager
def runner(options: EngineOptions | str = "local", progress=None) -> Iterator[Runner]:
    """The runner the options name, open for the block (a Dask client and its cluster closed after)."""
    if isinstance(options, str):
        options = EngineOptions(options)
    engine, scheduler, workers, memory_limit = options.engine, options.scheduler, options.workers, options.memory_limit
    if engine not in ENGINES:
        raise ConfigInvalid(f"--engine: found {engine!r}, expected one of {', '.join(ENGINES)}")
    if engine == "local":
        from engines.work import read_once

        with read_once():
            yield LocalRunner(progress)
        return
    import dask
    from distributed import Client, LocalCluster

    free_promptly()
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        try:
            client = Client(address, timeout="10s")
        except OSError as exc:
            raise ConfigInvalid(f"--scheduler {address}: no Dask scheduler answers there ({exc})") from None
        log.info("on the Dask cluster at %s (%d workers)", address, len(client.scheduler_info()["workers"]))
        try:
            with _losing_workers("its memory limit"):
                yield DaskRunner(client, progress)
        finally:
            client.close()
        return
    # one thread per worker: the per-partition work is pandas and numpy, and LightGBM's own threads
    spawn = {"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}  # the workers too: what they fit and gather is freed at once
    with dask.config.set(spawn), LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory_limit, processes=True, dashboard_address=":0") as cluster, Client(cluster) as client:
        log.info("on a local Dask cluster: %d workers, %s each, spilling to disk beyond", workers, memory_limit)
        with _losing_workers(f"--memory-limit {memory_limit}"):
            yield DaskRunner(client, progress)


@contextmanager
def _losing_workers(limit: str) -> Iterator[None]:
    """A worker that dies mid-run (its nanny restarts it past 95% of its memory limit) surfaces
    in the client as a lost connection or a task killed with it: a page of Dask's traceback that
    says nothing of what to change. Said here instead, with what was lost."""
    from distributed import KilledWorker
    from distributed.comm.core import CommClosedError

    try:
        yield
    except (KilledWorker, CommClosedError) as exc:
        raise ClusterShort(
            f"a Dask worker was lost mid-run ({type(exc).__name__}: {exc}); most often it went past {limit} and was restarted. "
            "Give each worker more memory (--memory-limit), split the export into more partitions (oppscore partition --partitions N), or run more workers (--workers)"
        ) from exc
