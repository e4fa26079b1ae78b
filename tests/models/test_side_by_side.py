"""A backtest's fits run side by side, one core each (`training.cores`): what a training run
returns must not depend on how many run at once."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from tests.nested import assert_close
from training import cores


def test_two_fits_at_once_train_what_one_at_a_time_trains(trained, medium, monkeypatch) -> None:
    from features.settings import SegmentConfig, Settings
    from features.stages import StageOrder
    from training.data import WholeExport
    from training.pipeline import train

    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # `trained` ran under the suite's 1: one fit at a time
    assert cores.available() == min(2, len(os.sched_getaffinity(0)))
    again = train(medium.tables, StageOrder(medium.stages), Settings(segments=SegmentConfig(columns=medium.segments)))

    assert_close(trained.metrics, again.metrics, atol=1e-12)
    assert_close(trained.per_fold, again.per_fold, atol=1e-12)
    assert_close(trained.held_out.ours, again.held_out.ours, atol=1e-12)
    assert trained.bundle.metadata["served"] == again.bundle.metadata["served"]
    assert trained.bundle.metadata["counts"] == again.bundle.metadata["counts"]
    points = trained.held_out.points.iloc[:300]
    scored = [WholeExport(medium.tables).score(result.bundle, points) for result in (trained, again)]
    for column in ("win_probability", "stall_risk"):
        assert np.abs(scored[0][column].to_numpy() - scored[1][column].to_numpy()).max() <= 1e-12


@pytest.mark.parametrize(("limit", "expected"), [("1", 1), ("3", 3), ("0", 1), ("", None), ("lots", None), ("2,1", 2)])
def test_the_cores_a_process_may_use_honour_omp_num_threads(limit, expected, monkeypatch) -> None:
    affinity = len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", limit)
    assert cores.available() == (affinity if expected is None else min(expected, affinity))


def test_an_error_drops_the_fits_not_yet_started() -> None:
    release = threading.Event()
    with pytest.raises(RuntimeError, match="a fold failed"), cores.side_by_side(1) as pool:
        running = pool.submit(release.wait, 10)
        waiting = pool.submit(lambda: "fitted")
        threading.Timer(0.2, release.set).start()  # the running fit ends after the error
        raise RuntimeError("a fold failed")
    assert running.done() and waiting.cancelled()
