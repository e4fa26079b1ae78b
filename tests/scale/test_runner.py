"""The runner's map on a cluster: results in partition order, each let go on its worker as soon
as it has come back (a first pass's outlines at 3M deals were gigabytes held until the last)."""

from __future__ import annotations

import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from engines.runner import DaskRunner, Runner


def _part_result(part: Path, out: None, delay: float) -> str:
    time.sleep(delay * (3 - int(part.name[-1])))  # the last partitions finish first
    return part.name


def _held(run: Runner) -> int:
    """Results of `_part_result` the cluster still holds."""
    return run.client.run_on_scheduler(lambda dask_scheduler: sum(1 for k, ts in dask_scheduler.tasks.items() if str(k).startswith("_part_result") and ts.state == "memory"))


def test_results_come_back_in_partition_order_and_leave_the_workers_as_they_do(dask_run: Runner) -> None:
    parts = [Path(f"p{k}") for k in range(4)]
    held_at_the_end: list[int] = []

    def progress(message: str) -> None:
        if message.startswith("_part_result: 4 of 4"):
            deadline = time.monotonic() + 10
            while _held(dask_run) and time.monotonic() < deadline:  # releases reach the scheduler a moment later
                time.sleep(0.05)
            held_at_the_end.append(_held(dask_run))

    run = DaskRunner(dask_run.client, progress)
    assert run.map(_part_result, parts, delay=0.2) == ["p0", "p1", "p2", "p3"]
    assert held_at_the_end == [0]


def test_a_cancelled_partition_is_an_error_not_a_result(dask_run: Runner) -> None:
    """A partition cancelled under the run ends it with the cancellation, not a result."""
    slow = [dask_run.client.submit(time.sleep, 5, pure=False), dask_run.client.submit(time.sleep, 0, pure=False)]
    slow[0].cancel()
    with pytest.raises(CancelledError):
        dask_run._fetched("sleep", slow)
