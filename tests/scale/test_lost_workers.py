"""A worker that passes its memory limit is restarted by its nanny; the run it was part of must
end in a clear error that says what to change, not in a page of Dask's traceback."""

from __future__ import annotations

import time

import dask
import distributed  # noqa: F401 - its config defaults loaded before one is overridden below (set first, leaving the block would drop them all)
import numpy as np
import pytest

from engines.runner import EngineOptions, runner
from features.errors import ClusterShort


def _hog(n_bytes: int) -> int:
    held = np.ones(n_bytes, dtype=np.uint8)  # written, so resident
    time.sleep(10)  # the nanny checks every 100 ms; it restarts the worker long before this ends
    return int(held[-1])


def test_a_worker_past_its_memory_limit_ends_the_run_with_what_to_change() -> None:
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):  # one death, not four
        with pytest.raises(ClusterShort, match=r"--memory-limit 300MiB.*more partitions"):
            with runner(EngineOptions("dask", workers=1, memory_limit="300MiB")) as run:
                run.client.submit(_hog, 600 * 2**20, pure=False).result()
